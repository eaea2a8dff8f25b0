"""One image's stored codes as text, for a search engine's ``binary`` field (pure, no I/O).

``pack`` writes an image's region codes (its first ``count`` rows, in the store's dtype) and,
for int8, their float32 scales, little-endian, as base64: ``count * (D * itemsize)`` code bytes,
then ``count * 4`` scale bytes. The dtype and ``D`` are not in the text: the index records
them once (``_meta``). ``unpack`` is its inverse, bit for bit.
"""

from __future__ import annotations

import base64

import numpy as np

from teran_es.store.codec import STORAGE_DTYPE, check_dtype, has_scales


def pack(codes: np.ndarray, scales: np.ndarray | None, count: int, dtype: str) -> str:
    """codes: [R, D] in ``dtype``'s storage type; scales: float32 [R] (int8 only); the first
    ``count`` regions are kept. Returns base64 text."""
    check_dtype(dtype)
    if has_scales(dtype) != (scales is not None):
        raise ValueError(f"{dtype} codes {'need' if has_scales(dtype) else 'take no'} scales")
    raw = np.ascontiguousarray(codes[:count], dtype=STORAGE_DTYPE[dtype].newbyteorder("<")).tobytes()
    if scales is not None:
        raw += np.ascontiguousarray(scales[:count], dtype="<f4").tobytes()
    return base64.b64encode(raw).decode("ascii")


def unpack(text: str, dim: int, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``pack``'s inverse: (codes [R, dim] in ``dtype``'s storage type, float32 scales [R] or None)."""
    check_dtype(dtype)
    raw = base64.b64decode(text)
    itemsize = STORAGE_DTYPE[dtype].itemsize
    per_region = dim * itemsize + (4 if has_scales(dtype) else 0)
    if dim < 1 or len(raw) % per_region:
        raise ValueError(f"{len(raw)} bytes are not whole {dtype} regions of dimension {dim}")
    count = len(raw) // per_region
    codes = np.frombuffer(raw, dtype=STORAGE_DTYPE[dtype].newbyteorder("<"), count=count * dim).reshape(count, dim)
    scales = None
    if has_scales(dtype):
        scales = np.frombuffer(raw, dtype="<f4", offset=count * dim * itemsize, count=count)
    return codes.astype(STORAGE_DTYPE[dtype], copy=False), scales
