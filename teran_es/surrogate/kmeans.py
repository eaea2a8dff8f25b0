"""k-means (Lloyd's algorithm) in numpy: the codebooks of the cell first stage.

Small and deterministic: the same points, k, iterations and seed give the same centroids.
Nearest means smallest Euclidean distance, computed as the largest ``<x, c> - |c|^2 / 2`` so
that one matrix product does the work.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

# Similarities computed at once in assign_nearest: rows x centroids <= this many floats (64 MB).
_BLOCK_FLOATS = 1 << 24
# k-means++ draws its seeds from at most this many rows per centroid.
PLUS_PLUS_POOL = 32


def assign_nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """int64 [N]: the index of the nearest of the centroids [k, D] for every row of x [N, D]."""
    x = np.asarray(x, dtype=np.float32)
    centroids = np.asarray(centroids, dtype=np.float32)
    out = np.empty(x.shape[0], dtype=np.int64)
    if x.shape[0] == 0:
        return out
    half_norms = 0.5 * np.einsum("kd,kd->k", centroids, centroids)
    rows = max(1, _BLOCK_FLOATS // max(1, centroids.shape[0]))
    for lo in range(0, x.shape[0], rows):
        block = x[lo : lo + rows] @ centroids.T
        block -= half_norms
        out[lo : lo + rows] = block.argmax(axis=1)
    return out


def plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [k, D]: k-means++ seeds (each next one drawn with probability proportional to its
    squared distance to the nearest seed so far), from at most ``PLUS_PLUS_POOL * k`` rows."""
    pool = x if x.shape[0] <= PLUS_PLUS_POOL * k else x[np.sort(rng.choice(x.shape[0], PLUS_PLUS_POOL * k, replace=False))]
    seeds = np.empty((k, x.shape[1]), dtype=np.float32)
    seeds[0] = pool[rng.integers(pool.shape[0])]
    nearest = ((pool - seeds[0]) ** 2).sum(axis=1, dtype=np.float64)
    for j in range(1, k):
        total = nearest.sum()
        pick = rng.choice(pool.shape[0], p=nearest / total) if total > 0 else rng.integers(pool.shape[0])
        seeds[j] = pool[pick]
        np.minimum(nearest, ((pool - seeds[j]) ** 2).sum(axis=1, dtype=np.float64), out=nearest)
    return seeds


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """float32 [k, D]: k centroids of the rows of x [N, D] (N >= k >= 1).

    Seeded by k-means++ (``seed``), then Lloyd's iterations. A centroid left without points
    takes a random point of the largest cluster, so every centroid is in use when N >= k.
    """
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= the number of points; got k={k} for {n} points")
    rng = np.random.default_rng(seed)
    centroids = plus_plus(x, k, rng)
    for _ in range(iters):
        labels = assign_nearest(x, centroids)
        counts = np.bincount(labels, minlength=k)
        present = np.flatnonzero(counts)
        # Cluster sums as one sparse [k, N] x [N, D] product: no sorted copy of the points.
        membership = scipy.sparse.csr_matrix((np.ones(n, np.float64), (labels, np.arange(n))), shape=(k, n))
        sums = np.asarray(membership @ x)
        centroids[present] = (sums[present] / counts[present, None]).astype(np.float32)
        for empty in np.flatnonzero(counts == 0).tolist():
            largest = int(counts.argmax())
            members = np.flatnonzero(labels == largest)
            pick = int(members[rng.integers(members.size)])
            centroids[empty] = x[pick]
            labels[pick] = empty  # the point moves, so the next empty centroid takes another one
            counts[largest] -= 1
            counts[empty] = 1
    return centroids
