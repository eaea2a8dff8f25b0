"""Scoring in the embedded index: exact first-stage scores of one segment's documents.

Both query kinds score as the Elasticsearch mapping does, with the same float32 arithmetic,
so the two backends return the same candidates in the same order (ties by id):

- weighted terms (the scalar first stage): sum over the query's terms of boost x tf, each
  clause in float32 as Lucene scores a ``sparse_vector`` term;
- a ``MaxSumQuery`` (the cell first stage): sum over groups of the largest boost among the
  group's terms a document holds, the frequency playing no part (constant-score clauses in a
  ``dis_max`` per group).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from teran_es.index.base import Query
from teran_es.index.embedded_files import Segment
from teran_es.surrogate.query import MaxSumQuery


def postings(
    seg: Segment, terms: Mapping[str, float] | tuple[tuple[str, float], ...], constant: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(documents int32 [P], clause scores float32 [P]) of the query terms the segment has.

    A clause scores as Lucene scores a term of a ``sparse_vector`` field: the float32 boost
    times the stored value, in float32 (``constant``: the boost alone). Sums of clauses run in
    float64 and are rounded to float32 at the end, as Lucene's disjunctions do: both backends
    then see the same ties.
    """
    pairs = terms.items() if isinstance(terms, Mapping) else terms
    found = [(seg.terms[t], w) for t, w in pairs if t in seg.terms]
    if not found:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    bounds = [(int(seg.term_offsets[t]), int(seg.term_offsets[t + 1])) for t, _ in found]
    docs = np.concatenate([seg.post_docs[lo:hi] for lo, hi in bounds])
    weights = np.repeat(np.array([w for _, w in found], dtype=np.float32), [hi - lo for lo, hi in bounds])
    if constant:
        return docs, weights
    values = np.concatenate([seg.post_tfs[lo:hi] for lo, hi in bounds]).astype(np.float32)
    values *= weights
    return docs, values


def _max_sum_scores(seg: Segment, query: MaxSumQuery) -> tuple[np.ndarray, np.ndarray]:
    """Sum over groups of the largest weight among each group's terms a document holds (constant
    score: the frequency plays no part, as in Elasticsearch's constant_score clauses)."""
    scores = np.zeros(seg.n_docs)
    best = np.zeros(seg.n_docs, np.float32)  # a group's best clause per document, reset after each group
    for group in query.groups:
        docs, values = postings(seg, group, constant=True)
        if docs.size == 0:
            continue
        order = np.argsort(values, kind="stable")
        best[docs[order]] = values[order]  # the last write per document is its largest value
        touched = np.unique(docs)
        scores[touched] += best[touched]
        best[touched] = 0.0
    scores = scores.astype(np.float32)
    return scores, (scores > 0) & ~seg.deleted


def segment_scores(seg: Segment, query: Query) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of one segment's documents: (scores float32 [N], matched bool [N]); deleted
    documents never match."""
    if isinstance(query, MaxSumQuery):
        return _max_sum_scores(seg, query)
    docs, values = postings(seg, query)
    scores = np.bincount(docs, weights=values, minlength=seg.n_docs).astype(np.float32)
    # Weights are positive and tf >= 1, so a document matched exactly when its score is positive.
    return scores, (scores > 0) & ~seg.deleted


def segment_candidates(seg: Segment, query: Query, k: int) -> list[tuple[float, str]]:
    """``(score, id)`` of the segment's best ``k`` matches, plus every match tied with the k-th
    score, so that the caller can break ties by id across segments (unordered)."""
    scores, matched = segment_scores(seg, query)
    idx = np.flatnonzero(matched)
    if idx.size == 0:
        return []
    sub = scores[idx]
    if idx.size > k:
        kth = np.partition(sub, idx.size - k)[idx.size - k]
        keep = sub >= kth
        idx, sub = idx[keep], sub[keep]
    return [(float(s), seg.stored[i]["id"]) for i, s in zip(idx, sub, strict=True)]
