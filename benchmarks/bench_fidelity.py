"""Fidelity of recall + exact rerank against the exhaustive exact scan, per pooling mode.

    python benchmarks/bench_fidelity.py                    # 3,000 images, 100 queries
    python benchmarks/bench_fidelity.py --images 1000 --queries 30 --poolings sum

A tiny TERAN is trained for a few epochs on seeded synthetic data (captions generated from
the regions' content), the test split is ingested into the embedded backend once per pooling
mode, and for each query the pipeline's top-10 at several candidate counts is compared with
the exact scan's top-10 (recall@10 = overlap / 10). Latencies of the two stages are kept
apart. Writes benchmarks/results/fidelity.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_results  # noqa: E402

from teran_es.config import load_config  # noqa: E402
from teran_es.features.columnar import ColumnarReader  # noqa: E402
from teran_es.features.synthetic import make_synthetic_dataset, tiny_model_overrides  # noqa: E402
from teran_es.index.embedded import EmbeddedIndex  # noqa: E402
from teran_es.indexer import Ingestor  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402
from teran_es.searcher import Searcher, recall_at  # noqa: E402
from teran_es.training import train  # noqa: E402


def tiny_config(root: Path, data, epochs: int):
    return load_config(
        None,
        [
            *tiny_model_overrides(data.text_backbone),
            f"train.epochs={epochs}",
            "train.batch_size=40",
            "train.lr=1e-3",
            "train.lr_backbone=1e-3",
            "train.warmup_iters=20",
            "train.device=cpu",
            "train.cpu_threads=1",
            "train.val_images=200",
            f"train.output_dir={root / 'train'}",
            f"data.path={data.data_path}",
            "search.device=cpu",
            "ingest.device=cpu",
        ],
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=3000, help="images in the searched collection")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--noise", type=float, default=1.0, help="synthetic region noise (higher = harder)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--poolings", default="sum,max,region")
    parser.add_argument("--candidates", default="100,300,1000")
    parser.add_argument("--gamma", type=int, default=16)
    parser.add_argument("--doc-gamma", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep data and indexes here (default: a temp dir)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/fidelity.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    candidate_counts = [int(c) for c in args.candidates.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        t = time.perf_counter()
        data = make_synthetic_dataset(
            root / "data",
            train_images=args.train_images,
            val_images=200,
            test_images=args.images,
            seed=args.seed,
            noise=args.noise,
        )
        config = tiny_config(root, data, args.epochs)
        print(f"training a tiny TERAN for {args.epochs} epochs on {args.train_images} images ...", flush=True)
        trained = train(config, progress=False)
        train_seconds = time.perf_counter() - t
        model, _, _ = load_checkpoint(trained.output_dir / "best")
        records = list(ColumnarReader(data.data_path).iter_records("test"))
        rng = np.random.default_rng(args.seed)
        picks = rng.choice(len(records), size=min(args.queries, len(records)), replace=False)
        queries = [records[i].captions[int(rng.integers(len(records[i].captions)))] for i in picks]

        rows = []
        for pooling in args.poolings.split(","):
            config.workdir = str(root / f"work-{pooling}")
            config.quantizer.pooling = pooling
            config.quantizer.gamma = args.gamma
            config.quantizer.doc_gamma = args.doc_gamma
            with Ingestor(config, model=model) as ingestor:
                t = time.perf_counter()
                report = ingestor.ingest(records, batch_size=64)
            ingest_seconds = time.perf_counter() - t
            searcher = Searcher.open(config, model=model)
            exact_ms, exact_top = [], []
            for q in queries:
                r = searcher.search(q, k=10, exact=True)
                exact_ms.append(sum(r.timings.values()) * 1000)
                exact_top.append([h.id for h in r.hits])
            row = {
                "pooling": pooling,
                "documents": report.total_in_index,
                "ingest_images_per_s": len(records) / ingest_seconds,
                "ingest_timings_s": report.timings,
                "index_bytes": EmbeddedIndex.open(
                    root / f"work-{pooling}" / "index", read_only=True
                ).size_on_disk(),
                "exact_scan_ms_p50": percentile(exact_ms, 50),
                "by_candidates": {},
            }
            for k in candidate_counts:
                recalls, recall_ms, rerank_ms, reranked = [], [], [], []
                for q, exact in zip(queries, exact_top, strict=True):
                    r = searcher.search(q, k=10, candidates=k)
                    recalls.append(recall_at([h.id for h in r.hits], exact))
                    recall_ms.append(r.timings["recall"] * 1000)
                    rerank_ms.append(r.timings["rerank"] * 1000)
                    reranked.append(r.candidates)
                row["by_candidates"][k] = {
                    "recall_at_10": statistics.fmean(recalls),
                    "recall_at_10_min": min(recalls),
                    "reranked_mean": statistics.fmean(reranked),
                    "recall_ms_p50": percentile(recall_ms, 50),
                    "recall_ms_p95": percentile(recall_ms, 95),
                    "rerank_ms_p50": percentile(rerank_ms, 50),
                    "rerank_ms_p95": percentile(rerank_ms, 95),
                }
            searcher.close()
            rows.append(row)

    print(
        f"\nrecall@10 of recall + exact rerank vs the exact scan ({len(records)} images, {len(queries)} queries)"
    )
    header = "pooling  docs    " + "  ".join(f"K={k:<5d}" for k in candidate_counts) + "  exact-scan p50"
    print(header)
    for row in rows:
        cells = "  ".join(f"{row['by_candidates'][k]['recall_at_10']:.3f}  " for k in candidate_counts)
        print(f"{row['pooling']:<8s} {row['documents']:<7d} {cells} {row['exact_scan_ms_p50']:.1f} ms")
    payload = {
        "benchmark": "fidelity",
        "settings": vars(args),
        "train": {
            "seconds": train_seconds,
            "best_rsum": trained.best_rsum,
            "epochs": trained.epochs_completed,
        },
        "machine": machine_info(),
        "results": rows,
    }
    print(f"wrote {write_results('fidelity', payload, Path(args.out) if args.out else None)}")


if __name__ == "__main__":
    main()
