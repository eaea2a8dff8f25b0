"""What query-bank normalisers cost, side by side in one run: the committed model's bank
against the demo's 4,081 OpenMoji drawings, computed the way ingest computes them
(teran_es/bank_normalisers.py: captions encoded shortest first, each group of captions
scored without its padding columns) and the plain way (captions in bank order, every caption
padded to the longest), with the largest difference between the two sets of normalisers.

    python benchmarks/bench_bank_norm.py [--checkpoint models/emoji-lite0-minilm] [--threads 2]

Writes benchmarks/results/bank-norm-cost.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, repo_relative, write_results  # noqa: E402

from teran_es.bank_normalisers import encode_bank, image_normalisers  # noqa: E402
from teran_es.evaluation import encode_captions, encode_image_set  # noqa: E402
from teran_es.model.alignment import chunked_scores  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402
from teran_es.query_bank import bank_normaliser  # noqa: E402
from teran_es.region_cache import model_image_set  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "emoji-lite0-minilm"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from teran_es.collections.openmoji import build_openmoji
    from teran_es.features.image_table import iter_collection_images

    model, _, meta = load_checkpoint(args.checkpoint)
    bank = model.query_bank
    if bank is None:
        raise SystemExit(f"{args.checkpoint} carries no query bank (teran-es query-bank)")
    images = list(iter_collection_images(build_openmoji(progress=False)))
    regions, mask = encode_image_set(model, model_image_set(model, images, name="bank-norm"))

    timings: dict[str, float] = {}
    t = time.perf_counter()
    words, word_mask = encode_bank(model, bank)
    timings["encode_bank_sorted"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.inference_mode():
        plain_words, plain_mask = encode_captions(model, list(bank.texts), batch_size=256)
    timings["encode_bank_in_order"] = time.perf_counter() - t
    t = time.perf_counter()
    trimmed = image_normalisers(model, words, word_mask, regions, mask, bank.beta)
    timings["score_trimmed"] = time.perf_counter() - t
    t = time.perf_counter()
    padded = bank_normaliser(chunked_scores(regions, mask, plain_words, plain_mask, kind=model.config.score,
                                            padding=model.config.padding).numpy(), bank.beta)
    timings["score_padded"] = time.perf_counter() - t
    n = regions.shape[0]
    result = {
        "checkpoint": repo_relative(args.checkpoint), "fingerprint": meta["fingerprint"], "drawings": n,
        "bank_texts": len(bank.texts), "beta": bank.beta,
        "words_per_caption_mean": round(float(word_mask.sum(dim=1).float().mean()), 2),
        "padded_width": int(plain_words.shape[1]),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "ms_per_drawing": {"trimmed": round(1000 * timings["score_trimmed"] / n, 3),
                           "padded": round(1000 * timings["score_padded"] / n, 3)},
        "ratios": {"encode_in_order_over_sorted": round(timings["encode_bank_in_order"] / timings["encode_bank_sorted"], 2),
                   "score_padded_over_trimmed": round(timings["score_padded"] / timings["score_trimmed"], 2)},
        "max_abs_difference": float(np.abs(trimmed - padded).max()),
        "machine": machine_info(threads=args.threads),
    }
    for key in ("seconds", "ms_per_drawing", "ratios"):
        print(key, result[key])
    print("max |trimmed - padded| =", result["max_abs_difference"])
    print(f"wrote {write_results('bank-norm-cost', result, RESULTS_DIR / 'bank-norm-cost.json')}")


if __name__ == "__main__":
    main()
