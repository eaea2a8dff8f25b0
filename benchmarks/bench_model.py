"""Measure the TERAN model: parameter counts, training throughput, exhaustive scoring time.

    python benchmarks/bench_model.py                      # everything, CPU
    python benchmarks/bench_model.py --what scores --device cuda
    python benchmarks/bench_model.py --what padding --threads 1 --out benchmarks/results/model-padding.json

Writes benchmarks/results/model.json (with the machine it ran on) and prints the numbers.
Inputs are random (seeded): features, boxes and captions for training, unit vectors for
scoring; the figures are about speed only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

from teran_es.config import ModelConfig
from teran_es.model.alignment import chunked_scores
from teran_es.model.loss import contrastive_loss
from teran_es.model.teran import TERAN, count_parameters
from teran_es.model.textual import load_text_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_results  # noqa: E402  (benchmarks/common.py)

WORDS = "a man woman dog cat red blue car street grass ball riding sitting on the with of in near two small".split()


def bert_base_6_layers() -> transformers.BertConfig:
    """bert-base-uncased's architecture (random weights), 6 layers as the paper's configs use."""
    return transformers.BertConfig(
        vocab_size=30522, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072
    )


def build(backbone: str, config: ModelConfig) -> TERAN:
    model_backbone, tokenizer = load_text_backbone(None)  # MiniLM: its tokenizer is bert-base-uncased's vocab
    if backbone == "bert-base-6-random":
        model_backbone = transformers.AutoModel.from_config(bert_base_6_layers())
    return TERAN(config, text_backbone=model_backbone, tokenizer=tokenizer)


def random_captions(count: int, words: int, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(WORDS), (count, words), generator=gen)
    return [" ".join(WORDS[i] for i in row) for row in picks.tolist()]


def random_batch(
    model: TERAN, batch: int, regions: int, caption_words: int, seed: int, device: torch.device
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, regions, model.config.region_feature_dim, generator=gen).relu()
    corners = torch.rand(batch, regions, 2, 2, generator=gen)
    boxes = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)
    tokens = model.tokenize(random_captions(batch, caption_words, seed))
    out = {
        "features": features,
        "boxes": boxes,
        "region_mask": torch.ones(batch, regions, dtype=torch.bool),
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
    }
    return {k: v.to(device) for k, v in out.items()}


def bench_training(backbone: str, batch: int, steps: int, device: torch.device) -> dict:
    """Pairs per second of forward + backward + Adam step of the paper-sized model."""
    torch.manual_seed(0)
    model = build(backbone, ModelConfig()).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    data = random_batch(model, batch, 36, 12, seed=0, device=device)

    def step() -> float:
        loss = contrastive_loss(model(**data), margin=0.2, max_violation=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()
        return loss.item()

    step()  # warm-up: allocations, Adam state
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times, cpu_times = [], []
    for _ in range(steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    seconds = sorted(times)[len(times) // 2]
    return {
        "backbone": backbone,
        "parameters": count_parameters(model),
        "batch": batch,
        "tokens_per_caption": int(data["attention_mask"].sum(1).float().mean()),
        "regions": 36,
        "steps_timed": steps,
        "seconds_per_step_median": round(seconds, 3),
        "seconds_per_step_all": [round(t, 3) for t in times],
        "pairs_per_second": round(batch / seconds, 3),
        # the fastest step is the best estimate of an unshared machine's speed
        "pairs_per_second_best": round(batch / min(times), 3),
        # CPU seconds of this process per step: on a shared machine, wall time / this shows the contention
        "cpu_seconds_per_step_median": round(sorted(cpu_times)[len(cpu_times) // 2], 3),
    }


def bench_scores(
    images: int,
    captions: int,
    dim: int,
    regions: int,
    words: int,
    max_bytes: int,
    device: torch.device,
    kind: str,
) -> dict:
    """Time of ``chunked_scores`` for images x captions random unit vectors (all masks full)."""
    gen = torch.Generator().manual_seed(0)
    region_vectors = torch.nn.functional.normalize(torch.randn(images, regions, dim, generator=gen), dim=-1)
    word_vectors = torch.nn.functional.normalize(torch.randn(captions, words, dim, generator=gen), dim=-1)
    region_mask = torch.ones(images, regions, dtype=torch.bool)
    word_mask = torch.ones(captions, words, dtype=torch.bool)
    # warm-up on a slice (thread pools, allocator, CUDA context)
    chunked_scores(
        region_vectors[:16],
        region_mask[:16],
        word_vectors[:64],
        word_mask[:64],
        kind,
        max_bytes=max_bytes,
        device=device,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    scores = chunked_scores(
        region_vectors, region_mask, word_vectors, word_mask, kind, max_bytes=max_bytes, device=device
    )
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    multiply_adds = images * captions * regions * words * dim
    return {
        "images": images,
        "captions": captions,
        "dim": dim,
        "regions": regions,
        "words": words,
        "kind": kind,
        "max_bytes": max_bytes,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "gflops": round(2 * multiply_adds / seconds / 1e9, 2),
        "pairs_per_second": round(images * captions / seconds),
        "checksum": float(scores.double().sum()),
    }


def bench_padding_fill(
    images: int, regions: int, dim: int, words: int, repeats: int, device: torch.device, kind: str
) -> dict:
    """The exact scan of one query (``chunked_scores``, images x 1 sentence), with every region
    valid against the same vectors with the last region of each image padded, interleaved
    ``repeats`` times. Padding costs a fill of the region tensor before the product (so that
    no mask is needed inside it); with nothing padded that fill is skipped."""
    gen = torch.Generator().manual_seed(0)
    region_vectors = torch.nn.functional.normalize(torch.randn(images, regions, dim, generator=gen), dim=-1)
    word_vectors = torch.nn.functional.normalize(torch.randn(1, words, dim, generator=gen), dim=-1)
    word_mask = torch.ones(1, words, dtype=torch.bool)
    masks = {"nothing_padded": torch.ones(images, regions, dtype=torch.bool)}
    masks["last_region_padded"] = masks["nothing_padded"].clone()
    masks["last_region_padded"][:, -1] = False
    seconds: dict[str, list[float]] = {name: [] for name in masks}
    for repeat in range(repeats + 1):  # the first round warms up and is not kept
        for name, mask in masks.items():
            started = time.perf_counter()
            chunked_scores(region_vectors, mask, word_vectors, word_mask, kind, device=device)
            if repeat:
                seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "images": images,
        "regions": regions,
        "dim": dim,
        "words": words,
        "repeats": repeats,
        "kind": kind,
        "median_ms": {name: round(1000 * value, 2) for name, value in medians.items()},
        "padded_over_unpadded": round(medians["last_region_padded"] / medians["nothing_padded"], 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=["all", "params", "train", "scores", "padding"], default="all")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--backbones", default="minilm,bert-base-6-random", help="comma list for --what train"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up step)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--words", type=int, default=12)
    parser.add_argument("--kind", default="MrSw")
    parser.add_argument("--max-bytes", type=int, default=256 * 2**20)
    parser.add_argument("--scan-images", type=int, default=8192, help="images of --what padding's exact scan")
    parser.add_argument("--scan-regions", type=int, default=16)
    parser.add_argument("--scan-dim", type=int, default=256)
    parser.add_argument("--scan-words", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds of --what padding")
    parser.add_argument("--out", default="benchmarks/results/model.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results: dict = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(device=str(device), transformers=transformers.__version__),
        "args": vars(args),
    }
    if args.what in ("all", "params"):
        results["parameters"] = {
            name: count_parameters(build(name, ModelConfig())) for name in ("minilm", "bert-base-6-random")
        }
        results["paper_config"] = dataclasses.asdict(ModelConfig())
        print("parameters:", json.dumps(results["parameters"], indent=1))
    if args.what in ("all", "train"):
        results["training"] = []
        for name in args.backbones.split(","):
            record = bench_training(name, args.batch, args.steps, device)
            results["training"].append(record)
            print(
                f"training {name}: {record['pairs_per_second']} pairs/s median, "
                f"{record['pairs_per_second_best']} best (s/step: {record['seconds_per_step_all']})"
            )
    if args.what in ("all", "scores"):
        record = bench_scores(
            args.images, args.captions, args.dim, args.regions, args.words, args.max_bytes, device, args.kind
        )
        results["chunked_scores"] = record
        print(
            f"chunked_scores {args.images}x{args.captions}: {record['seconds']} s ({record['gflops']} GFLOP/s)"
        )
    if args.what in ("all", "padding"):
        record = bench_padding_fill(
            args.scan_images, args.scan_regions, args.scan_dim, args.scan_words, args.repeats, device, args.kind
        )
        results["padding_fill"] = record
        print(
            f"exact scan of one query, {args.scan_images} images: median {record['median_ms']} ms; "
            f"padded / unpadded {record['padded_over_unpadded']}x"
        )
    print("wrote", write_results("model", results, Path(args.out)))
    return results


if __name__ == "__main__":
    main()
