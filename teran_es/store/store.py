"""FeatureStore: region (or word) embeddings by id, memory-mapped, for the exact rerank.

A store is a directory::

    manifest.json        the commit point: format version, dim, dtype, model fingerprint,
                         shard list, tombstones, counts (see ``manifest.py``)
    shard-00000.arrow    up to ``shard_size`` images each (see ``shard.py``)
    .lock                held (flock) by the one process that may write (see ``files.py``)

Writes go to an in-memory pending shard; a full pending shard, ``flush()`` and ``close()``
write it as a new immutable shard and then replace the manifest. Everything added is visible
to this object's reads at once, and durable once committed. A crash loses only the images
added since the last commit; an ingest that is simply re-run skips what is already there.
Opening a directory is ``directory.py``; where each id's regions are is ``rows.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from teran_es.store.codec import STORAGE_DTYPE, decode_into, encode
from teran_es.store.directory import open_directory
from teran_es.store.errors import StoreError, StoreNotWritableError
from teran_es.store.inputs import check_values, checked_ids, stack_regions
from teran_es.store.manifest import (
    Manifest,
    ShardEntry,
    library_versions,
    open_listed_shard,
    utc_now,
    write_manifest,
)
from teran_es.store.pending import PendingShard
from teran_es.store.rows import RowTable
from teran_es.store.shard import ShardView, open_shard, shard_file_name, write_shard

log = logging.getLogger(__name__)



class AddResult(NamedTuple):
    """How many of the ids given to ``add`` were stored, and how many were already there."""

    added: int
    skipped: int


class FeatureStore:
    """Region (or word) embeddings by string id. Create or open one with ``FeatureStore.open``.

    Not thread-safe for writing; concurrent reads of a store nobody writes to are fine.
    """

    def __init__(self, path: Path, manifest: Manifest, *, writable: bool, lock_fd: int | None) -> None:
        """Load the shards ``manifest`` lists. Use ``FeatureStore.open`` instead."""
        self.path = path
        self._manifest = manifest
        self._writable = writable
        self._lock_fd = lock_fd
        self._closed = False
        self._dirty = False
        self._shards: list[ShardView] = []
        # Every stored row (committed or pending), in storage order, and the live row of each id.
        self._rows = RowTable(path)
        self._deleted: set[str] = set(manifest.deleted)
        self._pending: PendingShard | None = None
        for entry in manifest.shards:
            self._attach(open_listed_shard(path, entry, manifest.dim, manifest.dtype))
        for item_id in self._deleted:
            self._rows.forget(item_id)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        writable: bool | None = None,
        dim: int | None = None,
        dtype: str | None = None,
        model_fingerprint: str | None = None,
        kind: str | None = None,
        shard_size: int | None = None,
    ) -> FeatureStore:
        """Open the store at ``path``; with ``create=True`` make it first if it does not exist.

        ``writable`` defaults to ``create``. ``dim``, ``dtype``, ``model_fingerprint`` and ``kind``
        are required to create a store (dtype defaults to ``StoreConfig().dtype``, kind to
        "regions"); given when opening an existing one they are expectations, and a store that
        differs raises ``StoreMismatchError``. ``shard_size`` (images per shard file) applies to
        shards written from now on.
        """
        path = Path(path)
        writable = create if writable is None else writable
        manifest, lock_fd = open_directory(
            path,
            create=create,
            writable=writable,
            dim=dim,
            dtype=dtype,
            model_fingerprint=model_fingerprint,
            kind=kind,
            shard_size=shard_size,
        )
        try:
            return cls(path, manifest, writable=writable, lock_fd=lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    def _attach(self, view: ShardView) -> None:
        """Add a committed shard's rows to the id map; later rows of an id replace earlier ones."""
        self._rows.add(len(self._shards), view.ids, view.starts, view.counts)
        self._shards.append(view)

    # ---------------------------------------------------------------- description

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def dtype(self) -> str:
        return self._manifest.dtype

    @property
    def kind(self) -> str:
        return self._manifest.kind

    @property
    def model_fingerprint(self) -> str:
        return self._manifest.model_fingerprint

    @property
    def shard_size(self) -> int:
        return self._manifest.shard_size

    @property
    def writable(self) -> bool:
        return self._writable and not self._closed

    def stats(self) -> dict[str, int]:
        """Counts: live images, stored rows and regions (committed), tombstones, shards, bytes."""
        return {
            "images": len(self._rows.row_of),
            "rows": sum(e.images for e in self._manifest.shards),
            "regions": sum(e.regions for e in self._manifest.shards),
            "deleted": len(self._deleted),
            "shards": len(self._manifest.shards),
            "pending_images": 0 if self._pending is None else len(self._pending.ids),
            "bytes": sum(e.bytes for e in self._manifest.shards),
        }

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, kind={self.kind}, dim={self.dim}, dtype={self.dtype}, "
            f"images={len(self._rows.row_of)}, writable={self.writable})"
        )

    def __len__(self) -> int:
        return len(self._rows.row_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows.row_of

    def ids(self) -> list[str]:
        """Live ids, in storage order (the order a sequential scan reads them)."""
        return list(self._rows.row_of)

    def positions(self, ids: Sequence[str]) -> list[int]:
        """Storage positions of ``ids`` (sorting by them gives storage order); KeyError if unknown."""
        return self._rows.rows(ids).tolist()

    def contains(self, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` that the store holds."""
        where = self._rows.row_of
        return {i for i in ids if i in where}

    # ---------------------------------------------------------------- reading

    def get_many(
        self, ids: Sequence[str], device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Regions of ``ids`` as ``(float32 [B, Rmax, D], bool mask [B, Rmax])`` on ``device``.

        ``Rmax`` is the largest region count in this batch; padded rows are zero. Unknown ids
        raise KeyError naming some of them. Off the CPU, the stored codes travel (a half or a
        quarter of the float32 bytes) and are decoded on the device.
        """
        target = torch.device("cpu") if device is None else torch.device(device)
        if target.type != "cpu":
            pin = target.type == "cuda" and torch.cuda.is_available()
            codes, scales, mask = self.get_codes(ids, pin_memory=pin)
            out = torch.empty(codes.shape, dtype=torch.float32, device=target)
            decode_into(
                out,
                codes.to(target, non_blocking=pin),
                None if scales is None else scales.to(target, non_blocking=pin),
            )
            return out, mask.to(target)

        codes, scales, mask = self._gather(ids)
        out = torch.empty(codes.shape, dtype=torch.float32)
        decode_into(out, codes, scales)
        return out, mask

    def get_codes(
        self, ids: Sequence[str], *, pin_memory: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The stored codes of ``ids``, not decoded: ``(codes [B, Rmax, D], scales [B, Rmax] or None, mask)``.

        ``codes`` has the store's dtype (float32, float16 or int8); ``scales`` is there for int8
        only. ``codec.decode_into`` turns them into ``get_many``'s regions, on any device.
        """
        codes, scales, mask = self._gather(ids)
        if pin_memory:
            codes = codes.pin_memory()
            scales = None if scales is None else scales.pin_memory()
        return codes, scales, mask

    def iter_batches(
        self, batch_size: int = 256, device: str | torch.device | None = None
    ) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
        """Yield ``(ids, regions, mask)`` over every live item in storage order (the exhaustive scan)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        live = self._rows.row_of
        snapshot = list(live)
        for begin in range(0, len(snapshot), batch_size):
            # Skip ids deleted since the scan started rather than fail on them.
            chunk = [i for i in snapshot[begin : begin + batch_size] if i in live]
            if chunk:
                regions, mask = self.get_many(chunk, device)
                yield chunk, regions, mask

    def _gather(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The stored codes of ``ids``: ``(codes [B, Rmax, D], scales [B, Rmax] or None, mask [B, Rmax])``."""
        self._require_open()
        code_sources, scale_sources = self._sources()
        return self._rows.gather(ids, code_sources, scale_sources, self.dim, self.dtype)

    def _sources(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Codes and scales of every shard by shard number, the pending one last."""
        codes = [view.codes for view in self._shards]
        scales = [view.scales for view in self._shards]
        if self._pending is not None:
            pending_codes, pending_scales = self._pending.tensors()
            codes.append(pending_codes)
            scales.append(pending_scales)
        return codes, scales

    # ---------------------------------------------------------------- writing

    def add(self, ids: Sequence[str], regions: Any, mask: Any = None) -> AddResult:
        """Store the regions of ``ids``; ids already stored (or repeated in ``ids``) are skipped.

        ``regions`` is either one ``[n_i, D]`` array or tensor per id, or a padded
        ``[B, R, D]`` array or tensor with an optional bool ``mask [B, R]`` (True = a region).
        The whole call is checked before anything is stored: a wrong dimension, a NaN/Inf or
        out-of-range value, or an id with no regions raises ValueError naming the id, and the
        store is left as it was.
        """
        self._require_writable()
        id_list = checked_ids(ids)
        stacked, counts = stack_regions(id_list, regions, mask, self.dim)
        check_values(id_list, stacked, counts, self.dtype)

        keep: list[int] = []
        seen: set[str] = set()
        live = self._rows.row_of
        for position, item_id in enumerate(id_list):
            if item_id not in live and item_id not in seen:
                seen.add(item_id)
                keep.append(position)
        if not keep:
            return AddResult(0, len(id_list))
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        if len(keep) < len(id_list):
            stacked = np.concatenate([stacked[offsets[k] : offsets[k + 1]] for k in keep])
            counts = counts[keep]
            offsets = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
        kept_ids = [id_list[k] for k in keep]
        codes, scales = encode(stacked, self.dtype)

        # Fill the pending shard up to shard_size, commit it, go on: a commit then always
        # writes all pending rows, so the manifest never runs ahead of the shards.
        done = 0
        while done < len(kept_ids):
            pending = self._pending_shard()
            take = min(self.shard_size - len(pending.ids), len(kept_ids) - done)
            first, last = offsets[done], offsets[done + take]
            self._append_pending(
                kept_ids[done : done + take],
                counts[done : done + take],
                codes[first:last],
                None if scales is None else scales[first:last],
            )
            done += take
            if len(pending.ids) >= self.shard_size:
                self._commit()
        return AddResult(len(kept_ids), len(id_list) - len(kept_ids))

    def delete(self, ids: Iterable[str]) -> int:
        """Tombstone ``ids``; returns how many were present. Durable at the next flush/close."""
        self._require_writable()
        removed = 0
        for item_id in ids:
            if self._rows.forget(item_id):
                self._deleted.add(item_id)
                removed += 1
        self._dirty = self._dirty or removed > 0
        return removed

    def flush(self) -> None:
        """Commit: write pending images as a shard, then the manifest. A no-op when nothing changed."""
        self._require_writable()
        self._commit()

    def close(self) -> None:
        """Flush (when writable) and release the files and the writer lock. Safe to call twice."""
        if self._closed:
            return
        try:
            if self._writable:
                self._commit()
        finally:
            self._closed = True
            self._shards = []
            self._pending = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _pending_shard(self) -> PendingShard:
        if self._pending is None:
            # Room for a full shard of TERAN-sized images (36 regions), reserved but untouched
            # until written, so filling it never copies; capped at 1 GiB, it grows when needed.
            row_bytes = self.dim * STORAGE_DTYPE[self.dtype].itemsize
            expected_regions = max(1, min(self.shard_size * 36, 2**30 // row_bytes))
            self._pending = PendingShard(self.dim, self.dtype, expected_regions)
        return self._pending

    def _append_pending(
        self, ids: list[str], counts: np.ndarray, codes: np.ndarray, scales: np.ndarray | None
    ) -> None:
        first = self._pending_shard().append(ids, counts, codes, scales)
        starts = np.empty(len(counts), dtype=np.int64)
        starts[0] = first
        np.cumsum(counts[:-1], out=starts[1:])
        starts[1:] += first
        # The pending shard will be committed as shard number len(self._shards), with the same layout.
        self._rows.add(len(self._shards), ids, starts, counts)
        self._deleted.difference_update(ids)

    def _commit(self) -> None:
        pending = self._pending
        if pending is not None and pending.ids:
            name = shard_file_name(self._manifest.next_shard)
            regions = pending.regions
            size = write_shard(
                self.path / name,
                pending.ids,
                pending.counts.view(),
                pending.codes[:regions],
                None if pending.scales is None else pending.scales[:regions],
                self.dtype,
            )
            view = open_shard(self.path / name, self.dim, self.dtype)
            self._shards.append(view)
            self._manifest.shards.append(
                ShardEntry(file=name, images=len(pending.ids), regions=regions, bytes=size)
            )
            self._manifest.next_shard += 1
            pending.clear()
            self._dirty = True
        if not self._dirty:
            return
        manifest = self._manifest
        manifest.generation += 1
        manifest.deleted = sorted(self._deleted)
        manifest.updated = utc_now()
        manifest.written_by = library_versions()
        stats = self.stats()
        manifest.counts = {
            key: stats[key] for key in ("images", "rows", "regions", "deleted", "shards", "bytes")
        }
        write_manifest(self.path, manifest)
        self._dirty = False

    def _require_open(self) -> None:
        if self._closed:
            raise StoreError(f"feature store {self.path} is closed")

    def _require_writable(self) -> None:
        self._require_open()
        if not self._writable:
            raise StoreNotWritableError(
                f"feature store {self.path} was opened read-only; open it with writable=True to change it"
            )
