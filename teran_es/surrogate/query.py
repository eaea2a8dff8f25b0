"""The query with the shape of MrSw that the cell first stage sends to an index."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MaxSumQuery:
    """Score of a document = sum over groups of max over the group's terms it holds of tf x weight.

    groups: one ``((term, weight), ...)`` tuple per word (and codebook); weights > 0. A document
    holding none of a group's terms gets 0 for it. ``offset`` is what the weights left out (the
    words' floors): score + offset reads the score in similarity units; rankings ignore it.
    """

    groups: tuple[tuple[tuple[str, float], ...], ...]
    offset: float = 0.0

    @classmethod
    def of(cls, groups: Iterable[Mapping[str, float]], offset: float = 0.0) -> MaxSumQuery:
        """From ``{term: weight}`` mappings, dropping empty groups."""
        built = tuple(tuple((str(t), float(w)) for t, w in g.items()) for g in groups)
        return cls(tuple(g for g in built if g), float(offset))

    def __len__(self) -> int:
        """The number of groups: a query without any is empty (falsy), like an empty dict."""
        return len(self.groups)

    @property
    def n_terms(self) -> int:
        return sum(len(g) for g in self.groups)

    def problems(self) -> list[str]:
        """Why an index would refuse this query (empty; a weight that is not positive and finite)."""
        if not self.groups:
            return ["the query has no terms"]
        bad = [(t, w) for g in self.groups for t, w in g if not (math.isfinite(w) and w > 0)]
        return [f"query weight of {t!r} must be a positive finite number, got {w!r}" for t, w in bad[:3]]
