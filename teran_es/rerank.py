"""Exact TERAN alignment over candidate images: the second stage of every search.

The same function scores the whole collection when no candidates are given, so the
brute-force exact scan is a mode of the reranker, not a second implementation. Batches
are always formed in store order with the same batch size, which makes a rerank over all
ids compute exactly the numbers the scan computes (bit for bit): the fidelity tests rely
on that. ``offsets`` (an image's query-bank normaliser, ``bank_normalisers.py``) are
subtracted from every score of that image. ``rerank_exact_many`` serves several queries, each
over its own candidates: it reads the union of their candidates once and runs
``rerank_exact`` per query over it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from teran_es.device import resolve_device
from teran_es.model.alignment import pairwise_scores


class RegionSource(Protocol):
    """What the reranker needs from a feature store."""

    def positions(self, ids: Sequence[str]) -> list[int]: ...

    def ids(self) -> list[str]: ...

    def get_many(
        self, ids: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class ScoredImage:
    id: str
    score: float


def _ordered_batches(store: RegionSource, ids: Sequence[str], batch_size: int) -> Iterator[list[str]]:
    positions = store.positions(ids) if ids else []
    ordered = [ids[i] for i in sorted(range(len(ids)), key=positions.__getitem__)]
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def rerank_exact(
    words: torch.Tensor,
    word_mask: torch.Tensor,
    store: RegionSource,
    candidate_ids: Sequence[str] | None,
    k: int,
    kind: str = "MrSw",
    padding: str = "masked",
    device: str | torch.device | None = "auto",
    batch_size: int = 256,
    offsets: Mapping[str, float] | None = None,
) -> list[list[ScoredImage]]:
    """Top-``k`` images per query by the exact alignment score.

    words: float [Q, W, D] word vectors of Q queries (L2-normalised); word_mask: bool [Q, W].
    candidate_ids: the images to score (duplicates ignored), or None for the whole store.
    offsets: a number per image id, subtracted from its scores (float32) before ranking; every
    scored id must have one. Returns Q lists of ``ScoredImage``, best first, ties broken by id.
    """
    dev = resolve_device(device)
    ids = list(dict.fromkeys(candidate_ids)) if candidate_ids is not None else store.ids()
    words = words.to(dev)
    word_mask = word_mask.to(dev)
    n_queries = words.shape[0]
    best_scores: list[torch.Tensor] = [torch.empty(0) for _ in range(n_queries)]
    best_ids: list[list[str]] = [[] for _ in range(n_queries)]
    for batch in _ordered_batches(store, ids, batch_size):
        regions, region_mask = store.get_many(batch, device=dev)
        scores = pairwise_scores(regions, region_mask, words, word_mask, kind=kind, padding=padding)  # [B, Q]
        scores = scores.float().cpu()
        if offsets is not None:
            scores = scores - torch.tensor([offsets[i] for i in batch], dtype=torch.float32)[:, None]
        for q in range(n_queries):
            merged_scores = torch.cat([best_scores[q], scores[:, q]])
            merged_ids = best_ids[q] + batch
            keep = _top_k_with_id_ties(merged_scores, merged_ids, k)
            best_scores[q] = merged_scores[keep]
            best_ids[q] = [merged_ids[i] for i in keep.tolist()]
    return [
        [ScoredImage(i, float(s)) for i, s in zip(best_ids[q], best_scores[q].tolist(), strict=True)]
        for q in range(n_queries)
    ]


def rerank_exact_many(
    words: torch.Tensor,
    word_mask: torch.Tensor,
    store: RegionSource,
    candidate_ids: Sequence[Sequence[str]],
    k: int,
    kind: str = "MrSw",
    padding: str = "masked",
    device: str | torch.device | None = "auto",
    batch_size: int = 256,
    offsets: Mapping[str, float] | None = None,
) -> list[list[ScoredImage]]:
    """Top-``k`` images of each query among that query's own candidates, by the exact score.

    words: float [Q, W, D] word vectors of Q queries (L2-normalised); word_mask: bool [Q, W].
    candidate_ids: Q sequences of ids, one per query (duplicates ignored; lists may overlap and
    may be empty). Returns Q lists of ``ScoredImage``, best first, ties broken by id: for every
    q the same as ``rerank_exact(words[q:q+1], word_mask[q:q+1], store, candidate_ids[q], k)[0]``
    with the same settings (``offsets`` included). The union of the candidates is read from the
    store once.
    """
    if len(candidate_ids) != words.shape[0]:
        raise ValueError(f"{words.shape[0]} queries but {len(candidate_ids)} candidate lists")
    dev = resolve_device(device)
    union = list(dict.fromkeys(i for ids in candidate_ids for i in ids))
    preloaded = _PreloadedRegions(store, union, dev)
    return [
        rerank_exact(
            words[q : q + 1],
            word_mask[q : q + 1],
            preloaded,
            candidate_ids[q],
            k,
            kind=kind,
            padding=padding,
            device=dev,
            batch_size=batch_size,
            offsets=offsets,
        )[0]
        for q in range(words.shape[0])
    ]


class _PreloadedRegions:
    """The regions of a fixed set of ids, read from a store once, served as a ``RegionSource``.

    ``get_many`` drops the padding columns that no id of the batch needs, as a store pads each
    batch to that batch's largest region count only: a rerank over this source computes with
    the very tensors a rerank over the store would.
    """

    def __init__(self, store: RegionSource, ids: Sequence[str], device: torch.device) -> None:
        positions = store.positions(ids) if ids else []
        # Read in storage order, and keep each id's storage position, so that rerank_exact
        # batches these ids in the order it would batch them from the store.
        ordered = sorted(range(len(ids)), key=positions.__getitem__)
        self._ids = [ids[i] for i in ordered]
        self._position = {ids[i]: positions[i] for i in ordered}
        self._row = {item_id: row for row, item_id in enumerate(self._ids)}
        self._device = device
        if self._ids:
            self._regions, self._mask = store.get_many(self._ids, device=device)
        else:
            self._regions = torch.zeros(0, 0, 0, device=device)
            self._mask = torch.zeros(0, 0, dtype=torch.bool, device=device)

    def positions(self, ids: Sequence[str]) -> list[int]:
        return [self._position[i] for i in ids]

    def ids(self) -> list[str]:
        return list(self._ids)

    def get_many(
        self, ids: Sequence[str], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor([self._row[i] for i in ids], dtype=torch.long, device=self._device)
        mask = self._mask[rows]
        used = torch.nonzero(mask.any(dim=0)).flatten()
        width = int(used[-1]) + 1 if used.numel() else 0
        target = self._device if device is None else device
        return self._regions[rows, :width].to(target), mask[:, :width].to(target)


def _top_k_with_id_ties(scores: torch.Tensor, ids: Sequence[str], k: int) -> torch.Tensor:
    """Indices of the k best by (score descending, id ascending)."""
    if scores.numel() > 4 * k:
        # Cut to the candidates at or above the k-th score before the exact (score, id) sort.
        kth = torch.topk(scores, k).values[-1]
        pool = torch.nonzero(scores >= kth).flatten().tolist()
    else:
        pool = list(range(scores.numel()))
    values = scores.tolist()
    pool.sort(key=lambda i: (-values[i], ids[i]))
    return torch.tensor(pool[:k], dtype=torch.long)
