"""Our search pipeline on a scale collection: build (feature store, quantizer, index) and measure
(recall stage, rerank stage, single queries and batches), plus the exact-scan peer.

Everything built lives under ``<collection>/runs/`` and is reused when the same configuration
asks for it again: a build writes a ``*.done.json`` marker with its measurements last, and a
reused build reports those measurements with ``"fresh": false``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scale_collection import RUNS, ScaleCollection, image_id
from tqdm.auto import tqdm

from teran_es.config import ElasticsearchConfig, QuantizerConfig
from teran_es.index.base import IndexError_, SurrogateDocument
from teran_es.index.mappings import CURRENT_VERSION
from teran_es.rerank import rerank_exact, rerank_exact_many
from teran_es.store import FeatureStore
from teran_es.surrogate import FirstStageEncoder, fit_encoder, group_region_hits, load_encoder
from teran_es.surrogate.terms import region_hits_needed

RERANK_TOP = 100  # the rerank returns this many, for recall@100
TIE_TOLERANCE = 1e-4  # a returned image whose exact score is this close to the k-th exact score counts
STORE_BATCH = 1024  # images per FeatureStore.add
DOC_BATCH = 2048  # images encoded into documents at once
ES_STATS_CACHE_S = 10.5  # the server caches its store statistics for 10 s


# ------------------------------------------------------------------------ helpers


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"), "n": 0}
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": int(ms.size),
    }


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def index_of(doc_or_image_id: str) -> int:
    return int(doc_or_image_id.removeprefix("scale-").split("#", 1)[0])


def query_tensors(words: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.from_numpy(np.ascontiguousarray(words, dtype=np.float32))[None]
    return w, torch.ones(w.shape[:2], dtype=torch.bool)


def padded_query_tensors(query_words: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Several queries' words ``[W_q, D]`` as ``(float32 [Q, max W, D], bool mask [Q, max W])``."""
    width = max(w.shape[0] for w in query_words)
    words = torch.zeros(len(query_words), width, query_words[0].shape[1], dtype=torch.float32)
    mask = torch.zeros(len(query_words), width, dtype=torch.bool)
    for q, w in enumerate(query_words):
        words[q, : w.shape[0]] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        mask[q, : w.shape[0]] = True
    return words, mask


def tie_tolerant_recall(collection: ScaleCollection, query: int, found: Sequence[int], k: int) -> float:
    """|found[:k] among the exact top k| / k, where an image outside the exact list whose exact
    score is within TIE_TOLERANCE of the exact k-th score also counts (float ties)."""
    exact = collection.exact_top[query, :k]
    k = min(k, exact.size)
    if k == 0:
        return 1.0
    found = list(found[:k])
    hits = set(found) & set(exact.tolist())
    others = [i for i in found if i not in hits]
    tied = 0
    if others:
        kth = float(collection.exact_scores[query, k - 1])
        tied = int(np.sum(collection.scores_of(query, others) >= kth - TIE_TOLERANCE))
    return (len(hits) + tied) / k


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class IndexSetting:
    """What the documents depend on (the candidate count K, nprobe and the store dtype do not).

    kind "cells": ``cells`` per codebook, ``codebooks`` trees, fitted on ``sample_size`` region
    vectors each. kind "scalar": the pooled scalar quantisation (pooling, gamma, doc_gamma, Q),
    fitted on ``sample_size`` vectors.
    """

    kind: str = "cells"
    cells: int = 65536
    codebooks: int = 1
    pooling: str = "max"
    gamma: int = 64
    doc_gamma: int = 256
    q_factor: float = 50.0
    query_gamma: int = 0  # 0 = gamma
    sample_size: int = 60_000
    seed: int = 0

    @property
    def key(self) -> str:
        if self.kind == "cells":
            return f"cells-c{self.cells}-m{self.codebooks}-s{self.sample_size}"
        q = f"{self.q_factor:g}".replace(".", "p")
        extra = f"-qg{self.query_gamma}" if self.query_gamma else ""
        return f"{self.pooling}-g{self.gamma}-d{self.doc_gamma}-q{q}{extra}"

    @property
    def label(self) -> str:
        """A short name for plots."""
        return f"cells{self.codebooks}x{self.cells}" if self.kind == "cells" else f"{self.pooling}{self.gamma}"

    def quantizer_config(self, nprobe: int = 64) -> QuantizerConfig:
        return QuantizerConfig(
            kind=self.kind,
            cells=self.cells,
            codebooks=self.codebooks,
            nprobe=nprobe,
            gamma=self.gamma,
            doc_gamma=self.doc_gamma,
            q_factor=self.q_factor,
            pooling=self.pooling,
            query_gamma=self.query_gamma,
            sample_size=self.sample_size,
            seed=self.seed,
        )

    def describe(self) -> dict[str, Any]:
        if self.kind == "cells":
            return {"kind": "cells", "cells": self.cells, "codebooks": self.codebooks, "sample_size": self.sample_size, "seed": self.seed}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("cells", "codebooks")}


