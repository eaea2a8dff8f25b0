"""Peer systems on a scale collection: their own candidates, then our exact rerank.

A peer is a class of a module of ``benchmarks/peers/`` (see its ``__init__``) with

    build(regions [N, R, D] float16/32, workdir: Path, **settings) -> dict   (build statistics)
    search(query_words: list of float32 [W, D], k: int, **settings) -> (lists, seconds)
    search_batched(query_words, k, **settings) -> (lists, total seconds)

``lists[q]`` holds up to k image indices for query q, best first; ``seconds[q]`` its latency.
Each peer runs at its default settings, except that its searches get the benchmark's thread
count (``threads``), so that every system answers queries with the same cores (its build keeps
the peer's default threads: build time is recorded, not compared); a peer that cannot be imported is
recorded as skipped, one that raises as failed, with the reason. The per-query cost of
``search_batched`` (one call over all queries) is recorded too. With ``quick``, a peer that would first have to set
up its own environment (fast-plaid: a separate virtual environment of ~5 GB) is skipped.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
from scale_collection import ScaleCollection
from scale_pipeline import candidate_recall, latency_summary, recalls, rerank_one, runs_dir
from tqdm.auto import tqdm

from teran_es.store import FeatureStore

MODULES = {"faiss": "peers.faiss_peer", "fast-plaid": "peers.fast_plaid_peer"}
CLASSES = {"faiss": "FaissPeer", "fast-plaid": "FastPlaidPeer"}


def _check_answer(name: str, lists: Any, seconds: Any, n_queries: int, n_images: int, k: int) -> None:
    if len(lists) != n_queries or len(seconds) != n_queries:
        raise ValueError(f"{name}.search returned {len(lists)} lists and {len(seconds)} latencies for {n_queries} queries")
    for found in lists:
        if len(found) > k or any(not 0 <= int(i) < n_images for i in found):
            raise ValueError(f"{name}.search returned more than k={k} results or an index outside [0, {n_images})")


def run_peer(
    name: str, collection: ScaleCollection, store: FeatureStore, ks: Sequence[int], threads: int, quick: bool, progress: bool
) -> dict[str, Any]:
    """Build the peer on the collection, search each K, rerank its candidates with ``store``."""
    try:
        module = importlib.import_module(MODULES[name])
    except Exception as exc:  # ImportError, or an import-time failure of its own dependencies
        return {"skipped": f"{MODULES[name]} is not importable: {type(exc).__name__}: {exc}"}
    peer_class = getattr(module, CLASSES[name], None)
    if peer_class is None:
        return {"skipped": f"{MODULES[name]} has no {CLASSES[name]}"}
    ensure_venv = getattr(module, "ensure_venv", None)
    if quick and callable(ensure_venv):
        try:
            ensure_venv(create=False)
        except Exception as exc:
            return {"skipped": f"--quick does not set up the peer's environment ({exc}); run once without --quick"}
    workdir = runs_dir(collection) / f"peer-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {"threads": threads}
    try:
        started = time.perf_counter()
        peer = peer_class()
        build = peer.build(collection.regions, workdir)
        out: dict[str, Any] = {
            "module": MODULES[name],
            "settings": {"search threads": threads, "everything else": "the peer's defaults"},
            "build": build,
            "build_wall_seconds": round(time.perf_counter() - started, 3),
            "rows": [],
        }
        queries = list(range(collection.n_queries))
        for k in ks:
            lists, seconds = peer.search(list(collection.query_words), k, **settings)
            _check_answer(name, lists, seconds, len(queries), collection.n_images, k)
            found = [[int(i) for i in f] for f in lists]
            rerank_s, reranked = [], []
            for q in tqdm(queries, desc=f"{name} rerank K={k}", unit="q", disable=not progress, leave=False):
                t = time.perf_counter()
                reranked.append(rerank_one(collection, store, q, found[q]))
                rerank_s.append(time.perf_counter() - t)
            own = recalls(collection, queries, found)
            batch_lists, batch_seconds = peer.search_batched(list(collection.query_words), k, **settings)
            _check_answer(name, batch_lists, [0.0] * len(batch_lists), len(queries), collection.n_images, k)
            batched = {
                "seconds_all_queries": round(float(batch_seconds), 3),
                "ms_per_query": round(float(batch_seconds) / len(queries) * 1e3, 3),
                "same_lists_as_single": round(float(np.mean([list(map(int, a)) == b for a, b in zip(batch_lists, found, strict=True)])), 4),
                "note": "peer search only (one call over all queries), without the rerank",
            }
            out["rows"].append(
                {
                    "candidates": k,
                    "store_dtype": store.dtype,
                    **recalls(collection, queries, reranked),
                    "own_recall_at_10": own["recall_at_10"],
                    "candidate_recall_at_10": candidate_recall(collection, queries, found, 10),
                    "candidate_recall_at_100": candidate_recall(collection, queries, found, 100),
                    "returned_mean": round(float(np.mean([len(f) for f in found])), 1),
                    "single": {
                        "recall": latency_summary(seconds),
                        "rerank": latency_summary(rerank_s),
                        "total": latency_summary(np.asarray(seconds, dtype=np.float64) + np.asarray(rerank_s)),
                    },
                    "batched_search": batched,
                }
            )
        return out
    except Exception as exc:
        return {"failed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}


def peer_bytes(build: dict[str, Any]) -> int | None:
    """The peer's index size from its build statistics (every peer reports ``bytes``)."""
    value = build.get("bytes")
    return None if value is None else int(value)
