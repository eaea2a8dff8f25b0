"""Our own columnar feature format: Parquet, one row per image.

Columns: ``image_id`` (string), ``split`` (string), ``n_regions`` (int32), ``features``
(list<float32>, ``n_regions * feature_dim`` values, row-major), ``feature_dim`` (int32),
``boxes`` (list<float32>, ``n_regions * 4``, normalised x1, y1, x2, y2), ``captions``
(list<string>) and ``path`` (string, the source image; may be empty).

A dataset is one ``.parquet`` file or a directory of them (read in name order). Reading
streams row group by row group, and a row group whose ``split`` statistics show it holds
no row of the wanted split is not read at all, so writers that emit one split after
another make split reads cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from teran_es.features.records import (
    ImageCaptionSet,
    ImageRecord,
    RecordError,
    check_on_error,
    guarded,
    validate_record,
)

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("n_regions", pa.int32(), nullable=False),
        pa.field("feature_dim", pa.int32(), nullable=False),
        pa.field("features", pa.list_(pa.float32()), nullable=False),
        pa.field("boxes", pa.list_(pa.float32()), nullable=False),
        pa.field("captions", pa.list_(pa.string()), nullable=False),
        pa.field("path", pa.string()),
    ]
)
REQUIRED_COLUMNS = ("image_id", "split", "n_regions", "feature_dim", "features", "boxes", "captions")


class ColumnarWriter:
    """Write :class:`ImageRecord` rows to one Parquet file, ``row_group_size`` images per group.

    Use as a context manager (or call :meth:`close`). Records are validated before they
    are written, so a file this writer produced always reads back cleanly.
    """

    def __init__(
        self, path: str | os.PathLike[str], row_group_size: int = 256, compression: str = "zstd"
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.row_group_size = row_group_size
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, SCHEMA, compression=compression)
        self._pending: list[ImageRecord] = []
        self._feature_dim: int | None = None
        self.rows_written = 0

    def write(self, record: ImageRecord) -> None:
        record = validate_record(record, str(self.path), feature_dim=self._feature_dim)
        self._feature_dim = record.feature_dim
        if self._pending and self._pending[-1].split != record.split:
            # one split per row group lets readers skip groups by their statistics
            self._flush()
        self._pending.append(record)
        if len(self._pending) >= self.row_group_size:
            self._flush()

    def write_all(self, records: Iterable[ImageRecord]) -> int:
        for record in records:
            self.write(record)
        return self.rows_written + len(self._pending)

    def _flush(self) -> None:
        if not self._pending:
            return
        rows = self._pending
        table = pa.table(
            {
                "image_id": [r.image_id for r in rows],
                "split": [r.split for r in rows],
                "n_regions": pa.array([r.n_regions for r in rows], pa.int32()),
                "feature_dim": pa.array([r.feature_dim for r in rows], pa.int32()),
                "features": _list_column([r.features for r in rows]),
                "boxes": _list_column([r.boxes for r in rows]),
                "captions": pa.array([list(r.captions) for r in rows], pa.list_(pa.string())),
                "path": [r.path for r in rows],
            },
            schema=SCHEMA,
        )
        self._writer.write_table(table, row_group_size=len(rows))
        self.rows_written += len(rows)
        self._pending = []

    def close(self) -> None:
        """Flush, close and move the finished file into place (a crash leaves no half file)."""
        if self._writer is None:
            return
        self._flush()
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ColumnarWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _list_column(arrays: list[np.ndarray]) -> pa.ListArray:
    """Flatten per-image arrays into one list<float32> column without a Python loop per value."""
    lengths = np.array([a.size for a in arrays], dtype=np.int32)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.float32, copy=False)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def write_columnar(
    path: str | os.PathLike[str], records: Iterable[ImageRecord], row_group_size: int = 256
) -> int:
    """Write all ``records`` to ``path``; returns the number of rows."""
    with ColumnarWriter(path, row_group_size=row_group_size) as writer:
        writer.write_all(records)
    return writer.rows_written


def parquet_files(path: str | os.PathLike[str]) -> list[Path]:
    """The Parquet files of a dataset: ``path`` itself, or the ``*.parquet`` files in it."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{p}: no .parquet files in this directory")
        return files
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    return [p]


