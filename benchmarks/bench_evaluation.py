"""Evaluation speed at the paper's sizes: our batched exhaustive scan against a scan that takes
one query at a time, as the reference evaluation does.

    python benchmarks/bench_evaluation.py                       # CPU; a caption subset, extrapolated
    python benchmarks/bench_evaluation.py --captions 25000      # the full 5K x 25K scan
    python benchmarks/bench_evaluation.py --device cuda --captions 25000

Synthetic data at COCO 5K's shape: 5,000 images x 36 regions and 25,000 captions of about 12
words (8 to 16, uniform), 1024-d unit vectors (the output of TERAN's shared layers; the
encoders' time is not measured). Both scans compute MrSw over the same vectors and their
scores are checked against each other.

- **ours**: ``teran_es.model.alignment.chunked_scores``: the sentences are moved to the device
  once, the images stream through it in blocks, one matrix product per block.
- **one query at a time**: for each caption, the gallery is copied to the device again (in
  batches of ``--reference-batch`` images, as a data loader would hand them over) and scored
  against that caption alone. It is timed on ``--reference-queries`` captions and reported per
  query; its full-run time is that times 25,000.

When ``--captions`` is below 25,000, our scan is timed on that many captions and its full-run
time is extrapolated linearly (each caption costs the same: every image is scored for every
caption); the JSON says which figures are measured and which extrapolated.
Writes benchmarks/results/evaluation.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from teran_es.device import resolve_device
from teran_es.evaluation import image_retrieval_ranks
from teran_es.model.alignment import chunked_scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_from_options, machine_info, write_results  # noqa: E402  (benchmarks/common.py)

FULL_IMAGES, FULL_CAPTIONS = 5000, 25000


def unit_vectors(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """float32 random unit vectors along the last axis."""
    x = torch.randn(*shape, generator=generator)
    return x / x.norm(dim=-1, keepdim=True)


def synthetic_split(images: int, captions: int, regions: int, dim: int, seed: int):
    """(regions [N, R, D], region_mask [N, R], words [M, W, D], word_mask [M, W], caption_to_image [M]):
    every image holds all its regions; captions have 8 to 16 words, 5 per image."""
    generator = torch.Generator().manual_seed(seed)
    region_vectors = unit_vectors(generator, (images, regions, dim))
    region_mask = torch.ones(images, regions, dtype=torch.bool)
    lengths = torch.randint(8, 17, (captions,), generator=generator)
    width = int(lengths.max())
    word_vectors = unit_vectors(generator, (captions, width, dim))
    word_mask = torch.arange(width)[None, :] < lengths[:, None]
    owners = torch.arange(captions) // 5 % images
    return region_vectors, region_mask, word_vectors, word_mask, owners.numpy()


@torch.no_grad()
def one_query_scan(
    regions: np.ndarray, words: torch.Tensor, word_mask: torch.Tensor, device: torch.device, batch: int
) -> torch.Tensor:
    """MrSw [N] of one caption against every image, gallery copied to ``device`` batch by batch.

    regions [N, R, D] (host memory), words [W, D], word_mask [W] -> scores [N] float32 on the CPU.
    """
    query = words[word_mask].to(device)  # [w, D]
    out = []
    for start in range(0, regions.shape[0], batch):
        gallery = torch.tensor(regions[start : start + batch], device=device)  # a fresh copy every time
        sims = torch.einsum("wd,nrd->nwr", query, gallery)  # [b, w, R]
        out.append(sims.amax(dim=2).sum(dim=1).cpu())
    return torch.cat(out)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=FULL_IMAGES)
    parser.add_argument("--captions", type=int, default=2000, help="captions scored by our scan (25000 = full)")
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--reference-queries", type=int, default=5, help="captions timed one at a time")
    parser.add_argument("--reference-batch", type=int, default=128, help="images per copy in the one-query scan")
    parser.add_argument("--max-mb", type=int, default=512, help="largest block temporary of our scan (MiB)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args(argv)
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)

    regions, region_mask, words, word_mask, owners = synthetic_split(
        options.images, options.captions, options.regions, options.dim, options.seed
    )
    words_per_caption = float(word_mask.sum(dim=1).float().mean())

    # ours: every caption against every image, blocked
    _synchronize(device)
    started = time.perf_counter()
    scores = chunked_scores(
        regions, region_mask, words, word_mask, kind="MrSw", max_bytes=options.max_mb * 2**20, device=device
    )
    _synchronize(device)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # a caption subset leaves images without captions: image retrieval ranks are the ones defined
    t2i_ranks = image_retrieval_ranks(scores, owners)
    rank_seconds = time.perf_counter() - started

    # the reference's way: one caption at a time, the gallery copied again for each
    host_regions = regions.numpy()
    reference_times, worst = [], 0.0
    for q in range(min(options.reference_queries, options.captions)):
        _synchronize(device)
        started = time.perf_counter()
        ref = one_query_scan(host_regions, words[q], word_mask[q], device, options.reference_batch)
        _synchronize(device)
        reference_times.append(time.perf_counter() - started)
        worst = max(worst, float((ref - scores[:, q]).abs().max()))

    per_query_ours = ours_seconds / options.captions
    per_query_reference = float(np.median(reference_times))
    full = options.captions == FULL_CAPTIONS and options.images == FULL_IMAGES
    image_scale = FULL_IMAGES / options.images  # both scans are linear in the images scored
    multiply_adds = options.images * options.regions * float(word_mask.sum()) * options.dim
    payload = {
        "what": "exhaustive MrSw scan for evaluation: ours (batched) vs one query at a time (reference style)",
        "command": command_from_options(__file__, options),
        "machine": machine_info(device=str(device)),
        "shape": {
            "images": options.images,
            "regions": options.regions,
            "dim": options.dim,
            "captions_measured": options.captions,
            "mean_words_per_caption": round(words_per_caption, 2),
        },
        "ours": {
            "seconds_measured": round(ours_seconds, 3),
            "ms_per_query": round(1000 * per_query_ours, 4),
            "gmacs_per_second": round(multiply_adds / ours_seconds / 1e9, 2),
            "rank_seconds_measured": round(rank_seconds, 3),  # image retrieval ranks of the captions scored
        },
        "one_query_at_a_time": {
            "queries_timed": len(reference_times),
            "ms_per_query_median": round(1000 * per_query_reference, 3),
            "ms_per_query_each": [round(1000 * t, 3) for t in reference_times],
            "gallery_batch": options.reference_batch,
        },
        "speedup_per_query": round(per_query_reference / per_query_ours, 2),
        "scores_max_abs_difference": worst,
        "full_5k_x_25k": {
            "measured": full,
            "ours_seconds": round(ours_seconds if full else per_query_ours * FULL_CAPTIONS * image_scale, 1),
            "one_query_at_a_time_seconds": round(per_query_reference * FULL_CAPTIONS * image_scale, 1),
            "note": (
                "ours measured on the full set; the reference extrapolated from "
                f"{len(reference_times)} queries x {FULL_CAPTIONS:,}"
                if full
                else f"extrapolated (linear in captions and images): ours from {options.images:,} images x "
                f"{options.captions:,} captions, the reference from {len(reference_times)} queries"
            ),
        },
        # random vectors: near chance (1 / images), a check that the scan ranked something
        "t2i_r1_sanity": round(float(100.0 * np.mean(t2i_ranks < 1)), 4),
    }
    path = write_results("evaluation", payload, options.out)
    print(
        f"{options.images:,} images x {options.captions:,} captions ({words_per_caption:.1f} words), "
        f"{options.regions} regions, {options.dim}-d on {device}"
    )
    print(f"ours:                 {ours_seconds:8.2f} s  ({1000 * per_query_ours:.3f} ms per query)")
    print(f"one query at a time:  {1000 * per_query_reference:8.2f} ms per query (median of {len(reference_times)})")
    print(f"ratio (per query):    {payload['speedup_per_query']:8.1f} x")
    note = payload["full_5k_x_25k"]
    print(
        f"5K x 25K: ours {note['ours_seconds']:.0f} s, one query at a time {note['one_query_at_a_time_seconds']:.0f} s "
        f"({note['note']})"
    )
    print(f"max |score difference| {worst:.2e}; written to {path}")
    return payload


if __name__ == "__main__":
    main()
