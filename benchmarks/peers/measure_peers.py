"""Measure the peers on seeded clustered data: build time and bytes, per-query latency, and
recall@10 of "peer candidates, then exact MrSw rerank" against brute-force MrSw.

    python benchmarks/peers/measure_peers.py --images 10000 --threads 1

The data: ``--concepts`` unit centres in D dims; every region is a centre plus Gaussian noise
(cosine ~0.7 to its centre), L2-normalised, stored as a float16 .npy and memory-mapped (as the
scale benchmark does). A query describes one target image: half its words are noisy copies of
the target's regions, the rest noisy concept centres; 4..12 words. Numbers are written as JSON
(``--out``) and printed as a table.

``--collection DIR`` measures on a scale-benchmark collection instead (``regions.npy``,
``query_words.npy``, ``query_lengths.npy`` as benchmarks/scale_collection.py writes them: real
OpenMoji-model embeddings recombined and perturbed), read-only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ for ``peers``

from common import write_results  # noqa: E402  (benchmarks/common.py)

from peers import faiss_peer, fast_plaid_peer, mrsw  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_clustered(path: Path, n: int, r: int, d: int, concepts: int, seed: int) -> np.memmap:
    """Write (once) and memory-map a seeded clustered ``[n, r, d]`` float16 region array."""
    if path.exists():
        mm = np.load(path, mmap_mode="r")
        if mm.shape == (n, r, d):
            return mm
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((concepts, d)).astype(np.float32))
    sigma = 1.0 / np.sqrt(d)  # noise norm ~1 = centre norm: cosine ~0.7 to the centre
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, r, d))
    step = 4096
    for s in range(0, n, step):
        c = min(step, n - s)
        ids = rng.integers(0, concepts, size=(c, r))
        x = centres[ids] + sigma * rng.standard_normal((c, r, d)).astype(np.float32)
        out[s : s + c] = _unit(x)
    out.flush()
    del out
    np.save(path.with_name(path.stem + "-centres.npy"), centres)
    return np.load(path, mmap_mode="r")


def make_queries(regions: np.ndarray, centres: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    n, r, d = regions.shape
    sigma = 0.7 / np.sqrt(d)
    queries = []
    for _ in range(count):
        target = np.asarray(regions[rng.integers(n)], dtype=np.float32)
        w = int(rng.integers(4, 13))
        own = target[rng.choice(r, size=min(r, (w + 1) // 2), replace=False)]
        other = centres[rng.integers(0, len(centres), size=w - len(own))]
        words = np.concatenate([own, other]) + sigma * rng.standard_normal((w, d)).astype(np.float32)
        queries.append(_unit(words).astype(np.float32))
    return queries


def recall_at(found: list[list[int]], truth: list[list[int]], k: int = 10) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth, strict=True)]))


def evaluate(regions, queries, truth, ids, latencies, candidates: int) -> dict[str, Any]:
    reranked = [mrsw.mrsw_rerank(regions, q, c, 10) for q, c in zip(queries, ids, strict=True)]
    lat_ms = np.asarray(latencies) * 1000
    return {
        "recall@10_rerank": recall_at(reranked, truth),
        "recall@10_direct": recall_at(ids, truth),
        "latency_ms_p50": float(np.percentile(lat_ms, 50)) if len(lat_ms) else None,
        "latency_ms_p90": float(np.percentile(lat_ms, 90)) if len(lat_ms) else None,
        "latency_ms_mean": float(lat_ms.mean()) if len(lat_ms) else None,
        "mean_candidates": float(np.mean([len(c) for c in ids])),
        "candidates_asked": candidates,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--regions", type=int, default=16)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--concepts", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--candidates", type=int, default=100, help="candidates per query handed to the exact rerank"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="data and indexes (default: cache dir/bench/peers-measure)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON (default: benchmarks/results/peers-{clustered|scale}{N/1000}k.json)",
    )
    ap.add_argument("--venv", type=Path, default=None, help="fast-plaid virtual environment")
    ap.add_argument("--skip-fast-plaid", action="store_true")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--collection", type=Path, default=None, help="a scale-benchmark collection directory")
    ap.add_argument("--quick", action="store_true", help="fewer settings")
    args = ap.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    if args.workdir is None:
        from teran_es.config import default_cache_dir

        args.workdir = default_cache_dir() / "bench" / "peers-measure"
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.collection is not None:
        regions = np.load(args.collection / "regions.npy", mmap_mode="r")
        words = np.load(args.collection / "query_words.npy")
        bounds = np.concatenate([[0], np.cumsum(np.load(args.collection / "query_lengths.npy"))])
        queries = [words[a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        queries = queries[: args.queries]
        n, r, d = regions.shape
        data = {
            "collection": str(args.collection),
            "images": n,
            "regions": r,
            "dim": d,
            "queries": len(queries),
        }
    else:
        n, r, d = args.images, args.regions, args.dim
        data_path = args.workdir / f"clustered-{n}x{r}x{d}-c{args.concepts}-s{args.seed}.npy"
        regions = make_clustered(data_path, n, r, d, args.concepts, args.seed)
        centres = np.load(data_path.with_name(data_path.stem + "-centres.npy"))
        queries = make_queries(regions, centres, args.queries, args.seed)
        data = {
            "images": n,
            "regions": r,
            "dim": d,
            "concepts": args.concepts,
            "queries": len(queries),
            "seed": args.seed,
        }
    t0 = time.perf_counter()
    truth = mrsw.mrsw_bruteforce(regions, queries, 10)
    brute_seconds = time.perf_counter() - t0
    report: dict[str, Any] = {
        "data": data,
        "threads": args.threads,
        "candidates": args.candidates,
        "bruteforce_seconds_all_queries": brute_seconds,
        "load_average_start": os.getloadavg(),
        "peers": [],
    }

    def record(peer: str, build: dict[str, Any], settings: dict[str, Any], ids, lat, batched_seconds=None):
        ev = evaluate(regions, queries, truth, ids, lat, args.candidates)
        ev["batched_seconds_all_queries"] = batched_seconds
        entry = {"peer": peer, "build": build, "search_settings": settings, **ev}
        report["peers"].append(entry)
        print(
            f"{peer:10s} {json.dumps(settings):60s} recall@10 rerank {ev['recall@10_rerank']:.3f} "
            f"direct {ev['recall@10_direct']:.3f}  p50 {ev['latency_ms_p50']:.1f} ms",
            flush=True,
        )

    # ---------------- faiss
    builds = [{}] if n * r > faiss_peer.FLAT_MAX_VECTORS else [{}, {"factory": "Flat"}]
    if args.skip_faiss:
        builds = []
    for build_settings in builds:
        peer = faiss_peer.FaissPeer(threads=args.threads)
        stats = peer.build(regions, args.workdir, **build_settings)
        print(
            f"faiss build {stats['settings']['factory']}: {stats['seconds']:.1f} s "
            f"(cached: {stats['loaded_from_cache']}), {stats['bytes'] / 2**20:.1f} MiB",
            flush=True,
        )
        if stats["settings"]["factory"] == "Flat":
            sweep = [{"k_regions": 256}, {"k_regions": 1024}]
        elif args.quick:
            sweep = [{}]  # the defaults
        else:
            sweep = [
                {"nprobe": 8, "k_regions": 256},
                {"nprobe": 32, "k_regions": 64},
                {"nprobe": 32, "k_regions": 256},
                {"nprobe": 32, "k_regions": 256, "missing": "zero"},
                {"nprobe": 32, "k_regions": 1024},
                {"nprobe": 64, "k_regions": 256},
                {"nprobe": 128, "k_regions": 256},
                {"nprobe": 128, "k_regions": 1024},
                {"nprobe": 256, "k_regions": 1024},
            ]
        for s in sweep:
            ids, lat = peer.search(queries, args.candidates, **s)
            _, batched = peer.search_batched(queries, args.candidates, **s)
            record("faiss", stats, {**peer.last_search}, ids, lat, batched)

    # ---------------- fast-plaid
    if not args.skip_fast_plaid:
        peer = fast_plaid_peer.FastPlaidPeer(threads=args.threads, venv=args.venv)
        stats = peer.build(regions, args.workdir)
        print(
            f"fast-plaid build: {stats['seconds']:.1f} s (cached: {stats['loaded_from_cache']}), "
            f"{stats['bytes'] / 2**20:.1f} MiB",
            flush=True,
        )
        sweep = (
            [{}]
            if args.quick
            else [
                {},
                {"n_ivf_probe": 4, "n_full_scores": 1024},
                {"n_ivf_probe": 16, "n_full_scores": 4096},
                {"n_ivf_probe": 32, "n_full_scores": 8192},
                {"n_ivf_probe": 64, "n_full_scores": 8192},
            ]
        )
        for s in sweep:
            res = peer.search_all(queries, args.candidates, **s)
            settings = {**fast_plaid_peer.SEARCH_DEFAULTS, **s, "threads": args.threads}
            record("fast-plaid", stats, settings, res["single_ids"], res["latencies"], res["batched_seconds"])
            report["peers"][-1]["load_seconds"] = peer.last_search["load_seconds"]

    report["load_average_end"] = os.getloadavg()
    if args.out is None:
        kind = "scale" if args.collection is not None else "clustered"
        args.out = Path(__file__).resolve().parent.parent / "results" / f"peers-{kind}{n // 1000}k.json"
    print(f"written {write_results(args.out.stem, report, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