class ColumnarReader:
    """Stream :class:`ImageRecord` rows out of a Parquet file or a directory of them.

    ``on_error="raise"`` stops at the first bad row with a :class:`RecordError` naming the
    file and image id; ``"skip"`` logs it and goes on.
    Feature arrays of the records are read-only views of the Arrow buffers (no copy).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_error: str = "raise",
        feature_dim: int | None = None,
        max_regions: int | None = None,
        captions_per_image: int | None = None,
    ) -> None:
        self.files = parquet_files(path)
        self.on_error = check_on_error(on_error)
        self.feature_dim = feature_dim
        self.max_regions = max_regions
        self.captions_per_image = captions_per_image
        for file in self.files:
            try:
                schema = pq.read_schema(file)
            except pa.ArrowException as exc:  # not Parquet at all, or cut short
                raise RecordError(str(file), None, f"not a readable Parquet file ({exc})") from None
            missing = [c for c in REQUIRED_COLUMNS if c not in set(schema.names)]
            if missing:
                raise RecordError(str(file), None, f"not a teran-es feature file: missing columns {missing}")
            _check_column_types(file, schema)

    def splits(self) -> dict[str, int]:
        """Rows per split (reads only the ``split`` column)."""
        counts: dict[str, int] = {}
        for file in self.files:
            for value in pq.read_table(file, columns=["split"]).column("split").to_pylist():
                counts[value] = counts.get(value, 0) + 1
        return counts

    def iter_records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Yield the records of ``split`` (all splits when None), in file order."""
        return guarded(self._loaders(split), self.on_error, what="row")

    def image_set(self, split: str, limit: int = 0) -> ImageCaptionSet:
        """Hold the first ``limit`` (0 = all) images of ``split`` in memory for random access."""
        records: list[ImageRecord] = []
        for record in self.iter_records(split):
            records.append(record)
            if limit and len(records) >= limit:
                break
        if not records:
            raise RecordError(", ".join(map(str, self.files)), None, f"no images in split {split!r}")
        return ImageCaptionSet.from_records(records, name=split)

    def _loaders(self, split: str | None) -> Iterator:
        for file in self.files:
            parquet = pq.ParquetFile(file)
            split_column = parquet.schema_arrow.get_field_index("split")
            for group in range(parquet.num_row_groups):
                if split is not None and not _group_may_hold(parquet, group, split_column, split):
                    continue
                try:
                    table = parquet.read_row_group(group)
                except pa.ArrowException as exc:  # a damaged data page: the rest of the file is suspect too
                    raise RecordError(str(file), None, f"cannot read row group {group} ({exc})") from None
                yield from self._row_loaders(file, table, split)

    def _row_loaders(self, file: Path, table: pa.Table, split: str | None) -> Iterator:
        ids = table.column("image_id").to_pylist()
        splits = table.column("split").to_pylist()
        n_regions = table.column("n_regions").to_pylist()
        dims = table.column("feature_dim").to_pylist()
        captions = table.column("captions").to_pylist()
        paths = table.column("path").to_pylist() if "path" in table.column_names else [""] * len(ids)
        features = _flat_lists(table.column("features"))
        boxes = _flat_lists(table.column("boxes"))
        for row, image_id in enumerate(ids):
            if split is not None and splits[row] != split:
                continue

            def load(row: int = row, image_id: str = image_id) -> ImageRecord:
                count, dim = n_regions[row], dims[row]
                feats, box = features(row), boxes(row)
                if count is None or dim is None or count < 0 or dim <= 0:
                    raise RecordError(str(file), image_id, f"bad n_regions={count} or feature_dim={dim}")
                if feats.size != count * dim:
                    raise RecordError(
                        str(file),
                        image_id,
                        f"features hold {feats.size} values, expected n_regions*feature_dim = {count}*{dim}",
                    )
                if box.size != count * 4:
                    raise RecordError(
                        str(file),
                        image_id,
                        f"boxes hold {box.size} values, expected n_regions*4 = {count * 4}",
                    )
                record = ImageRecord(
                    image_id=image_id,
                    features=feats.reshape(count, dim),
                    boxes=box.reshape(count, 4),
                    captions=list(captions[row] or []),
                    split=splits[row],
                    path=paths[row] or "",
                )
                return validate_record(
                    record,
                    str(file),
                    feature_dim=self.feature_dim,
                    max_regions=self.max_regions,
                    captions_per_image=self.captions_per_image,
                )

            yield load


def _check_column_types(file: Path, schema: pa.Schema) -> None:
    """Numbers where numbers belong: other numeric types are converted when read (float64 to
    float32, say), but text or a scalar where a list is expected is refused, naming the column."""
    for name in ("features", "boxes"):
        kind = schema.field(name).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not (
            pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)
        ):
            raise RecordError(str(file), None, f"column {name!r} is {kind}, expected a list of numbers (list<float32>)")
    for name in ("n_regions", "feature_dim"):
        kind = schema.field(name).type
        if not pa.types.is_integer(kind):
            raise RecordError(str(file), None, f"column {name!r} is {kind}, expected an integer (int32)")


def _group_may_hold(parquet: pq.ParquetFile, group: int, column: int, split: str) -> bool:
    """False only when the row group's min/max statistics rule ``split`` out."""
    stats = parquet.metadata.row_group(group).column(column).statistics
    if stats is None or not stats.has_min_max:
        return True
    low, high = stats.min, stats.max
    if isinstance(low, bytes):
        low, high = low.decode("utf-8", "replace"), high.decode("utf-8", "replace")
    return low <= split <= high


def _flat_lists(column: pa.ChunkedArray):
    """Per-row numpy views of a list<float32> column (no copy per value)."""
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False)

    def row(index: int) -> np.ndarray:
        return values[offsets[index] : offsets[index + 1]]

    return row