def runs_dir(collection: ScaleCollection) -> Path:
    path = collection.path / RUNS
    path.mkdir(parents=True, exist_ok=True)
    return path


def _marker(path: Path, collection: ScaleCollection, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The done-marker at ``path`` when it belongs to this build of the regions (and matches ``extra``)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("regions_id") != collection.manifest["regions_id"]:
        return None
    if extra and any(data.get(k) != v for k, v in extra.items()):
        return None
    return data


def _write_marker(path: Path, collection: ScaleCollection, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"regions_id": collection.manifest["regions_id"], **payload}, indent=2, default=str))
    tmp.replace(path)


# --------------------------------------------------------------------- the store


def build_store(
    collection: ScaleCollection, dtype: str, model_fingerprint: str, fresh: bool, progress: bool
) -> tuple[FeatureStore, dict[str, Any]]:
    """The collection in a FeatureStore of ``dtype`` (opened read-only) and how it was written."""
    path = runs_dir(collection) / f"store-{dtype}"
    marker_path = path.with_name(path.name + ".done.json")
    marker = None if fresh else _marker(marker_path, collection)
    if marker is None:
        marker_path.unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
        ids = collection.image_ids()
        n = collection.n_images
        started = time.perf_counter()
        store = FeatureStore.open(path, create=True, dim=collection.regions.shape[-1], dtype=dtype, model_fingerprint=model_fingerprint)
        read_s = 0.0
        with store:
            for lo in tqdm(range(0, n, STORE_BATCH), desc=f"write {dtype} store", unit="batch", disable=not progress):
                t = time.perf_counter()
                regions = np.asarray(collection.regions[lo : lo + STORE_BATCH], dtype=np.float32)
                read_s += time.perf_counter() - t
                store.add(ids[lo : lo + STORE_BATCH], regions)
        seconds = time.perf_counter() - started - read_s
        marker = {
            "dtype": dtype,
            "images": n,
            "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 1),
            "read_regions_seconds_excluded": round(read_s, 3),
            "bytes": directory_bytes(path),
            "measured_at": now(),
        }
        _write_marker(marker_path, collection, marker)
        marker["fresh"] = True
    else:
        marker["fresh"] = False
    marker.pop("regions_id", None)
    marker["bytes_per_image"] = round(marker["bytes"] / collection.n_images, 1)
    return FeatureStore.open(path), marker


# ----------------------------------------------------------------- the quantizer


