"""Offline simulation of the cell first stage on a scale collection: what recall it can reach
before anything is built into an index, and at what cost in postings.

    python benchmarks/sim_first_stage.py --size 100000 --queries 200 --cells 65536 --codebooks 3
    python benchmarks/sim_first_stage.py --size 1000000 --queries 100 --cells 262144 --nprobes 128,256

For one collection (benchmarks/scale_collection.py: OpenMoji-model regions, real test captions,
exact MrSw top lists): fit a ``CellTokenEncoder`` with the library's own code on a seeded sample
of region vectors, assign every region to its cell in each codebook, and keep per codebook and
cell the sorted images that hold it (the posting list an index keeps). Then for every query,
every nprobe and every number of codebooks m (the first m of those fitted), score every image
the way both index backends score a ``MaxSumQuery`` built by ``CellTokenEncoder.query``:

    sum over the first m codebooks and over the words of max over the probed cells it holds
    of <w, centroid> - floor_w,

and report the recall of the exact top 10 among the top K images (candidate recall: the exact
rerank keeps every one of them, so it is the recall@10 the pipeline ends with) and the postings
a query walks. Writes benchmarks/results/sim-first-stage-<N>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_collection as sc  # noqa: E402
from common import RESULTS_DIR, command_line, machine_info, write_results  # noqa: E402

from teran_es.config import QuantizerConfig, default_cache_dir  # noqa: E402
from teran_es.surrogate import CellTokenEncoder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="images in the scale collection (built and cached first)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cells", type=int, default=65536, help="cells per codebook")
    parser.add_argument("--codebooks", type=int, default=3, help="codebooks fitted; every count 1..N is measured")
    parser.add_argument("--nprobes", default="32,64,128", help="cells probed per word and codebook")
    parser.add_argument("--probe-beam", type=int, default=0, help="coarse cells searched per word (0 = all)")
    parser.add_argument("--ks", default="100,300,1000,3000", help="candidate counts K")
    parser.add_argument("--sample", type=int, default=0, help="sample vectors per codebook (0 = 10 per cell)")
    parser.add_argument("--kmeans-iters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "openmoji-minilm"))
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/sim-first-stage-<N>.json")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def collection_of(size: int, queries: int, checkpoint: str, seed: int, progress: bool) -> sc.ScaleCollection:
    """The scale collection of ``size`` images (built and cached by bench_scale's recipe)."""
    import bench_scale

    from teran_es.model.checkpoint import read_meta

    args = bench_scale.parse_args(["--sizes", str(size), "--queries", str(queries), "--checkpoint", checkpoint, "--seed", str(seed)])
    collection, _ = bench_scale.load_collection(args, size, read_meta(checkpoint)["fingerprint"], progress)
    return collection


def posting_lists(cells: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """cells int64 [N, R] of one codebook -> (offsets [C + 1], images int32): cell c's sorted
    distinct images are ``images[offsets[c]:offsets[c + 1]]``."""
    n, r = cells.shape
    keys = np.unique(cells.ravel() * n + np.repeat(np.arange(n), r))
    offsets = np.searchsorted(keys // n, np.arange(n_cells + 1))
    return offsets, (keys % n).astype(np.int32)


def assign_collection(encoder: CellTokenEncoder, regions: np.ndarray, progress: bool, chunk: int = 4096) -> np.ndarray:
    """int64 [N, R, M]: every region's cell in every codebook."""
    n, r, d = regions.shape
    out = np.empty((n, r, len(encoder.codebooks)), dtype=np.int64)
    for lo in tqdm(range(0, n, chunk), desc="assign regions", unit="chunk", disable=not progress):
        block = np.asarray(regions[lo : lo + chunk], dtype=np.float32).reshape(-1, d)
        out[lo : lo + chunk] = encoder.cells_of(block).reshape(-1, r, len(encoder.codebooks))
    return out


def max_sum_scores(groups: list[tuple[int, np.ndarray, np.ndarray]], lists: list[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, int]:
    """Scores float64 [n] of a MaxSumQuery whose groups are (codebook, cells, weights), and the
    postings walked (the embedded index's algorithm, on the simulation's lists)."""
    scores = np.zeros(n)
    best = np.zeros(n)
    postings = 0
    for book, cells, weights in groups:
        offsets, images = lists[book]
        parts = [images[offsets[c] : offsets[c + 1]] for c in cells.tolist()]
        docs = np.concatenate(parts)
        values = np.repeat(weights, [p.size for p in parts])
        postings += docs.size
        order = np.argsort(values, kind="stable")
        best[docs[order]] = values[order]
        touched = np.unique(docs)
        scores[touched] += best[touched]
        best[touched] = 0.0
    return scores, postings


def query_groups(encoder: CellTokenEncoder, words: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The groups of ``encoder.query(words)`` as (codebook, cell ids, weights)."""
    groups = []
    for group in encoder.query(words).groups:
        book = int(group[0][0][1 : group[0][0].index("c")])
        cells = np.array([int(t[t.index("c") + 1 :]) for t, _ in group], dtype=np.int64)
        groups.append((book, cells, np.array([w for _, w in group])))
    return groups


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    progress = not args.no_progress
    nprobes = [int(x) for x in args.nprobes.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    collection = collection_of(args.size, args.queries, args.checkpoint, args.seed, progress)
    regions = collection.regions
    n, r, _ = regions.shape
    sample = args.sample or min(n * r, 10 * args.cells)
    config = QuantizerConfig(
        kind="cells", cells=args.cells, codebooks=args.codebooks, probe_beam=args.probe_beam,
        kmeans_iters=args.kmeans_iters, sample_size=sample, seed=args.seed,
    )
    rng = np.random.default_rng([args.seed, 21])
    fit_rows = np.sort(rng.choice(n * r, size=min(n * r, sample * args.codebooks), replace=False))
    fit_vectors = np.asarray(regions[fit_rows // r, fit_rows % r], dtype=np.float32)
    t = time.perf_counter()
    encoder = CellTokenEncoder.fit(fit_vectors, config)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    cells = assign_collection(encoder, regions, progress)
    assign_s = time.perf_counter() - t
    lists = [posting_lists(cells[:, :, m], encoder.n_cells) for m in range(args.codebooks)]
    rows = []
    for nprobe in nprobes:
        probing = encoder.with_query_settings(dataclasses.replace(config, nprobe=nprobe))
        found: dict[tuple[int, int], list[float]] = {(m, k): [] for m in range(1, args.codebooks + 1) for k in ks}
        walked: dict[int, list[int]] = {m: [] for m in range(1, args.codebooks + 1)}
        seconds = []
        for q in tqdm(range(collection.n_queries), desc=f"nprobe {nprobe}", unit="q", disable=not progress):
            t = time.perf_counter()
            groups = query_groups(probing, collection.query_words[q])
            exact = set(collection.exact_top[q, :10].tolist())
            for m in range(1, args.codebooks + 1):
                scores, postings = max_sum_scores([g for g in groups if g[0] < m], lists, n)
                walked[m].append(postings)
                top = np.argsort(-scores, kind="stable")[: max(ks)]
                for k in ks:
                    found[(m, k)].append(len(exact & set(top[:k].tolist())) / 10)
            seconds.append(time.perf_counter() - t)
        for m in range(1, args.codebooks + 1):
            rows.append(
                {
                    "codebooks": m,
                    "nprobe": nprobe,
                    **{f"candidate_recall_at_10_K{k}": round(float(np.mean(found[(m, k)])), 4) for k in ks},
                    "postings_per_query_mean": round(float(np.mean(walked[m])), 1),
                    "query_clauses_mean": round(float(np.mean([len(w) for w in collection.query_words])) * m * (nprobe - 1), 1),
                }
            )
            print(f"m={m} nprobe={nprobe}: " + " ".join(f"K{k}={rows[-1][f'candidate_recall_at_10_K{k}']:.3f}" for k in ks)
                  + f"  postings {rows[-1]['postings_per_query_mean']:.0f}", flush=True)
    payload = {
        "benchmark": "sim-first-stage",
        "command": command_line(__file__, argv),
        "collection": {"images": n, "regions_per_image": r, "queries": collection.n_queries, "path": str(collection.path.relative_to(default_cache_dir())) if collection.path.is_relative_to(default_cache_dir()) else collection.path.name},
        "encoder": {**dataclasses.asdict(encoder.config), "fit_vectors": int(fit_vectors.shape[0]), "fit_seconds": round(fit_s, 1), "assign_seconds": round(assign_s, 1)},
        "distinct_cells_per_image": [round(float(lists[m][1].size / n), 2) for m in range(args.codebooks)],
        "definition": "candidate_recall_at_10_K = fraction of the exact MrSw top 10 among the K best images by the "
        "cell score (sum over the first m codebooks and the words of max over probed cells held of <w, centroid> - floor)",
        "rows": rows,
        "machine": machine_info(),
    }
    out = args.out or RESULTS_DIR / f"sim-first-stage-{n}.json"
    write_results(out.stem, payload, out)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
