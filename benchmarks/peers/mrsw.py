"""The benchmarks' one reference for the exact MrSw score, in numpy.

For an image with regions r_1..r_R and a query with words w_1..w_W (all L2-normalised):

    MrSw(image, query) = sum over words i of max over regions j of <w_i, r_j>

Everything that needs ground truth in benchmarks/ calls this module: the scale collection's
exact top lists (``scale_collection.exact_scan``), the surrogate benchmark's exact scores, and
the peers' brute force and rerank (``measure_peers``). The library's own reranker
(``teran_es.rerank``, torch, the system being measured) is deliberately not used here.

Only numpy is imported, and nothing relative: the module is ``peers.mrsw`` for the benchmarks
and the tests, and plain ``mrsw`` for a script that runs with benchmarks/peers/ on its path and
without teran_es, like the fast-plaid worker in its own virtual environment.

Arithmetic is float32 (float16 regions are widened per chunk). Ties go to the lower image
index (or the lower candidate id), everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

DEFAULT_MAX_BYTES = 512 * 2**20


def images_per_chunk(n_words: int, n_regions: int, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Images scored per chunk so that ``n_words`` words' similarities to a chunk's regions
    (``[sum W, chunk * R]`` float32) stay within ``max_bytes`` (at least one image)."""
    return max(1, int(max_bytes) // max(1, int(n_words) * int(n_regions) * 4))


def _stacked_words(query_words: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """All queries' words as one float32 ``[sum W, D]`` matrix, and each query's row range."""
    words = [np.asarray(w, dtype=np.float32).reshape(-1, dim) for w in query_words]
    ends = np.cumsum([w.shape[0] for w in words], dtype=np.int64)
    stacked = np.concatenate(words) if words else np.zeros((0, dim), dtype=np.float32)
    return stacked, [(int(end) - w.shape[0], int(end)) for w, end in zip(words, ends, strict=True)]


def _chunk_scores(
    words: np.ndarray, bounds: list[tuple[int, int]], chunk: np.ndarray
) -> np.ndarray:
    """float32 ``[Q, c]`` MrSw of the images ``chunk`` [c, R, D] for every query.

    All queries' words take part in one matrix product per region slot; a query without words
    scores 0.
    """
    c, n_regions, _ = chunk.shape
    scores = np.zeros((len(bounds), c), dtype=np.float32)
    if words.shape[0] == 0 or c == 0 or n_regions == 0:
        return scores
    # The max over regions as a running maximum over region slots: numpy reduces a short last
    # axis slowly, and this way the whole [sum W, c, R] block never exists.
    best_region = words @ chunk[:, 0, :].T  # [sum W, c]
    for slot in range(1, n_regions):
        np.maximum(best_region, words @ chunk[:, slot, :].T, out=best_region)
    for q, (lo, hi) in enumerate(bounds):
        if hi > lo:
            scores[q] = best_region[lo:hi].sum(axis=0)
    return scores


def _iter_chunks(
    regions: np.ndarray,
    query_words: Sequence[np.ndarray],
    max_bytes: int,
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first image, float32 [Q, c] scores)`` over ``regions`` [N, R, D] in order."""
    n, n_regions, dim = regions.shape
    words, bounds = _stacked_words(query_words, dim)
    step = images_per_chunk(words.shape[0], n_regions, max_bytes)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        # A memmap is read one chunk at a time and widened to float32 only there.
        yield lo, _chunk_scores(words, bounds, np.asarray(regions[lo:hi], dtype=np.float32))
        if progress is not None:
            progress(hi - lo)


def mrsw_scores(
    regions: np.ndarray, query_words: Sequence[np.ndarray], max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """float32 ``[Q, N]``: the MrSw score of every image for every query.

    regions: ``[N, R, D]`` float16/float32 (np.memmap allowed, read in chunks); query_words: Q
    arrays ``[W_q, D]`` (W_q may differ, and may be 0). Memory: the ``[Q, N]`` result plus one
    similarity block of at most ``max_bytes``.
    """
    scores = np.empty((len(query_words), regions.shape[0]), dtype=np.float32)
    for lo, block in _iter_chunks(regions, query_words, max_bytes, None):
        scores[:, lo : lo + block.shape[1]] = block
    return scores


def mrsw_top(
    regions: np.ndarray,
    query_words: Sequence[np.ndarray],
    top: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact MrSw top ``top`` of every query over all of ``regions``.

    regions: ``[N, R, D]`` float16/float32 (np.memmap allowed, streamed); query_words: Q arrays
    ``[W_q, D]``. Returns ``(ids int64 [Q, top'], scores float32 [Q, top'])`` with
    ``top' = min(top, N)``, best first, ties broken by the lower image index. Memory: one
    similarity block of at most ``max_bytes`` plus a running ``[Q, top' + chunk]`` merge.
    ``progress(images)`` is called after each chunk.
    """
    n = regions.shape[0]
    k = min(int(top), n)
    best_scores = np.empty((len(query_words), 0), dtype=np.float32)
    best_ids = np.empty((len(query_words), 0), dtype=np.int64)
    for lo, block in _iter_chunks(regions, query_words, max_bytes, progress):
        merged_scores = np.concatenate([best_scores, block], axis=1)
        merged_ids = np.concatenate(
            [best_ids, np.broadcast_to(np.arange(lo, lo + block.shape[1]), block.shape)], axis=1
        )
        # Earlier columns hold lower indices, so a stable sort keeps tied images in index order.
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_ids, best_scores


def mrsw_bruteforce(
    regions: np.ndarray, query_words: Sequence[np.ndarray], k: int, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[list[int]]:
    """The exact MrSw top ``k`` image indices of every query over the whole collection, best
    first, as lists (``mrsw_top`` without the scores)."""
    ids, _ = mrsw_top(regions, query_words, k, max_bytes)
    return [[int(i) for i in row] for row in ids]


def mrsw_rerank(regions: np.ndarray, query: np.ndarray, candidates: Sequence[int], k: int) -> list[int]:
    """The top ``k`` of ``candidates`` (image indices into ``regions`` [N, R, D]) by exact MrSw
    for one query's words ``[W, D]``, best first, ties broken by the lower index."""
    if len(candidates) == 0 or k <= 0:
        return []
    cand = np.unique(np.asarray(candidates, dtype=np.int64))  # sorted: memmap-friendly reads
    scores = mrsw_scores(regions[cand], [query])[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(i) for i in cand[order]]
