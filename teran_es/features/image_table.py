"""A built image collection on disk: image files listed in a Parquet table, with a manifest.

Layout of such a directory (``teran-es openmoji build`` writes one)::

    collection.parquet   one row per image: image_id, split, path (relative to the
                         directory), captions; a collection may add columns of its own
    manifest.json        what the builder recorded (counts, sources, ...)

This reader knows the layout only, not which collection wrote it. I/O only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from teran_es.errors import ConfigError
from teran_es.features.pixels import ImageFile

TABLE_NAME = "collection.parquet"
MANIFEST_NAME = "manifest.json"
# The columns every collection table has; the reader asks for these only.
COLUMNS = ("image_id", "split", "path", "captions")


def is_image_collection(path: str | os.PathLike[str]) -> bool:
    """True for the directory of a built image collection (its table and its manifest are there)."""
    p = Path(path)
    return (p / TABLE_NAME).is_file() and (p / MANIFEST_NAME).is_file()


def iter_collection_images(
    collection_dir: str | os.PathLike[str], split: str | None = None
) -> Iterator[ImageFile]:
    """The images of a built collection (of one split, or all) with their captions, in table order.

    FileNotFoundError when ``collection_dir`` holds no collection table.
    """
    directory = Path(collection_dir)
    table_path = directory / TABLE_NAME
    if not table_path.is_file():
        raise FileNotFoundError(
            f"no image collection at {directory}: {TABLE_NAME} is missing (build one, e.g. `teran-es openmoji build`)"
        )
    root = directory.resolve()
    for row in pq.read_table(table_path, columns=list(COLUMNS)).to_pylist():
        if split is None or row["split"] == split:
            yield ImageFile(row["image_id"], str(root / row["path"]), list(row["captions"]), row["split"])


def read_image_groups(collection_dir: str | os.PathLike[str], column: str) -> dict[str, str]:
    """image_id -> its value in the table's ``column`` (e.g. the multi-source emoji collection's
    "concept"); a ConfigError when the collection's table has no such column."""
    table_path = Path(collection_dir) / TABLE_NAME
    if not table_path.is_file():
        raise FileNotFoundError(f"no image collection at {collection_dir}: {TABLE_NAME} is missing")
    names = pq.read_schema(table_path).names
    if column not in names:
        raise ConfigError(
            f"the collection at {collection_dir} has no {column!r} column (columns: {', '.join(names)}): "
            f'its images carry no {column}; set train.positive_groups = "image"'
        )
    rows = pq.read_table(table_path, columns=["image_id", column]).to_pylist()
    return {row["image_id"]: str(row[column]) for row in rows}
