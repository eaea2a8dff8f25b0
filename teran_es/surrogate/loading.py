"""Fit, save and load either first-stage encoder by the kind its config or file names."""

from __future__ import annotations

import os

import numpy as np

from teran_es.config import QuantizerConfig
from teran_es.errors import ConfigError
from teran_es.surrogate import cell_encoder, encoder
from teran_es.surrogate.cell_encoder import CellTokenEncoder
from teran_es.surrogate.encoder import SurrogateTextEncoder
from teran_es.surrogate.errors import EncoderFileError
from teran_es.surrogate.saved import read_encoder_file

KINDS = ("cells", "scalar")
FirstStageEncoder = CellTokenEncoder | SurrogateTextEncoder
_BY_FORMAT = {encoder.FORMAT: SurrogateTextEncoder, cell_encoder.FORMAT: CellTokenEncoder}


def check_kind(config: QuantizerConfig) -> None:
    if config.kind not in KINDS:
        raise ConfigError(f"quantizer.kind must be one of {KINDS}, got {config.kind!r}")


def fit_encoder(
    sample: np.ndarray, config: QuantizerConfig, *, mask: np.ndarray | None = None, model_fingerprint: str = ""
) -> FirstStageEncoder:
    """Fit the encoder ``config.kind`` names on region vectors ([N, D], or [N_img, R, D] + mask)."""
    check_kind(config)
    kind = CellTokenEncoder if config.kind == "cells" else SurrogateTextEncoder
    return kind.fit(sample, config, mask=mask, model_fingerprint=model_fingerprint)


def load_encoder(path: str | os.PathLike[str]) -> FirstStageEncoder:
    """Read a file either encoder's ``save`` wrote; raises EncoderFileError if it is not one or was altered."""
    arrays, metadata = read_encoder_file(path)
    kind = _BY_FORMAT.get(metadata.get("format"))
    if kind is None:
        raise EncoderFileError(
            f"{path}: unsupported format {metadata.get('format')!r} (known: {', '.join(_BY_FORMAT)})"
        )
    return kind.from_arrays(arrays, metadata, str(path))
