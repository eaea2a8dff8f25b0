"""One shard of the feature store: an uncompressed Arrow IPC file, read through a memory map.

Layout (one record batch per file, one row per image)::

    id         string
    n_regions  int16
    regions    list<fixed_size_list<codes, D>>   codes: float32 | float16 | int8
    scales     list<float32>                     int8 only; same offsets as ``regions``

All region vectors of a shard sit back to back in one buffer, so an image's regions are one
contiguous ``[n, D]`` slice of a ``[regions, D]`` array that the memory map exposes without a
copy; the list offsets say where each image starts. Parquet was not used for this read path:
its pages are encoded (and usually compressed), so fetching 1,000 random images means
decoding whole column chunks instead of slicing mapped memory: 1.4 s instead of 79 ms for
1,000 of a 1,024-image fp16 shard, open included, and Parquet saved only 6 % of the bytes
(embeddings barely compress; ``benchmarks/bench_store.py``). Arrow IPC files still open in
pyarrow, polars or DuckDB, which serves interchange.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import torch

from teran_es.store.codec import has_scales
from teran_es.store.errors import StoreError
from teran_es.store.files import write_atomically

SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".arrow"
_ARROW_TYPE = {"fp32": pa.float32(), "fp16": pa.float16(), "int8": pa.int8()}


def shard_file_name(number: int) -> str:
    return f"{SHARD_PREFIX}{number:05d}{SHARD_SUFFIX}"


def shard_schema(dim: int, dtype: str) -> pa.Schema:
    """The Arrow schema of a shard holding ``dim``-dimensional vectors encoded as ``dtype``."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("n_regions", pa.int16(), nullable=False),
        pa.field("regions", pa.list_(pa.list_(_ARROW_TYPE[dtype], dim)), nullable=False),
    ]
    if has_scales(dtype):
        fields.append(pa.field("scales", pa.list_(pa.float32()), nullable=False))
    metadata = {"teran_es.dim": str(dim), "teran_es.dtype": dtype}
    return pa.schema(fields, metadata=metadata)


def write_shard(
    path: Path,
    ids: list[str],
    counts: np.ndarray,
    codes: np.ndarray,
    scales: np.ndarray | None,
    dtype: str,
) -> int:
    """Write one shard atomically (temporary file, fsync, rename); returns its size in bytes.

    ``codes`` is ``[sum(counts), D]`` with the regions of ``ids[0]`` first, then ``ids[1]``...
    """
    dim = codes.shape[1]
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    offsets_array = pa.array(offsets)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), dim)
    columns: list[Any] = [
        pa.array(ids, pa.string()),
        pa.array(np.asarray(counts, dtype=np.int16)),
        pa.ListArray.from_arrays(offsets_array, vectors),
    ]
    if scales is not None:
        columns.append(pa.ListArray.from_arrays(offsets_array, pa.array(scales)))
    schema = shard_schema(dim, dtype)
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)

    def write(fh: BinaryIO) -> None:
        with pa.ipc.new_file(fh, schema) as writer:
            writer.write_batch(batch)

    return write_atomically(path, write)


@dataclass
class ShardView:
    """A shard opened for reading; ``codes``/``scales`` are views over the memory map."""

    ids: list[str]
    starts: np.ndarray  # int64 [images]: first region row of each image
    counts: np.ndarray  # int32 [images]
    codes: torch.Tensor  # [regions, D] in the stored dtype
    scales: torch.Tensor | None  # float32 [regions], int8 only
    keepalive: Any  # the memory map and record batch the views point into


def _tensor_view(array: pa.Array) -> torch.Tensor:
    values = array.to_numpy(zero_copy_only=True)
    # The map is read-only and torch cannot mark a tensor read-only; nothing here writes to it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(values)


def open_shard(path: Path, dim: int, dtype: str) -> ShardView:
    """Memory-map a shard and check it holds what the manifest says."""
    try:
        mapped = pa.memory_map(str(path), "r")
        batch = pa.ipc.open_file(mapped).get_batch(0) if mapped.size() else None
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read feature store shard {path}: {exc}") from None
    expected = shard_schema(dim, dtype)
    if batch is None or not batch.schema.equals(expected, check_metadata=False):
        found = "an empty file" if batch is None else str(batch.schema)
        raise StoreError(f"shard {path} does not hold {dtype} vectors of dim {dim}: found {found}")
    regions = batch.column("regions")
    offsets = regions.offsets.to_numpy()
    counts = np.diff(offsets).astype(np.int32)
    if not np.array_equal(counts, batch.column("n_regions").to_numpy()):
        raise StoreError(f"shard {path} is corrupt: n_regions disagrees with the region lists")
    flat = regions.values.flatten().slice(offsets[0] * dim, (offsets[-1] - offsets[0]) * dim)
    codes = _tensor_view(flat).view(-1, dim)
    scales = None
    if has_scales(dtype):
        scale_values = batch.column("scales").values.slice(offsets[0], offsets[-1] - offsets[0])
        scales = _tensor_view(scale_values)
    return ShardView(
        ids=batch.column("id").to_pylist(),
        starts=(offsets[:-1] - offsets[0]).astype(np.int64),
        counts=counts,
        codes=codes,
        scales=scales,
        keepalive=(mapped, batch),
    )
