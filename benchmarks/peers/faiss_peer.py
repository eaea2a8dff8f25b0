"""Faiss peer: one approximate nearest-neighbour index over all ``N*R`` region vectors, queried
word by word, aggregated into an approximate MrSw score per image.

Index (``build``)
-----------------
* Metric: inner product (region and word vectors are L2-normalised, so it is the cosine).
* Default factory string ``"IVF{nlist},PQ{m}x{nbits}np"``, ``m = 32`` sub-quantizers of
  ``nbits = 8`` bits (32 bytes per region vector + its 8-byte id), ``nlist`` = the power of two
  nearest to ``4 * sqrt(N*R)``. This follows the faiss wiki page "Guidelines to choose an index"
  (https://github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index), section "How big
  is the dataset?": below 1M vectors use ``IVFK`` with ``K`` between ``4*sqrt(N)`` and
  ``16*sqrt(N)`` (we take the low end: fewer, larger lists are cheaper to train on 2 cores), trained
  on 30*K to 256*K vectors; and section "Is memory a concern?": when it is, encode with ``PQ{m}``
  (``m`` bytes per vector). From ``nlist >= 8192`` (i.e. from ~2.1M region vectors, ~131k images
  at R=16) the coarse quantizer becomes ``HNSW32`` (``"IVF{nlist}_HNSW32,PQ{m}x{nbits}np"``), as the same
  page recommends for 1M-10M vectors and beyond: assigning every vector to its list with a flat
  quantizer costs ``N*R*nlist*D`` multiply-adds, hours at 16M vectors on a few cores. The wiki's
  larger ``nlist`` for 10M+ vectors (``IVF262144``) would need millions of training vectors;
  we keep ``4*sqrt(N*R)`` and say so in the results. The ``np`` suffix turns off faiss's
  polysemous training, which the factory otherwise runs for 8-bit PQ: it only serves Hamming
  pre-filtering (not used here) and costs ~85 s even on a 20k-vector sample on this machine,
  against ~4 s for the IVF and PQ training proper.
* Training sample: ``min(N*R, max_train, max(64*nlist, 65536))`` vectors drawn without
  replacement with a fixed seed (``max_train = 200_000``). 64 per list is inside the wiki's
  30..256 range up to nlist = 3125; above that the cap wins (faiss then warns that it wants 39
  points per centroid; the lists are still usable). The 65536 floor is what the 8-bit PQ codebooks
  use (faiss subsamples them to 256 points per centroid).
  At 1M images (16M vectors, nlist 16384) that is 200k, 12 per list: raise ``max_train`` for
  better lists at a proportional training cost. ``nlist`` is halved until the collection has at
  least 39 vectors per list (tiny collections only).
* Vectors are added in chunks of ``chunk_images`` images (float16 memmaps are converted one chunk
  at a time, never whole) with a progress bar.
* ``factory="Flat"`` (exact ``IndexFlatIP``) is allowed up to ``FLAT_MAX_VECTORS`` = 200k region
  vectors; any other faiss factory string may be passed, with ``{nlist}``, ``{m}``, ``{nbits}``
  filled in.
* The index is written to ``workdir/faiss-n{N}-{key}.index`` (``key`` hashes the resolved settings,
  the shape and a fingerprint of a few images); a rerun with the same settings and data loads it
  and reports ``loaded_from_cache: true``.

Search
------
Every query word retrieves its ``k_regions`` nearest region vectors (``nprobe`` lists probed; for
the HNSW coarse quantizer ``quantizer_efSearch`` defaults to ``max(64, 2*nprobe)``). Region id
``i`` belongs to image ``i // R``. An image's approximate score is the sum over words of the best
similarity found for that word among its regions. A word that found none of the image's regions
contributes its ``k_regions``-th similarity (``missing="kth"``, the default): with an exact index
that is an upper bound of the true best similarity, so the score is an optimistic estimate and an
image is not dropped merely because one word's list was cut short (the imputation XTR uses).
``missing="zero"`` contributes 0 instead; that is no bound at all when cosines are negative, as
most of the trained model's word-region cosines are (it then favours images that match few
words). The top ``k`` images by that score are returned; the benchmark reranks them with the
exact MrSw score itself.

Default search settings ``nprobe=128``, ``k_regions=256``, ``missing="kth"``: the knee of a sweep
on the 10k-image scale collection (benchmarks/scale_collection.py: real OpenMoji-model regions,
recombined and perturbed; 100 real captions), 100 candidates, exact MrSw rerank, 1 thread
(``python benchmarks/peers/measure_peers.py --collection DIR``, results in
``benchmarks/peers/measured_scale10k.json``). recall@10 after the rerank / p50 latency:
nprobe 8: 0.74 / 1.1 ms; 32: 0.85 / 1.5 ms; 64: 0.89 / 2.1 ms; 128: 0.92 / 3.8 ms;
256 (k_regions 1024): 0.93 / 8.6 ms. ``k_regions`` 64 -> 1024 changes little there (0.83 -> 0.84 at
nprobe 32); ``missing="zero"`` loses 0.02. The real model's word-region cosines are mostly
negative (the regions share a large common component) and span a narrow range, so both the coarse
IVF choice and the PQ codes lose neighbours: on a 2k prefix, IVF-Flat at nprobe 32 reaches 0.92
and exhaustive PQ32 0.90. On isotropic clustered data (``measure_peers.py`` without
``--collection``) every setting with ``k_regions >= 256`` is above 0.99.

Threads: ``threads`` (constructor or any call) sets ``faiss.omp_set_num_threads``; default all
cores.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _util

FLAT_MAX_VECTORS = 200_000
HNSW_QUANTIZER_FROM_NLIST = 8192

BUILD_DEFAULTS: dict[str, Any] = {
    "factory": "auto",  # "auto" | "Flat" | a faiss factory string ({nlist}, {m}, {nbits} filled in)
    "nlist": None,  # None: power of two nearest 4*sqrt(N*R)
    "m": 32,
    "nbits": 8,
    "train_size": None,  # None: min(N*R, max_train, max(64*nlist, 65536))
    "max_train": 200_000,
    "seed": 0,
    "chunk_images": 8192,
    "progress": True,
}
SEARCH_DEFAULTS: dict[str, Any] = {
    "nprobe": 128,
    "k_regions": 256,
    "missing": "kth",  # "kth" | "zero"
    "quantizer_efSearch": None,  # None: max(64, 2*nprobe) (HNSW coarse quantizer only)
}


def default_nlist(n_vectors: int) -> int:
    """Power of two nearest to ``4*sqrt(n_vectors)`` (faiss wiki: 4..16 sqrt(N) lists)."""
    target = 4.0 * math.sqrt(max(1, n_vectors))
    return int(2 ** round(math.log2(target)))


def _split_settings(
    settings: dict[str, Any], defaults: dict[str, Any], what: str
) -> tuple[dict[str, Any], int | None]:
    settings = dict(settings)
    threads = settings.pop("threads", None)
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise TypeError(f"unknown faiss {what} settings {unknown}; known: {sorted(defaults)} and 'threads'")
    return {**defaults, **settings}, threads


class FaissPeer:
    """Faiss IVF-PQ (or Flat) over all region vectors; see the module docstring."""

    name = "faiss"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.index = None
        self.n_images = self.regions_per_image = self.dim = 0
        self.build_stats: dict[str, Any] | None = None
        self.last_search: dict[str, Any] = {}

    # ------------------------------------------------------------------ build
    def _resolve_build(self, n: int, r: int, d: int, s: dict[str, Any]) -> dict[str, Any]:
        total = n * r
        factory = str(s["factory"])
        if factory.lower() == "flat":
            if total > FLAT_MAX_VECTORS:
                raise ValueError(
                    f"factory='Flat' is only offered up to {FLAT_MAX_VECTORS} region vectors "
                    f"(this collection has {total}); use the IVF-PQ default"
                )
            return {"factory": "Flat", "seed": s["seed"], "chunk_images": s["chunk_images"]}
        nlist = int(s["nlist"]) if s["nlist"] else default_nlist(total)
        if not s["nlist"]:
            while nlist > 1 and 39 * nlist > total:  # tiny collections only
                nlist //= 2
        if s["train_size"]:
            train = int(min(total, s["train_size"]))
        else:
            train = int(min(total, s["max_train"], max(64 * nlist, 65536)))
        m, nbits = int(s["m"]), int(s["nbits"])
        if d % m:
            raise ValueError(f"m={m} sub-quantizers must divide the dimension {d}")
        if factory == "auto":
            coarse = "_HNSW32" if nlist >= HNSW_QUANTIZER_FROM_NLIST else ""
            factory = f"IVF{{nlist}}{coarse},PQ{{m}}x{{nbits}}np"
        factory = factory.format(nlist=nlist, m=m, nbits=nbits)
        return {
            "factory": factory,
            "nlist": nlist,
            "m": m,
            "nbits": nbits,
            "train_size": train,
            "seed": int(s["seed"]),
            "chunk_images": int(s["chunk_images"]),
        }

    def build(self, regions: np.ndarray, workdir: Path, **settings: Any) -> dict[str, Any]:
        """Build (or load from ``workdir``) the index over ``regions`` ``[N, R, D]``; return stats:
        ``seconds`` (train + add + write; for a cached index the original build's), ``bytes``
        (index file size), ``settings``, ``version``, ``loaded_from_cache`` and details."""
        import faiss

        s, threads = _split_settings(settings, BUILD_DEFAULTS, "build")
        if threads is not None:
            self.threads = threads
        nthreads = _util.resolve_threads(self.threads)
        faiss.omp_set_num_threads(nthreads)
        n, r, d = _util.check_regions(regions)
        resolved = self._resolve_build(n, r, d, s)
        fingerprint = _util.data_fingerprint(regions)
        key_settings = {k: v for k, v in resolved.items() if k != "chunk_images"}
        key = _util.cache_key(n=n, r=r, d=d, settings=key_settings, fingerprint=fingerprint)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"faiss-n{n}-{key}.index"
        meta_path = path.with_name(path.name + ".json")
        self.n_images, self.regions_per_image, self.dim = n, r, d

        meta = _util.read_json(meta_path)
        if meta is not None and path.exists():
            t0 = time.perf_counter()
            self.index = faiss.read_index(str(path))
            load_seconds = time.perf_counter() - t0
            if self.index.ntotal == n * r and self.index.d == d:
                stats = {**meta, "loaded_from_cache": True, "load_seconds": load_seconds, "threads": nthreads}
                stats.update(_util.path_bytes(path))
                self.build_stats = stats
                return stats
            self.index = None  # stale: rebuild

        t_start = time.perf_counter()
        train_seconds = 0.0
        if resolved["factory"] == "Flat":
            index = faiss.IndexFlatIP(d)
        else:
            index = faiss.index_factory(d, resolved["factory"], faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.cp.seed = resolved["seed"]
            t0 = time.perf_counter()
            sample = _util.sample_vectors(regions, resolved["train_size"], resolved["seed"])
            index.train(sample)
            del sample
            train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        progress = None
        if s["progress"]:
            from tqdm import tqdm

            progress = tqdm(total=n, unit="img", desc=f"faiss add {resolved['factory']}", file=sys.stderr)
        for _, chunk in _util.iter_chunks(regions, resolved["chunk_images"]):
            index.add(chunk.reshape(-1, d))
            if progress is not None:
                progress.update(len(chunk))
        if progress is not None:
            progress.close()
        add_seconds = time.perf_counter() - t0
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(index, str(tmp))
        tmp.replace(path)
        seconds = time.perf_counter() - t_start

        self.index = index
        stats = {
            "peer": self.name,
            "seconds": seconds,
            "train_seconds": train_seconds,
            "add_seconds": add_seconds,
            "settings": resolved,
            "version": faiss.__version__,
            "library": "faiss-cpu",
            "n_images": n,
            "regions_per_image": r,
            "dim": d,
            "n_vectors": n * r,
            "regions_dtype": str(regions.dtype),
            "index_path": str(path),
            "fingerprint": fingerprint,
        }
        _util.write_json_atomic(meta_path, stats)
        stats = {**stats, **_util.path_bytes(path), "loaded_from_cache": False, "threads": nthreads}
        self.build_stats = stats
        return stats

    # ------------------------------------------------------------------ search
    def _prepare_search(self, settings: dict[str, Any]) -> dict[str, Any]:
        import faiss

        if self.index is None:
            raise RuntimeError("FaissPeer.search called before build()")
        s, threads = _split_settings(settings, SEARCH_DEFAULTS, "search")
        if s["missing"] not in ("kth", "zero"):
            raise ValueError(f"missing must be 'kth' or 'zero', got {s['missing']!r}")
        nthreads = _util.resolve_threads(threads if threads is not None else self.threads)
        faiss.omp_set_num_threads(nthreads)
        s["k_regions"] = int(min(int(s["k_regions"]), self.index.ntotal))
        ivf = faiss.try_extract_index_ivf(self.index)
        applied: dict[str, Any] = {"k_regions": s["k_regions"], "missing": s["missing"], "threads": nthreads}
        if ivf is not None:
            nprobe = int(min(int(s["nprobe"]), ivf.nlist))
            ps = faiss.ParameterSpace()
            ps.set_index_parameter(self.index, "nprobe", nprobe)
            applied["nprobe"] = nprobe
            quantizer = faiss.downcast_index(ivf.quantizer)
            if isinstance(quantizer, faiss.IndexHNSW):
                ef = int(s["quantizer_efSearch"] or max(64, 2 * nprobe))
                quantizer.hnsw.efSearch = ef
                applied["quantizer_efSearch"] = ef
        self.last_search = applied
        return applied

    def _aggregate(self, sims: np.ndarray, ids: np.ndarray, k: int, missing: str) -> list[int]:
        """Approximate MrSw from per-word hits (``sims``/``ids``: ``[W, k_regions]``, sorted)."""
        valid = ids >= 0
        n_words = ids.shape[0]
        if not valid.any():
            return []
        if missing == "kth":
            counts = valid.sum(axis=1)
            last = sims[np.arange(n_words), np.maximum(counts - 1, 0)]
            fill = np.where(counts > 0, last, 0.0).astype(np.float32)
        else:
            fill = np.zeros(n_words, dtype=np.float32)
        word_of = np.broadcast_to(np.arange(n_words)[:, None], ids.shape)[valid]
        images = ids[valid] // self.regions_per_image
        cand, col = np.unique(images, return_inverse=True)
        best = np.full((n_words, len(cand)), -np.inf, dtype=np.float32)
        np.maximum.at(best, (word_of, col), sims[valid].astype(np.float32))
        best = np.where(np.isneginf(best), fill[:, None], best)
        return _util.top_k(cand, best.sum(axis=0), k)

    @staticmethod
    def _as_queries(query_words: list[np.ndarray], dim: int) -> list[np.ndarray]:
        out = []
        for q in query_words:
            q = np.ascontiguousarray(q, dtype=np.float32)
            if q.ndim != 2 or q.shape[1] != dim or q.shape[0] == 0:
                raise ValueError(f"each query must be a non-empty [W, {dim}] array, got {q.shape}")
            out.append(q)
        return out

    def search(
        self, query_words: list[np.ndarray], k: int, **settings: Any
    ) -> tuple[list[list[int]], list[float]]:
        """Single-query mode: per query up to ``k`` image ids (best first) and its wall time."""
        s = self._prepare_search(settings)
        queries = self._as_queries(query_words, self.dim)
        results, latencies = [], []
        for q in queries:
            t0 = time.perf_counter()
            sims, ids = self.index.search(q, s["k_regions"])
            results.append(self._aggregate(sims, ids, k, s["missing"]))
            latencies.append(time.perf_counter() - t0)
        return results, latencies

    def search_batched(
        self, query_words: list[np.ndarray], k: int, **settings: Any
    ) -> tuple[list[list[int]], float]:
        """All words of all queries in one faiss call (faiss batches natively); total seconds."""
        s = self._prepare_search(settings)
        queries = self._as_queries(query_words, self.dim)
        if not queries:
            return [], 0.0
        t0 = time.perf_counter()
        sims, ids = self.index.search(np.concatenate(queries), s["k_regions"])
        results, start = [], 0
        for q in queries:
            stop = start + len(q)
            results.append(self._aggregate(sims[start:stop], ids[start:stop], k, s["missing"]))
            start = stop
        return results, time.perf_counter() - t0
