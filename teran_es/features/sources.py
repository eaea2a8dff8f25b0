"""Open what a user hands to ``teran-es ingest``: a Parquet feature file or folder, or a
folder in the authors' bottom-up layout. I/O only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from teran_es.features.bottom_up import BottomUpReader
from teran_es.features.columnar import ColumnarReader
from teran_es.features.records import ImageRecord


class UnsupportedSourceError(ValueError):
    """A source that is neither features teran-es can read nor images it can turn into regions."""


def describe_source(path: str | os.PathLike[str]) -> str:
    """'parquet', 'bottom-up' or 'images' (a plain folder of image files)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".parquet":
            return "parquet"
        raise UnsupportedSourceError(f"{p}: expected a .parquet feature file or a folder")
    if (p / "bu_att").is_dir():
        return "bottom-up"
    if any(p.glob("*.parquet")):
        return "parquet"
    return "images"


def iter_feature_records(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    feature_dim: int | None = None,
    max_regions: int | None = None,
) -> Iterator[ImageRecord]:
    """Records of a feature source; bad rows are logged and skipped by the readers."""
    kind = describe_source(path)
    if kind == "parquet":
        reader = ColumnarReader(path, on_error="skip", feature_dim=feature_dim, max_regions=max_regions)
        yield from reader.iter_records(split)
    elif kind == "bottom-up":
        reader = BottomUpReader(path, on_error="skip", feature_dim=feature_dim, max_regions=max_regions)
        yield from reader.iter_records(split or "all")
    else:
        raise UnsupportedSourceError(
            f"{path} is a folder of images: ingesting raw images needs a model with an image front end "
            "(see `teran-es openmoji`), or precomputed region features (Parquet or bottom-up layout)"
        )
