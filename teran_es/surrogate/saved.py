"""The file both first-stage encoders save to: their arrays and a JSON description of them
(format, settings, fingerprint) in one .npz, written atomically, and read back checked."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from teran_es.config import QuantizerConfig
from teran_es.surrogate.errors import EncoderFileError


def encoder_metadata(encoder_format: str, encoder: Any, **extra: Any) -> dict[str, Any]:
    """What a file says about the encoder it holds: its ``format``, ``dim``, settings, own and
    model fingerprints, the numpy that wrote it, and the ``extra`` items of its kind."""
    return {
        "format": encoder_format,
        "dim": encoder.dim,
        **extra,
        "config": dataclasses.asdict(encoder.config),
        "fingerprint": encoder.fingerprint,
        "model_fingerprint": encoder.model_fingerprint,
        "numpy": np.__version__,
    }


def write_encoder_file(
    path: str | os.PathLike[str], metadata: dict[str, Any], arrays: Mapping[str, np.ndarray]
) -> Path:
    """Write ``arrays`` and ``metadata`` (as JSON) to ``path``; a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, metadata=np.array(json.dumps(metadata, sort_keys=True)), **arrays)
    tmp.replace(target)
    return target


def read_encoder_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of a file :func:`write_encoder_file` wrote; EncoderFileError otherwise."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        metadata = json.loads(str(arrays.pop("metadata")))
    except (KeyError, OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise EncoderFileError(f"{path}: not a first-stage encoder file ({exc})") from exc
    return arrays, metadata


def config_from_dict(data: dict[str, Any], where: str) -> QuantizerConfig:
    """A QuantizerConfig from a saved file's settings; unknown settings are refused."""
    known = {f.name for f in dataclasses.fields(QuantizerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EncoderFileError(f"{where}: unknown quantizer settings {unknown} (written by a newer version?)")
    return QuantizerConfig(**data)


def check_fingerprint(rebuilt: str, metadata: dict[str, Any], where: str) -> None:
    """Refuse a file whose rebuilt encoder does not have the fingerprint the file recorded."""
    if rebuilt != metadata.get("fingerprint"):
        raise EncoderFileError(f"{where}: fingerprint mismatch; the file was altered or is corrupt")
