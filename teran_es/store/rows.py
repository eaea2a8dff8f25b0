"""The feature store's row table: where each image's regions are, and copying them out.

Every stored row (one per image added, committed or pending, in storage order) records the
shard it is in, where its regions start in that shard and how many there are. The live row
of an id is the last one added for it; a tombstoned id has none. Reading a batch of ids is
one fancy-indexed copy per shard that holds some of them (:meth:`RowTable.gather`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from teran_es.store.codec import STORAGE_DTYPE, has_scales
from teran_es.store.pending import GrowableColumn

# Unknown ids named in a KeyError; the rest are counted.
_MISSING_SHOWN = 5


class RowTable:
    """Rows in storage order (shard number, first region, region count) and the live row of each id."""

    def __init__(self, store_path: Path) -> None:
        """An empty table of the store at ``store_path`` (named in error messages)."""
        self.store_path = store_path
        # The live row of each id; a plain dict so that membership tests stay dict-fast.
        self.row_of: dict[str, int] = {}
        self._shard = GrowableColumn(np.int32)
        self._start = GrowableColumn(np.int64)
        self._count = GrowableColumn(np.int32)

    def __len__(self) -> int:
        """The number of rows, live or not (the next row's number)."""
        return len(self._shard)

    def add(self, shard: int, ids: Sequence[str], starts: np.ndarray, counts: np.ndarray) -> None:
        """Append rows for ``ids`` in shard number ``shard``; they replace earlier rows of the same ids."""
        base = len(self._shard)
        self._shard.extend(np.full(len(ids), shard, dtype=np.int32))
        self._start.extend(starts)
        self._count.extend(counts)
        self.row_of.update(zip(ids, range(base, base + len(ids)), strict=True))

    def forget(self, item_id: str) -> bool:
        """Drop the live row of ``item_id`` (a delete); True when it had one."""
        return self.row_of.pop(item_id, None) is not None

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The live rows of ``ids`` (int64); KeyError naming some of the unknown ones."""
        if isinstance(ids, str):
            raise TypeError("get_many takes a sequence of ids, not a single string")
        where = self.row_of
        try:
            rows = [where[i] for i in ids]
        except KeyError:
            missing = [i for i in ids if i not in where]
            shown = ", ".join(repr(i) for i in missing[:_MISSING_SHOWN])
            more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
            raise KeyError(
                f"{len(missing)} of {len(ids)} ids are not in the feature store {self.store_path}: {shown}{more}"
            ) from None
        return np.fromiter(rows, dtype=np.int64, count=len(rows))

    def gather(
        self,
        ids: Sequence[str],
        code_sources: list[torch.Tensor],
        scale_sources: list[torch.Tensor | None],
        dim: int,
        dtype: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The stored codes of ``ids``: ``(codes [B, Rmax, D], scales [B, Rmax] or None, mask [B, Rmax])``.

        ``code_sources`` and ``scale_sources`` hold each shard's codes and scales by shard
        number. One fancy-indexed copy per shard that holds some of the ids, not one per image:
        a rerank of 1,000 candidates spends its time in the copy, not in per-image overhead.
        Padded slots stay zero (codes and scales), so they decode to zero vectors.
        """
        rows = self.rows(ids)
        counts = self._count.view()[rows].astype(np.int64)
        width = int(counts.max()) if len(rows) else 0
        mask = np.arange(width) < counts[:, None]
        # Every region of every id: where it goes (a flat [B * Rmax] slot), where it comes from.
        slots = np.flatnonzero(mask)
        first_region = np.cumsum(counts) - counts  # of each id, in this flat list of regions
        within = np.arange(counts.sum()) - np.repeat(first_region, counts)
        sources = np.repeat(self._start.view()[rows], counts) + within
        shard_of = np.repeat(self._shard.view()[rows], counts)
        codes = np.zeros((len(rows) * width, dim), dtype=STORAGE_DTYPE[dtype])
        scales = np.zeros(len(rows) * width, dtype=np.float32) if has_scales(dtype) else None
        order = np.argsort(shard_of, kind="stable")
        shard_ids, firsts = np.unique(shard_of[order], return_index=True)
        bounds = np.append(firsts, len(order)).tolist()
        for shard, lo, hi in zip(shard_ids.tolist(), bounds[:-1], bounds[1:], strict=True):
            part = order[lo:hi]
            codes[slots[part]] = code_sources[shard].numpy()[sources[part]]
            if scales is not None:
                scales[slots[part]] = scale_sources[shard].numpy()[sources[part]]
        return (
            torch.from_numpy(codes.reshape(len(rows), width, dim)),
            None if scales is None else torch.from_numpy(scales.reshape(len(rows), width)),
            torch.from_numpy(mask),
        )