def fit_quantizer(collection: ScaleCollection, setting: IndexSetting) -> tuple[FirstStageEncoder, dict[str, Any]]:
    """The setting's encoder, fitted once on a seeded sample of the collection's regions."""
    path = runs_dir(collection) / f"quantizer-{setting.key}.npz"
    info_path = path.with_suffix(".done.json")
    marker = _marker(info_path, collection)
    if marker is not None and path.is_file():
        marker.pop("regions_id", None)
        return load_encoder(path), {**marker, "fresh": False}
    regions_per_image = collection.regions.shape[1]
    # cells: every codebook draws its own subsample of sample_size vectors from this sample
    vectors = setting.sample_size * (setting.codebooks if setting.kind == "cells" else 1)
    n_sample = min(collection.n_images, max(2, -(-vectors // regions_per_image)))
    picks = np.sort(np.random.default_rng([setting.seed, 7]).choice(collection.n_images, size=n_sample, replace=False))
    t = time.perf_counter()
    sample = np.asarray(collection.regions[picks], dtype=np.float32)
    encoder = fit_encoder(sample, setting.quantizer_config(), model_fingerprint=collection.manifest["model_fingerprint"])
    info = {"seconds": round(time.perf_counter() - t, 3), "sample_images": int(n_sample)}
    if setting.kind == "scalar":
        info["doc_scale"] = encoder.doc_scale
    encoder.save(path)
    _write_marker(info_path, collection, info)
    return encoder, {**info, "fresh": True}


# ------------------------------------------------------------------- documents


class Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0


def documents(collection: ScaleCollection, encoder: FirstStageEncoder, clock: Stopwatch, progress: str | None) -> Iterator[SurrogateDocument]:
    """The collection's surrogate documents as the library's Ingestor writes them (image id in
    the metadata, no path or caption here); time spent making them goes to ``clock``."""
    n = collection.n_images
    bar = tqdm(total=n, desc=progress, unit="img", disable=progress is None, mininterval=1.0)
    for lo in range(0, n, DOC_BATCH):
        t = time.perf_counter()
        hi = min(n, lo + DOC_BATCH)
        ids = [image_id(i) for i in range(lo, hi)]
        batch = encoder.encode_images(np.asarray(collection.regions[lo:hi], dtype=np.float32))
        docs = [
            SurrogateDocument(id=doc_id, terms=terms, metadata={"image_id": ids[row]}, field=encoder.index_field)
            for doc_id, row, terms in zip(batch.ids(ids), batch.image_rows.tolist(), encoder.term_dicts(batch.encoding), strict=True)
            if terms
        ]
        clock.seconds += time.perf_counter() - t
        yield from docs
        bar.update(hi - lo)
    bar.close()


# ------------------------------------------------------------------ the indexes


def es_index_name(collection: ScaleCollection, setting: IndexSetting) -> str:
    raw = f"teran-bench-{collection.path.name}-{setting.key}".lower()
    return re.sub(r"[^a-z0-9_\-]+", "-", raw)


def _ingest(index: Any, collection: ScaleCollection, encoder: FirstStageEncoder, label: str, progress: bool) -> dict[str, Any]:
    clock = Stopwatch()
    started = time.perf_counter()
    report = index.add(documents(collection, encoder, clock, f"index {label}" if progress else None))
    added = time.perf_counter()
    index.refresh()
    refreshed = time.perf_counter()
    if report.failed:
        raise RuntimeError(f"{label}: {report.failed} documents rejected (see {report.dead_letter_path})")
    n = collection.n_images
    index_s = added - started - clock.seconds
    return {
        "images": n,
        "documents": report.indexed,
        "quantize_seconds": round(clock.seconds, 3),
        "quantize_images_per_s": round(n / clock.seconds, 1),
        "index_seconds": round(index_s + refreshed - added, 3),
        "index_images_per_s": round(n / (index_s + refreshed - added), 1),
        "refresh_seconds": round(refreshed - added, 3),
    }


def open_embedded(
    collection: ScaleCollection, setting: IndexSetting, encoder: FirstStageEncoder, fresh: bool, progress: bool
) -> tuple[Any, dict[str, Any]]:
    from teran_es.index.embedded import EmbeddedIndex

    path = runs_dir(collection) / f"embedded-{setting.key}"
    marker_path = path.with_name(path.name + ".done.json")
    meta = {"quantizer_fingerprint": encoder.fingerprint}
    marker = None if fresh else _marker(marker_path, collection, {"quantizer_fingerprint": encoder.fingerprint})
    if marker is None:
        marker_path.unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
        with EmbeddedIndex.open(path, meta=meta) as index:
            ingest = _ingest(index, collection, encoder, f"embedded {setting.key}", progress)
            t = time.perf_counter()
            index.merge()
            ingest["merge_seconds"] = round(time.perf_counter() - t, 3)
            ingest["bytes"] = index.size_on_disk()
        ingest["measured_at"] = now()
        _write_marker(marker_path, collection, {"quantizer_fingerprint": encoder.fingerprint, "ingest": ingest})
        ingest["fresh"] = True
    else:
        ingest = {**marker["ingest"], "fresh": False}
    index = EmbeddedIndex.open(path, create=False, meta=meta, read_only=True)
    if index.count() != ingest["documents"]:
        raise RuntimeError(f"{path}: {index.count()} documents, {ingest['documents']} expected")
    return index, ingest


def open_elasticsearch(
    collection: ScaleCollection,
    setting: IndexSetting,
    encoder: FirstStageEncoder,
    url: str,
    fresh: bool,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    from teran_es.index.elastic import ElasticIndex

    name = es_index_name(collection, setting)
    config = ElasticsearchConfig(url=url, request_timeout=600)
    meta = {"quantizer_fingerprint": encoder.fingerprint}
    marker_path = runs_dir(collection) / f"elasticsearch-{setting.key}.done.json"
    # an index built under another mapping (say, before cells had a keyword field) is rebuilt
    expect = {"quantizer_fingerprint": encoder.fingerprint, "index": name, "url": url, "mapping_version": CURRENT_VERSION}
    marker = None if fresh else _marker(marker_path, collection, expect)
    if marker is not None:
        try:
            index = ElasticIndex.open(config, name, create=False, meta=meta, dead_letter_path=marker_path.with_suffix(".dead-letter"))
            if index.count() == marker["ingest"]["documents"]:
                return index, {**marker["ingest"], "fresh": False}
            index.close()
        except IndexError_:
            pass
    marker_path.unlink(missing_ok=True)
    index = ElasticIndex.open(config, name, create=True, dead_letter_path=marker_path.with_suffix(".dead-letter"))
    index.delete_index()
    index.close()
    index = ElasticIndex.open(config, name, create=True, meta=meta, dead_letter_path=marker_path.with_suffix(".dead-letter"))
    ingest = _ingest(index, collection, encoder, f"elasticsearch {setting.key}", progress)
    index.flush()
    t = time.perf_counter()
    index.force_merge(1)
    ingest["merge_seconds"] = round(time.perf_counter() - t, 3)
    ingest["merged_at_monotonic"] = time.monotonic()
    ingest["segments"] = index.segment_count()
    ingest["server_version"] = index.server_version
    ingest["measured_at"] = now()
    ingest["marker"] = str(marker_path)
    ingest["expect"] = expect
    ingest["fresh"] = True
    return index, ingest


def finish_elasticsearch(index: Any, collection: ScaleCollection, ingest: dict[str, Any]) -> dict[str, Any]:
    """After a fresh ingest: read the index size (once the server's statistics cache cannot
    predate the merge, which the measurements in between usually cover) and write the marker."""
    if not ingest.get("fresh") or "bytes" in ingest:
        return ingest
    waited = max(0.0, ES_STATS_CACHE_S - (time.monotonic() - ingest.pop("merged_at_monotonic")))
    time.sleep(waited)
    ingest["bytes"] = index.size_on_disk()
    ingest["waited_for_size_seconds"] = round(waited, 3)
    marker_path, expect = Path(ingest.pop("marker")), ingest.pop("expect")
    _write_marker(marker_path, collection, {**expect, "ingest": {k: v for k, v in ingest.items() if k != "fresh"}})
    return ingest


# ---------------------------------------------------------------- measurement


def candidates(index: Any, encoder: FirstStageEncoder, query: Any, k: int, regions_per_image: int) -> list[int]:
    """First stage as the Searcher does it: top-k images (region hits grouped for pooling=region)."""
    if not encoder.region_documents:
        return [index_of(h.id) for h in index.search(query, k)]
    hits = index.search(query, region_hits_needed(k, regions_per_image))
    return [index_of(i) for i, _ in group_region_hits(((h.id, h.score) for h in hits), k=k)]


def candidates_many(index: Any, encoder: FirstStageEncoder, queries: list[Any], k: int, regions_per_image: int) -> list[list[int]]:
    if not encoder.region_documents:
        return [[index_of(h.id) for h in hits] for hits in index.search_many(queries, k)]
    grouped = []
    for hits in index.search_many(queries, region_hits_needed(k, regions_per_image)):
        grouped.append([index_of(i) for i, _ in group_region_hits(((h.id, h.score) for h in hits), k=k)])
    return grouped


def rerank_one(collection: ScaleCollection, store: FeatureStore, query: int, found: list[int], device: str = "cpu") -> list[int]:
    words, mask = query_tensors(collection.query_words[query])
    scored = rerank_exact(words, mask, store, [image_id(i) for i in found], RERANK_TOP, device=device)[0]
    return [index_of(s.id) for s in scored]


def rerank_batch(collection: ScaleCollection, store: FeatureStore, queries: Sequence[int], found: Sequence[list[int]]) -> list[list[int]]:
    """The exact rerank of several queries at once (``rerank_exact_many``): the union of their
    candidates is read from the store once, then each query scores its own candidates (the same
    lists as ``rerank_one``)."""
    words, mask = padded_query_tensors([collection.query_words[q] for q in queries])
    # One scoring call per query over all its candidates, as a batch is timed to amortise calls.
    per_call = max(1, max(len(f) for f in found))
    ranked = rerank_exact_many(
        words, mask, store, [[image_id(i) for i in f] for f in found], RERANK_TOP, device="cpu", batch_size=per_call
    )
    return [[index_of(s.id) for s in scored] for scored in ranked]


def recalls(collection: ScaleCollection, queries: Sequence[int], lists: Sequence[list[int]]) -> dict[str, float]:
    r10 = [tie_tolerant_recall(collection, q, f, 10) for q, f in zip(queries, lists, strict=True)]
    r100 = [tie_tolerant_recall(collection, q, f, 100) for q, f in zip(queries, lists, strict=True)]
    return {"recall_at_10": round(float(np.mean(r10)), 4), "recall_at_10_min": round(float(np.min(r10)), 4), "recall_at_100": round(float(np.mean(r100)), 4)}


def candidate_recall(collection: ScaleCollection, queries: Sequence[int], lists: Sequence[list[int]], k: int) -> float:
    """Fraction of the exact top k found among the candidates (the ceiling of the rerank)."""
    shares = [len(set(f) & set(collection.exact_top[q, :k].tolist())) / min(k, collection.exact_top.shape[1]) for q, f in zip(queries, lists, strict=True)]
    return round(float(np.mean(shares)), 4)


def _warm(run: Callable[[int], Any], queries: Sequence[int], warmup: int) -> None:
    for q in queries[:warmup]:
        run(q)


def measure_setting(
    collection: ScaleCollection,
    index: Any,
    encoder: FirstStageEncoder,
    stores: dict[str, FeatureStore],
    ks: Sequence[int],
    batch_size: int,
    warmup: int,
    label: str,
    progress: bool,
    nprobes: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """One row per (nprobe, K, store dtype): recall@10/100 after the rerank, latencies of both
    stages, single queries and batches of ``batch_size``. ``nprobes`` (cells only; query-side,
    so one index serves them all): the encoder's own nprobe when empty."""
    rows = []
    for nprobe in nprobes or [None]:
        probing = encoder
        if nprobe is not None:
            probing = encoder.with_query_settings(dataclasses.replace(encoder.config, nprobe=nprobe))
        tag = label if nprobe is None else f"{label} nprobe={nprobe}"
        for row in _measure_probing(collection, index, probing, stores, ks, batch_size, warmup, tag, progress):
            rows.append({"nprobe": nprobe, **row})
    return rows


def _measure_probing(
    collection: ScaleCollection,
    index: Any,
    encoder: FirstStageEncoder,
    stores: dict[str, FeatureStore],
    ks: Sequence[int],
    batch_size: int,
    warmup: int,
    label: str,
    progress: bool,
) -> list[dict[str, Any]]:
    queries = list(range(collection.n_queries))
    per_image = collection.regions.shape[1]
    terms = [encoder.query(collection.query_words[q]) for q in queries]  # warms the encoder too
    rows = []
    for k in ks:
        def recall(q: int, k: int = k) -> list[int]:
            return candidates(index, encoder, encoder.query(collection.query_words[q]), k, per_image)

        _warm(recall, queries, warmup)
        found, recall_s = [], []
        for q in tqdm(queries, desc=f"{label} recall K={k}", unit="q", disable=not progress, leave=False):
            t = time.perf_counter()
            found.append(recall(q))
            recall_s.append(time.perf_counter() - t)
        batches = [queries[i : i + batch_size] for i in range(0, len(queries), batch_size)]
        batch_found, batch_recall_s = [], []
        candidates_many(index, encoder, terms[: min(batch_size, len(terms))], k, per_image)  # warm-up
        for batch in batches:
            t = time.perf_counter()
            batch_terms = [encoder.query(collection.query_words[q]) for q in batch]
            batch_found.extend(candidates_many(index, encoder, batch_terms, k, per_image))
            batch_recall_s.append(time.perf_counter() - t)
        same_candidates = sum(a == b for a, b in zip(found, batch_found, strict=True))
        for dtype, store in stores.items():
            _warm(lambda q, store=store, found=found: rerank_one(collection, store, q, found[q]), queries, warmup)
            reranked, rerank_s = [], []
            for q in tqdm(queries, desc=f"{label} rerank K={k} {dtype}", unit="q", disable=not progress, leave=False):
                t = time.perf_counter()
                reranked.append(rerank_one(collection, store, q, found[q]))
                rerank_s.append(time.perf_counter() - t)
            batch_reranked, batch_rerank_s = [], []
            rerank_batch(collection, store, batches[0], [batch_found[q] for q in batches[0]])  # warm-up
            for batch in batches:
                t = time.perf_counter()
                batch_reranked.extend(rerank_batch(collection, store, batch, [batch_found[q] for q in batch]))
                batch_rerank_s.append(time.perf_counter() - t)
            total_s = np.asarray(recall_s) + np.asarray(rerank_s)
            batch_total_s = np.asarray(batch_recall_s) + np.asarray(batch_rerank_s)
            rows.append(
                {
                    "candidates": k,
                    "store_dtype": dtype,
                    **recalls(collection, queries, reranked),
                    "candidate_recall_at_10": candidate_recall(collection, queries, found, 10),
                    "candidate_recall_at_100": candidate_recall(collection, queries, found, 100),
                    "reranked_mean": round(float(np.mean([len(f) for f in found])), 1),
                    "single": {
                        "recall": latency_summary(recall_s),
                        "rerank": latency_summary(rerank_s),
                        "total": latency_summary(total_s),
                    },
                    "batched": {
                        "batch_size": batch_size,
                        "batches": len(batches),
                        "recall_per_batch": latency_summary(batch_recall_s),
                        "rerank_per_batch": latency_summary(batch_rerank_s),
                        "total_per_batch": latency_summary(batch_total_s),
                        "total_ms_per_query": round(float(batch_total_s.sum() / len(queries) * 1e3), 3),
                        "queries_per_s": round(float(len(queries) / batch_total_s.sum()), 1),
                        "same_candidates_as_single": round(same_candidates / len(queries), 4),
                        **{f"batched_{key}": value for key, value in recalls(collection, queries, batch_reranked).items()},
                    },
                }
            )
    return rows


# -------------------------------------------------------------- the exact scan


def measure_exact_scan(
    collection: ScaleCollection, store: FeatureStore, device: str, max_queries: int, budget_s: float, batch_size: int, progress: bool
) -> dict[str, Any]:
    """The reranker over the whole store (candidates=None), one query at a time on the first
    queries until ``max_queries`` or ``budget_s`` seconds (at least 2), then one batch."""
    def scan(queries: Sequence[int]) -> list[list[int]]:
        words = [collection.query_words[q] for q in queries]
        width = max(w.shape[0] for w in words)
        padded = torch.zeros(len(words), width, words[0].shape[1])
        mask = torch.zeros(len(words), width, dtype=torch.bool)
        for i, w in enumerate(words):
            padded[i, : w.shape[0]] = torch.from_numpy(w)
            mask[i, : w.shape[0]] = True
        scored = rerank_exact(padded, mask, store, None, RERANK_TOP, device=device, batch_size=4096)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return [[index_of(s.id) for s in row] for row in scored]

    scan([0])  # warm-up (first touch of the store's pages, CUDA context)
    lists, seconds = [], []
    started = time.perf_counter()
    bar = tqdm(desc=f"exact scan ({device})", unit="q", disable=not progress, leave=False)
    for q in range(min(max_queries, collection.n_queries)):
        if q >= 2 and time.perf_counter() - started > budget_s:
            break
        t = time.perf_counter()
        lists.append(scan([q])[0])
        seconds.append(time.perf_counter() - t)
        bar.update(1)
    bar.close()
    queries = list(range(len(lists)))
    batch = list(range(min(batch_size, collection.n_queries)))
    t = time.perf_counter()
    batch_lists = scan(batch)
    batch_s = time.perf_counter() - t
    return {
        "device": device,
        "queries_timed": len(seconds),
        "single": latency_summary(seconds),
        "batch": {"batch_size": len(batch), "seconds": round(batch_s, 3), "ms_per_query": round(batch_s / len(batch) * 1e3, 3)},
        # The scan through the store against the chunked float32 scan of the collection: 1.0
        # up to float ties for an fp16 store (the same values), less for int8.
        "agreement_with_collection_exact_lists": recalls(collection, queries, lists),
        "batch_agreement_with_collection_exact_lists": recalls(collection, batch, batch_lists),
    }
