"""The feature store's dtype codec: float32 vectors <-> stored codes. Pure functions, no I/O.

Vectors are the rows of a ``[N, D]`` float32 array. Three codecs, and the error each makes
per component (``x`` the original value, ``x_hat`` what ``decode`` gives back):

``fp32``
    Exact.
``fp16``
    IEEE half precision, round to nearest even:
    ``|x - x_hat| <= max(2**-11 * |x|, 2**-25)`` (relative 2**-11 in the normal range
    ``|x| >= 2**-14``, half a subnormal step below it). ``|x| > 65504`` does not fit and is
    refused by the store (``max_encodable``).
``int8``
    Symmetric, one float32 scale per vector: ``s = max|x| / 127``, ``q = round(x / s)`` in
    ``[-127, 127]``, ``x_hat = q * s``. ``|x - x_hat| <= s / 2 = max|x| / 254``, plus float32
    rounding, which ``INT8_SLACK`` covers (the bound used everywhere is
    ``s * (0.5 + INT8_SLACK) + INT8_FLOOR``). For an L2-normalised vector ``max|x| <= 1``:
    every component is within 1/254 ~= 0.0039 of the original, ``||x - x_hat||_2 <= sqrt(D) * s / 2``,
    and so a dot product with any unit vector moves by at most ``sqrt(D) * s / 2``
    (for D = 1024 and a typical max|x| ~= 0.12, about 0.015 in the worst case).

Bytes per region vector: fp32 ``4 D``, fp16 ``2 D``, int8 ``D + 4``.
"""

from __future__ import annotations

import numpy as np
import torch

from teran_es.errors import ConfigError

DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8")

STORAGE_DTYPE: dict[str, np.dtype] = {
    "fp32": np.dtype(np.float32),
    "fp16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
}
TORCH_DTYPE: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.int8}

# float32 rounding of the scale, the division and the final product adds at most about
# 3 * 127 * 2**-24 * s ~= 2.3e-5 * s to the s / 2 rounding error; 1e-4 leaves room.
INT8_SLACK = 1e-4
# When max|x| is so small that s is a float32 subnormal, relative precision is gone; the
# absolute error is then below max|x| < 127 * 2**-126 ~= 1.5e-36.
INT8_FLOOR = 1e-35
INT8_LEVELS = 127

FP16_MAX = 65504.0


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it is a known codec, else raise a ConfigError listing the known ones."""
    if dtype not in STORAGE_DTYPE:
        raise ConfigError(f"unknown feature store dtype {dtype!r} (known: {', '.join(DTYPES)})")
    return dtype


def has_scales(dtype: str) -> bool:
    """Whether the codec stores one scale per vector next to the codes."""
    return check_dtype(dtype) == "int8"


def max_encodable(dtype: str) -> float:
    """Largest magnitude the codec can represent (finite values above it would overflow)."""
    return FP16_MAX if check_dtype(dtype) == "fp16" else float(np.finfo(np.float32).max)


def bytes_per_vector(dtype: str, dim: int) -> int:
    """Stored bytes for one vector of ``dim`` components, scale included."""
    return STORAGE_DTYPE[check_dtype(dtype)].itemsize * dim + (4 if has_scales(dtype) else 0)


def encode(vectors: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode ``[N, D]`` float32 vectors; returns ``(codes [N, D], scales [N] or None)``.

    Inputs must be finite and within ``max_encodable(dtype)``; the store checks that first so
    that it can name the offending id.
    """
    check_dtype(dtype)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a [N, D] array of vectors, got shape {vectors.shape}")
    if dtype == "fp32":
        return np.ascontiguousarray(vectors), None
    if dtype == "fp16":
        # torch's cast (F16C) rounds exactly like numpy's (to nearest even) and is several times faster.
        writable = vectors if vectors.flags.writeable else vectors.copy()
        return torch.from_numpy(writable).to(torch.float16).numpy(), None
    max_abs = np.abs(vectors).max(axis=1) if vectors.shape[1] else np.zeros(len(vectors), np.float32)
    scales = (max_abs / np.float32(INT8_LEVELS)).astype(np.float32)
    # A zero vector has scale 0; divide it by 1 instead so it encodes to zeros.
    divisor = np.where(scales > 0, scales, np.float32(1))[:, None]
    quotients = np.rint(vectors / divisor)
    np.clip(quotients, -INT8_LEVELS, INT8_LEVELS, out=quotients)
    return quotients.astype(np.int8), scales


def decode(codes: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """Decode ``[N, D]`` codes (and ``[N]`` scales for int8) back to float32 vectors."""
    if scales is None:
        return np.asarray(codes).astype(np.float32)
    return np.asarray(codes).astype(np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


def decode_into(out: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor | None) -> None:
    """Decode ``codes [..., D]`` into the float32 tensor ``out`` in one pass (torch's fast casts).

    Gives the same numbers as ``decode``: the int8 -> float32 cast is exact and the product is
    one float32 rounding either way.
    """
    out.copy_(codes)
    if scales is not None:
        # Cast, then scale in place: faster than a mixed int8 x float32 multiply on the CPU.
        out.mul_(scales.unsqueeze(-1))


def error_bound(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """Largest possible ``|x - decode(encode(x))|`` for each component of ``[N, D]`` vectors."""
    check_dtype(dtype)
    vectors = np.asarray(vectors, dtype=np.float64)
    if dtype == "fp32":
        return np.zeros_like(vectors)
    if dtype == "fp16":
        return np.maximum(np.abs(vectors) * 2.0**-11, 2.0**-25)
    max_abs = np.abs(vectors).max(axis=1, keepdims=True) if vectors.shape[1] else np.zeros((len(vectors), 1))
    per_vector = max_abs / INT8_LEVELS * (0.5 + INT8_SLACK) + INT8_FLOOR
    return np.broadcast_to(per_vector, vectors.shape).copy()
