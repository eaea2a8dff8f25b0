"""Exact TERAN alignment over candidate images: the second stage of every search.

The same function scores the whole collection when no candidates are given, so the
brute-force exact scan is a mode of the reranker, not a second implementation. Batches
are always formed in store order with the same batch size, which makes a rerank over all
ids compute exactly the numbers the scan computes (bit for bit): the fidelity tests rely
on that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
) -> list[list[ScoredImage]]:
    """Top-``k`` images per query by the exact alignment score.

    words: float [Q, W, D] word vectors of Q queries (L2-normalised); word_mask: bool [Q, W].
    candidate_ids: the images to score (duplicates ignored), or None for the whole store.
    Returns Q lists of ``ScoredImage``, best first, ties broken by id.
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
