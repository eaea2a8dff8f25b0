"""Region codes fetched with the candidates (from the index), as the reranker's region source.

``FetchedRegions`` holds the codes of a few images, unpacked from the text the index returned
(``wire.unpack``), and answers ``get_many`` exactly as ``FeatureStore.get_many`` does for
the same images: padded to the batch's largest region count with zero rows, decoded with the
same ``codec.decode_into``, so a rerank over them gives the store's numbers bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from teran_es.store.codec import STORAGE_DTYPE, decode_into, has_scales
from teran_es.store.wire import unpack


class FetchedRegions:
    """The reranker's ``RegionSource`` over codes fetched for a set of candidate ids."""

    def __init__(self, packed: Mapping[str, str], dim: int, dtype: str):
        self.dim, self.dtype = dim, dtype
        self._regions = {image_id: unpack(text, dim, dtype) for image_id, text in packed.items()}
        self._order = {image_id: i for i, image_id in enumerate(packed)}

    def __len__(self) -> int:
        return len(self._regions)

    def ids(self) -> list[str]:
        return list(self._regions)

    def positions(self, ids: Sequence[str]) -> list[int]:
        """Positions in fetch order; an id that was not fetched is a KeyError naming it."""
        missing = [i for i in ids if i not in self._order]
        if missing:
            raise KeyError(f"no codes were fetched for {len(missing)} ids, e.g. {missing[:3]}")
        return [self._order[i] for i in ids]

    def get_many(
        self, ids: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 [B, Rmax, D], bool mask [B, Rmax]) of ``ids`` on ``device``."""
        self.positions(ids)  # unknown ids fail here, naming them
        parts = [self._regions[i] for i in ids]
        width = max((len(codes) for codes, _ in parts), default=0)
        codes = np.zeros((len(ids), width, self.dim), dtype=STORAGE_DTYPE[self.dtype])
        scales = np.zeros((len(ids), width), dtype=np.float32) if has_scales(self.dtype) else None
        mask = np.zeros((len(ids), width), dtype=bool)
        for row, (part_codes, part_scales) in enumerate(parts):
            n = len(part_codes)
            codes[row, :n] = part_codes
            mask[row, :n] = True
            if scales is not None:
                scales[row, :n] = part_scales
        out = torch.empty(codes.shape, dtype=torch.float32)
        decode_into(out, torch.from_numpy(codes), None if scales is None else torch.from_numpy(scales))
        target = torch.device("cpu") if device is None else torch.device(device)
        return out.to(target), torch.from_numpy(mask).to(target)
