"""Open what a user hands to ``teran-es ingest``: a Parquet feature file or folder, a
folder in the authors' bottom-up layout, a built image collection (such as OpenMoji), or a
plain folder of images. I/O only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from teran_es.errors import TeranError
from teran_es.features.authors_layout import is_authors_layout, open_bottom_up
from teran_es.features.columnar import ColumnarReader
from teran_es.features.image_table import is_image_collection, iter_collection_images
from teran_es.features.pixels import ImageFile, iter_folder_images
from teran_es.features.records import ImageRecord, RecordError


class UnsupportedSourceError(TeranError, ValueError):
    """A source that is neither features teran-es can read nor images it can turn into regions."""


def describe_source(path: str | os.PathLike[str]) -> str:
    """'parquet', 'bottom-up', 'collection' (a built image collection) or 'images' (a plain folder of image files)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix == ".parquet":
            return "parquet"
        raise UnsupportedSourceError(f"{p}: expected a .parquet feature file or a folder")
    if (p / "bu_att").is_dir() or is_authors_layout(p):
        return "bottom-up"
    if is_image_collection(p):  # before the Parquet test: the collection has a table with no features
        return "collection"
    if any(p.glob("*.parquet")):
        return "parquet"
    return "images"


def iter_feature_records(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    feature_dim: int | None = None,
    max_regions: int | None = None,
    on_error: str | Callable[[RecordError], None] = "skip",
) -> Iterator[ImageRecord]:
    """Records of a feature source; bad rows are logged and skipped (``on_error`` may be a
    callable that also receives each :class:`RecordError`)."""
    kind = describe_source(path)
    if kind == "parquet":
        reader = ColumnarReader(path, on_error=on_error, feature_dim=feature_dim, max_regions=max_regions)
        yield from reader.iter_records(split)
    elif kind == "bottom-up":
        reader = open_bottom_up(path, on_error=on_error, feature_dim=feature_dim, max_regions=max_regions)
        yield from reader.iter_records(split or "all")
    else:
        raise UnsupportedSourceError(
            f"{path} is a folder of images: ingesting raw images needs a model with an image front end "
            "(see `teran-es openmoji`), or precomputed region features (Parquet or bottom-up layout)"
        )


def iter_source_records(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    feature_dim: int | None = None,
    max_regions: int | None = None,
    on_error: str | Callable[[RecordError], None] = "skip",
) -> Iterator[ImageRecord | ImageFile]:
    """Everything ``teran-es ingest`` takes: feature records, or image files to decode at
    ingest (a folder of images, ids = paths relative to it; or a built collection such as
    OpenMoji, with captions). Files that do not decode are found, logged and skipped by the ingest."""
    kind = describe_source(path)
    if kind == "images":
        if split is not None:
            raise UnsupportedSourceError(f"{path} is a plain folder of images: it has no splits")
        yield from iter_folder_images(path)
    elif kind == "collection":
        yield from iter_collection_images(path, split)
    else:
        yield from iter_feature_records(
            path, split=split, feature_dim=feature_dim, max_regions=max_regions, on_error=on_error
        )
