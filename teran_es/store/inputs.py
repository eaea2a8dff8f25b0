"""Checking what ``FeatureStore.add`` is given, before anything is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from teran_es.store.codec import max_encodable

MAX_REGIONS_PER_ITEM = int(np.iinfo(np.int16).max)  # the n_regions column is int16
_SHOWN = 5


def checked_ids(ids: Sequence[str]) -> list[str]:
    """``ids`` as a list of non-empty strings (a lone string is refused: it is a sequence too)."""
    if isinstance(ids, str):
        raise TypeError("add takes a sequence of ids, not a single string")
    id_list = list(ids)
    for item_id in id_list:
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"ids must be non-empty strings, got {item_id!r}; nothing was added")
    return [str(i) for i in id_list]


def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _preview(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(repr(i) for i in ids[:_SHOWN]) + more


def stack_regions(ids: list[str], regions: Any, mask: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """All regions of ``ids`` as one float32 ``[N, dim]`` array in id order, and each id's count.

    ``regions`` is one ``[n, dim]`` array per id, or a padded ``[B, R, dim]`` array with an
    optional bool ``mask [B, R]``. A padded array without mask is used without a copy.
    """
    if isinstance(regions, np.ndarray | torch.Tensor):
        padded = as_numpy(regions)
        if padded.ndim != 3:
            raise ValueError(
                f"padded regions must be [B, R, D], got shape {padded.shape}; "
                "pass a list of [n, D] arrays for variable region counts"
            )
        if len(padded) != len(ids):
            raise ValueError(f"{len(ids)} ids but regions for {len(padded)} items; nothing was added")
        if padded.shape[2] != dim:
            raise ValueError(
                f"ids {_preview(ids)}: regions must have {dim} components, got {padded.shape[2]}; nothing was added"
            )
        if mask is None:
            counts = np.full(len(padded), padded.shape[1], dtype=np.int64)
            stacked = padded.reshape(-1, dim).astype(np.float32, copy=False)
        else:
            valid = as_numpy(mask).astype(bool, copy=False)
            if valid.shape != padded.shape[:2]:
                raise ValueError(
                    f"mask must have shape {padded.shape[:2]}, got {valid.shape}; nothing was added"
                )
            counts = valid.sum(axis=1)
            stacked = padded[valid].astype(np.float32, copy=False)
    else:
        if mask is not None:
            raise ValueError("mask goes with padded [B, R, D] regions, not with a list of per-item arrays")
        arrays = [as_numpy(item) for item in regions]
        if len(arrays) != len(ids):
            raise ValueError(f"{len(ids)} ids but regions for {len(arrays)} items; nothing was added")
        for item_id, array in zip(ids, arrays, strict=True):
            if array.ndim != 2 or array.shape[1] != dim:
                raise ValueError(
                    f"id {item_id!r}: regions must have shape [n, {dim}], got {tuple(array.shape)}; "
                    "nothing was added"
                )
        counts = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        stacked = np.concatenate(arrays, dtype=np.float32) if arrays else np.empty((0, dim), np.float32)
    empty = [ids[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(
            f"ids {_preview(empty)}: no regions (every item needs at least one); nothing was added"
        )
    too_many = [ids[k] for k in np.flatnonzero(counts > MAX_REGIONS_PER_ITEM)]
    if too_many:
        raise ValueError(
            f"ids {_preview(too_many)}: more than {MAX_REGIONS_PER_ITEM} regions; nothing was added"
        )
    return stacked, counts.astype(np.int32)


def check_values(ids: list[str], stacked: np.ndarray, counts: np.ndarray, dtype: str) -> None:
    """Refuse NaN, infinities and values the dtype cannot hold, naming the ids that have them."""
    limit = max_encodable(dtype)
    # A sum is finite only if every term is: one cheap pass rules out NaN/Inf in the common case.
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = not np.isfinite(stacked.sum(axis=1)).all()
    if dtype == "fp16" and len(stacked):
        suspect = suspect or stacked.max() > limit or stacked.min() < -limit
    if not suspect:
        return
    with np.errstate(invalid="ignore"):
        bad_rows = ~np.isfinite(stacked).all(axis=1) | (np.abs(stacked).max(axis=1, initial=0) > limit)
    if not bad_rows.any():  # the sum overflowed on large but finite values
        return
    item_of_row = np.repeat(np.arange(len(counts)), counts)
    bad_ids = [ids[k] for k in np.unique(item_of_row[bad_rows])]
    raise ValueError(
        f"ids {_preview(bad_ids)}: NaN, infinite or out-of-range values "
        f"(|x| must be at most {limit:g} for {dtype}); nothing was added"
    )
