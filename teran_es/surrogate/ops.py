"""Pure numpy building blocks of the scalar surrogate-text recipe (docs/first-stage.md)."""

from __future__ import annotations

import numpy as np

POOLING_MODES = ("max", "sum")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_vectors(x: object, dim: int | None, ndim: int | tuple[int, ...], name: str) -> np.ndarray:
    """Return ``x`` as float32 after checking its rank, last dimension and finiteness.

    x: array-like [..., dim] with ``x.ndim`` in ``ndim``. Raises ValueError naming the problem
    (wrong rank, wrong dimension, NaN, infinity, a value beyond float32 range).
    """
    arr = np.asarray(x)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{name}: expected a {want} array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if dim is not None and arr.shape[-1] != dim:
        raise ValueError(
            f"{name}: expected vectors of dimension {dim}, got {arr.shape[-1]} (shape {arr.shape})"
        )
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise ValueError(
                f"{name}: contains {n_nan} NaN and {n_inf} infinite values; inputs must be finite"
            )
        if arr.dtype.itemsize > 4 and arr.size and float(np.abs(arr).max()) > _FLOAT32_MAX:
            raise ValueError(f"{name}: values beyond the float32 range (|x| > {_FLOAT32_MAX:.3g})")
    return arr.astype(np.float32, copy=False)


def check_mask(mask: object, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Return a boolean mask of ``shape`` (all True when ``mask`` is None)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    arr = np.asarray(mask)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    return arr.astype(bool, copy=False)


def random_rotation(dim: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix float32 [dim, dim], seeded.

    QR of a Gaussian matrix; the columns are multiplied by sign(diag(R)) so that the result is
    uniformly distributed (plain QR is biased by the sign convention of the factorisation).
    """
    # (seed, 0) rather than seed: data generated with default_rng(seed) must not equal the matrix.
    rng = np.random.default_rng((seed, 0))
    gaussian = rng.standard_normal((dim, dim))
    q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return (q * signs).astype(np.float32)


def rotate(x: np.ndarray, rotation: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """(x - mean) @ rotation.T for x [N, D]; float32, or float64 if float32 overflowed.

    Float32 is the fast path; vectors near the float32 limit would overflow to inf in the
    product, so the whole batch is redone in float64 instead of producing inf/NaN terms.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        centred = x if mean is None else x - mean
        out = centred @ rotation.T
    if np.isfinite(out).all():
        return out
    x64 = x.astype(np.float64)
    centred64 = x64 if mean is None else x64 - mean.astype(np.float64)
    return centred64 @ rotation.astype(np.float64).T


def crelu(x: np.ndarray) -> np.ndarray:
    """[..., D] -> [..., 2D]: [max(x, 0), max(-x, 0)], both halves non-negative."""
    return np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=-1)


def top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """bool [..., C]: True at the ``k`` largest entries along the last axis (all True if k >= C).

    Among equal values the choice is argpartition's (deterministic for a given input).
    """
    n_components = values.shape[-1]
    if k >= n_components:
        return np.ones(values.shape, dtype=bool)
    if k <= 0:
        return np.zeros(values.shape, dtype=bool)
    top = np.argpartition(values, n_components - k, axis=-1)[..., n_components - k :]
    mask = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=-1)
    return mask


def keep_top_k(values: np.ndarray, k: int) -> np.ndarray:
    """``values`` with everything but the ``k`` largest entries of each last-axis row set to 0."""
    if k >= values.shape[-1]:
        return values
    return np.where(top_k_mask(values, k), values, 0)


def pool_regions(region_values: np.ndarray, region_mask: np.ndarray | None, mode: str) -> np.ndarray:
    """Pool the non-negative region vectors of each image into one vector.

    region_values: [B, R, C] non-negative (CReLU'd), or [R, C] for one image; region_mask:
    bool [B, R] or [R] (None = all valid); mode: "max" (element-wise max) or "sum". Returns
    [B, C] (or [C]); an image without valid regions pools to zeros, the neutral element of
    both modes on non-negative values.
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {mode!r}")
    if region_values.ndim == 2:
        one_mask = None if region_mask is None else region_mask[None]
        return pool_regions(region_values[None], one_mask, mode)[0]
    if region_values.ndim != 3:
        raise ValueError(f"region_values must be [B, R, C] or [R, C], got shape {region_values.shape}")
    if region_mask is not None:
        region_values = np.where(region_mask[..., None], region_values, 0)
    if mode == "max":
        if region_values.shape[1] == 0:
            return np.zeros((region_values.shape[0], region_values.shape[2]), region_values.dtype)
        return region_values.max(axis=1)
    return region_values.sum(axis=1)


def quantize_tf(values: np.ndarray, tf_per_unit: float, max_tf: int) -> np.ndarray:
    """int32 term frequencies: floor(values * tf_per_unit + 0.5), clipped to [0, max_tf].

    values: non-negative [..., C]. 0 means "term dropped". Rounding is monotone, so
    quantize(max(a, b)) == max(quantize(a), quantize(b)): max pooling commutes with it.
    """
    with np.errstate(over="ignore"):
        scaled = np.floor(values * tf_per_unit + 0.5)
    return np.minimum(scaled, max_tf).astype(np.int32)
