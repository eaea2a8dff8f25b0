"""The pending shard: images added since the last commit, encoded, in growable buffers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from teran_es.store.codec import STORAGE_DTYPE, has_scales


class GrowableColumn:
    """A 1-D numpy array with amortised constant-time appends."""

    def __init__(self, dtype: Any, capacity: int = 1024) -> None:
        self._data = np.empty(capacity, dtype=dtype)
        self._size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self._size + len(values)
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = values
        self._size = end

    def clear(self) -> None:
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def view(self) -> np.ndarray:
        return self._data[: self._size]


class PendingShard:
    """Encoded images added since the last commit, laid out exactly as the shard will be."""

    def __init__(self, dim: int, dtype: str, expected_regions: int) -> None:
        self.ids: list[str] = []
        self.counts = GrowableColumn(np.int32)
        self.codes = np.empty((expected_regions, dim), dtype=STORAGE_DTYPE[dtype])
        self.scales = np.empty(expected_regions, dtype=np.float32) if has_scales(dtype) else None
        self.regions = 0

    def append(self, ids: list[str], counts: np.ndarray, codes: np.ndarray, scales: np.ndarray | None) -> int:
        """Append encoded images; returns the region row where the first one starts."""
        start, end = self.regions, self.regions + len(codes)
        if end > len(self.codes):
            capacity = max(end, 2 * len(self.codes))
            grown = np.empty((capacity, self.codes.shape[1]), dtype=self.codes.dtype)
            grown[:start] = self.codes[:start]
            self.codes = grown
            if self.scales is not None:
                grown_scales = np.empty(capacity, dtype=np.float32)
                grown_scales[:start] = self.scales[:start]
                self.scales = grown_scales
        self.codes[start:end] = codes
        if self.scales is not None:
            self.scales[start:end] = scales
        self.ids.extend(ids)
        self.counts.extend(counts)
        self.regions = end
        return start

    def clear(self) -> None:
        self.ids = []
        self.counts.clear()
        self.regions = 0

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        codes = torch.from_numpy(self.codes[: self.regions])
        scales = None if self.scales is None else torch.from_numpy(self.scales[: self.regions])
        return codes, scales
