"""Helpers shared by the peer engines: cache keys, chunked reads, top-k, sizes on disk.

Kept free of any third-party import beyond numpy so that both peers (and the tests) can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def resolve_threads(threads: int | None) -> int:
    """``None`` or ``0`` means every core of the machine."""
    if threads is None or int(threads) <= 0:
        return os.cpu_count() or 1
    return int(threads)


def check_regions(regions: np.ndarray) -> tuple[int, int, int]:
    """Validate a ``[N, R, D]`` float16/float32 region array (np.memmap allowed); return N, R, D."""
    if regions.ndim != 3:
        raise ValueError(f"regions must be [N, R, D], got shape {tuple(regions.shape)}")
    if regions.dtype not in (np.float16, np.float32):
        raise ValueError(f"regions must be float16 or float32, got {regions.dtype}")
    n, r, d = (int(x) for x in regions.shape)
    if n == 0 or r == 0 or d == 0:
        raise ValueError(f"regions is empty: shape {tuple(regions.shape)}")
    return n, r, d


def data_fingerprint(regions: np.ndarray, samples: int = 8) -> str:
    """A cheap fingerprint of a (possibly memory-mapped) region array: shape, dtype and the bytes
    of a few evenly spaced images. Guards a cached index against a different collection of the
    same size; it reads ``samples`` images only, never the whole array."""
    n = regions.shape[0]
    h = hashlib.sha1()
    h.update(repr((tuple(regions.shape), str(regions.dtype))).encode())
    for i in sorted({int(x) for x in np.linspace(0, n - 1, num=min(samples, n))}):
        h.update(np.ascontiguousarray(regions[i]).tobytes())
    return h.hexdigest()[:16]


def cache_key(**parts: Any) -> str:
    """Short stable hash of JSON-serialisable ``parts`` (settings, sizes, fingerprint)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def iter_chunks(regions: np.ndarray, chunk_images: int, dtype=np.float32) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_image, chunk)`` with ``chunk`` a ``[c, R, D]`` copy in ``dtype``: at most
    ``chunk_images`` images are ever converted at once, so a memmap is streamed, not loaded."""
    n = regions.shape[0]
    step = max(1, int(chunk_images))
    for start in range(0, n, step):
        yield start, np.asarray(regions[start : start + step], dtype=dtype)


def sample_vectors(regions: np.ndarray, size: int, seed: int, dtype=np.float32) -> np.ndarray:
    """``size`` region vectors drawn without replacement (seeded) from all ``N*R``, read from the
    array in sorted order (memmap friendly). Returns ``[size, D]``."""
    n, r, d = regions.shape
    total = n * r
    size = int(min(size, total))
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(total, size=size, replace=False))
    out = np.empty((size, d), dtype=dtype)
    step = 65536
    for s in range(0, size, step):
        part = ids[s : s + step]
        out[s : s + len(part)] = regions[part // r, part % r]
    return out


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> list[int]:
    """The ``k`` ids with the highest scores, best first; ties broken by the smaller id."""
    if len(ids) == 0 or k <= 0:
        return []
    if len(ids) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # keep every id tied with the k-th score so the tie-break below is deterministic
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))[:k]
    return [int(x) for x in ids[order]]


def path_bytes(path: Path) -> dict[str, int]:
    """``{"bytes": apparent size, "bytes_allocated": blocks on disk}`` of a file or directory
    tree (what ``du --apparent-size -b`` and ``du -B1`` print)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    apparent = allocated = 0
    for p in files:
        st = p.stat()
        apparent += st.st_size
        allocated += getattr(st, "st_blocks", 0) * 512
    return {"bytes": apparent, "bytes_allocated": allocated}


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
