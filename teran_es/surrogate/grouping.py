"""Grouping of region-document hits back to images (pooling="region")."""

from __future__ import annotations

from collections.abc import Iterable

from teran_es.surrogate.terms import parse_region_document_id

GROUP_REDUCTIONS = ("max", "sum")


def group_region_hits(
    hits: Iterable[tuple[str, float]], k: int | None = None, reduce: str = "max"
) -> list[tuple[str, float]]:
    """Merge hits on region documents (``<image_id>#r<slot>``) into image hits.

    hits: (document id, score) pairs; an image's score is the max (or sum) of its regions'
    scores. Returns (image_id, score) sorted by score descending, ties by image id, at most
    ``k`` of them. The back end must over-fetch region hits: k images may need up to k*R regions.
    """
    if reduce not in GROUP_REDUCTIONS:
        raise ValueError(f"reduce must be one of {GROUP_REDUCTIONS}, got {reduce!r}")
    if k is not None and k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    for document_id, score in hits:
        image_id, _ = parse_region_document_id(document_id)
        if image_id not in scores:
            scores[image_id] = float(score)
        elif reduce == "max":
            scores[image_id] = max(scores[image_id], float(score))
        else:
            scores[image_id] += float(score)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ranked if k is None else ranked[:k]
