"""Fitting the scalar first stage (encoder.py) on a sample: the centre mu, a random rotation R,
and doc_scale, calibrated on the sample's documents encoded exactly as documents will be."""

from __future__ import annotations

import numpy as np

from teran_es.config import QuantizerConfig
from teran_es.surrogate import ops
from teran_es.surrogate.encoder import SurrogateTextEncoder, check_config
from teran_es.surrogate.errors import FitError


def fit_surrogate_text_encoder(
    sample: np.ndarray,
    config: QuantizerConfig,
    *,
    mask: np.ndarray | None = None,
    model_fingerprint: str = "",
) -> SurrogateTextEncoder:
    """Fit mu, R and doc_scale on a sample.

    sample: float [N, D] (vectors; each is one document for the scale calibration) or
    [N_img, R, D] with optional bool ``mask`` [N_img, R] (images; the scale is calibrated on
    documents pooled as ``config.pooling`` says). At most ``config.sample_size`` vectors are
    used (a seeded subsample of rows or images). pooling="sum" needs images, because summed
    documents have values about R times larger than single vectors.
    """
    arr = ops.check_vectors(sample, None, (2, 3), "sample")
    dim = arr.shape[-1]
    check_config(config, dim)
    subsample_rng = np.random.default_rng((config.seed, 1))
    if arr.ndim == 2:
        if config.pooling == "sum":
            raise FitError("sample: pooling='sum' needs an image sample [N_img, R, D] to calibrate doc_scale")
        rows = _subsample(arr.shape[0], config.sample_size, subsample_rng)
        images, image_mask = arr[rows][:, None, :], None
    else:
        per_image = max(1, arr.shape[1])
        rows = _subsample(arr.shape[0], max(1, config.sample_size // per_image), subsample_rng)
        images, image_mask = arr[rows], ops.check_mask(mask, arr.shape[:2], "mask")[rows]
    vectors = images.reshape(-1, dim) if image_mask is None else images[image_mask]
    if vectors.shape[0] < 2:
        raise FitError(f"sample: need at least 2 valid vectors to fit, got {vectors.shape[0]}")
    mean = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
    rotation = ops.random_rotation(dim, config.seed)
    # an encoder with a provisional scale encodes the sample as documents; the scale is read off them
    probe = SurrogateTextEncoder(config, mean, rotation, doc_scale=1.0)
    kept = probe.kept_document_values(images, image_mask, single_vectors=arr.ndim == 2)
    if kept.size == 0:
        raise FitError(
            "sample: every kept document value is 0 (constant sample?); cannot calibrate doc_scale"
        )
    doc_scale = float(np.quantile(kept, config.scale_quantile))
    if not np.isfinite(doc_scale):
        raise FitError("sample: values too large to calibrate doc_scale")
    return SurrogateTextEncoder(config, mean, rotation, doc_scale, model_fingerprint)


def _subsample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` rows (all rows when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))
