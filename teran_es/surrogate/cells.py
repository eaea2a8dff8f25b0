"""The cell codebook: a two-level k-means tree over region vectors (numpy only).

``n_coarse`` coarse centroids split the space; inside each coarse cell, ``per_coarse`` fine
centroids split it again. A *cell* is a leaf, numbered ``coarse * per_coarse + fine``, so
there are ``n_coarse * per_coarse`` cells. Two levels keep everything cheap at the sizes the
first stage needs (2^16 to 2^18 cells): fitting is many small k-means runs, assigning a
region costs ``n_coarse + per_coarse`` dot products, and a word probes its cells through
its best coarse cells (a beam) instead of scoring every leaf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from teran_es.errors import ConfigError
from teran_es.surrogate.kmeans import assign_nearest, kmeans

# Points per fine centroid below which a coarse cell does not run its own k-means: its fine
# centroids are then its points themselves, and its other cells stay unused.
MIN_POINTS_PER_FINE = 2
# A word's cells are shortlisted by their similarity in the centroids' top PROBE_DIMS
# directions (a quarter of the memory read for 256-d vectors), SHORTLIST x nprobe of them,
# then ranked by the exact similarity.
PROBE_DIMS = 64
SHORTLIST = 2


def split_cells(n_cells: int, n_coarse: int = 0) -> tuple[int, int]:
    """(coarse cells, fine cells per coarse cell) for ``n_cells`` in all.

    ``n_coarse = 0`` picks the power of two nearest to sqrt(n_cells) that divides it.
    """
    if n_cells < 1:
        raise ValueError(f"the number of cells must be >= 1, got {n_cells}")
    if n_coarse <= 0:
        n_coarse = 2 ** round(math.log2(n_cells) / 2)
        while n_cells % n_coarse:
            n_coarse //= 2
    if n_cells % n_coarse:
        raise ConfigError(f"{n_cells} cells cannot be split into {n_coarse} coarse cells of equal size")
    return n_coarse, n_cells // n_coarse


@dataclass(frozen=True)
class CellCodebook:
    """coarse: float32 [C1, D]; fine: float32 [C1, C2, D], cell ``i * C2 + j`` being ``fine[i, j]``;
    fine_used: int64 [C1], how many of coarse cell i's fine centroids are real (the rest are
    never assigned nor probed: a coarse cell with too few fitting points has fewer)."""

    coarse: np.ndarray
    fine: np.ndarray
    fine_used: np.ndarray

    def __post_init__(self) -> None:
        if self.coarse.ndim != 2 or self.fine.ndim != 3 or self.fine.shape[0] != self.coarse.shape[0]:
            raise ValueError(f"coarse must be [C1, D] and fine [C1, C2, D]; got {self.coarse.shape}, {self.fine.shape}")
        if self.fine.shape[2] != self.coarse.shape[1]:
            raise ValueError("coarse and fine centroids must have the same dimension")
        if self.fine_used.shape != (self.fine.shape[0],) or not (
            (self.fine_used >= 1) & (self.fine_used <= self.fine.shape[1])
        ).all():
            raise ValueError(f"fine_used must be [C1] counts in 1..{self.fine.shape[1]}")
        if not (np.isfinite(self.coarse).all() and np.isfinite(self.fine).all()):
            raise ValueError("the codebook holds NaN or infinite centroids")

    @property
    def dim(self) -> int:
        return int(self.coarse.shape[1])

    @property
    def n_coarse(self) -> int:
        return int(self.fine.shape[0])

    @property
    def per_coarse(self) -> int:
        return int(self.fine.shape[1])

    @property
    def n_cells(self) -> int:
        return self.n_coarse * self.per_coarse

    @property
    def leaves(self) -> np.ndarray:
        """float32 [C, D]: every cell's centroid, by cell number (a view)."""
        return self.fine.reshape(self.n_cells, self.dim)

    @property
    def used_cells(self) -> np.ndarray:
        """bool [C]: the cells that regions can be assigned to."""
        return (np.arange(self.per_coarse) < self.fine_used[:, None]).ravel()

    @classmethod
    def fit(cls, vectors: np.ndarray, n_cells: int, n_coarse: int = 0, iters: int = 20, seed: int = 0) -> CellCodebook:
        """Fit the tree on vectors float32 [N, D]; needs N >= the number of coarse cells."""
        x = np.asarray(vectors, dtype=np.float32)
        c1, c2 = split_cells(n_cells, n_coarse)
        if x.ndim != 2 or x.shape[0] < c1:
            raise ValueError(f"fitting {c1} coarse cells needs at least {c1} vectors [N, D]; got shape {x.shape}")
        coarse = kmeans(x, c1, iters, seed)
        labels = assign_nearest(x, coarse)
        fine = np.repeat(coarse[:, None, :], c2, axis=1)
        used = np.full(c1, c2, dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(c1 + 1))
        for i in range(c1):
            members = x[order[bounds[i] : bounds[i + 1]]]
            if members.shape[0] >= MIN_POINTS_PER_FINE * c2:
                fine[i] = kmeans(members, c2, iters, seed + 1 + i)
            else:  # too few points for c2 centroids: its points are its centroids
                used[i] = max(1, min(members.shape[0], c2))
                fine[i, : members.shape[0]] = members[: used[i]]
        return cls(coarse, fine, used)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """int64 [N]: the cell of every vector of x [N, D] (nearest coarse, then nearest fine in it)."""
        x = np.asarray(x, dtype=np.float32)
        top = assign_nearest(x, self.coarse)
        cells = np.empty(x.shape[0], dtype=np.int64)
        order = np.argsort(top, kind="stable")
        coarse_ids, firsts = np.unique(top[order], return_index=True)
        bounds = np.append(firsts, order.size).tolist()
        for i, lo, hi in zip(coarse_ids.tolist(), bounds[:-1], bounds[1:], strict=True):
            rows = order[lo:hi]
            cells[rows] = i * self.per_coarse + assign_nearest(x[rows], self.fine[i, : self.fine_used[i]])
        return cells

    def probe(self, words: np.ndarray, nprobe: int, beam: int) -> tuple[np.ndarray, np.ndarray]:
        """Each word's ``nprobe`` most similar cells (by dot product), searched among the fine
        cells of its ``beam`` most similar coarse cells (all cells when beam >= C1).

        words float32 [W, D] -> (cells int64 [W, n], similarities [W, n]), best first, n =
        min(nprobe, cells searched); float32, or float64 when float32 products would overflow.
        """
        w = np.asarray(words, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            probed = self._probe(w, nprobe, beam)
        if np.isfinite(probed[1]).all():
            return probed
        # Vectors near the float32 limit overflow in float32 products: redo them in float64.
        cells, sims = self._probe(w.astype(np.float64), nprobe, beam)
        return cells, sims

    def _probe(self, w: np.ndarray, nprobe: int, beam: int) -> tuple[np.ndarray, np.ndarray]:
        beam = min(max(1, beam), self.n_coarse)
        basis, fine_low = self._low()
        w_low = w @ basis  # [W, P]
        if beam == self.n_coarse:
            approx = w_low @ fine_low.reshape(self.n_cells, -1).T  # [W, C]
            approx[:, ~self.used_cells] = -np.inf
            candidates = np.broadcast_to(np.arange(self.n_cells), approx.shape)
        else:
            coarse_sims = w @ self.coarse.T  # [W, C1]
            chosen = np.argpartition(-coarse_sims, beam - 1, axis=1)[:, :beam]  # [W, beam]
            approx = np.empty((w.shape[0], beam, self.per_coarse), dtype=w_low.dtype)
            # One product per coarse cell that some word chose, for all the words that chose it.
            for i in np.unique(chosen).tolist():
                rows, slots = np.nonzero(chosen == i)
                approx[rows, slots] = w_low[rows] @ fine_low[i].T
            approx[np.arange(self.per_coarse) >= self.fine_used[chosen][:, :, None]] = -np.inf
            approx = approx.reshape(w.shape[0], -1)
            candidates = (chosen[:, :, None] * self.per_coarse + np.arange(self.per_coarse)).reshape(w.shape[0], -1)
        # Shortlist by the low-dimensional similarity, then rank the shortlist exactly.
        n = max(1, min(nprobe, int((approx > -np.inf).sum(axis=1).min())))
        short = min(approx.shape[1], SHORTLIST * n)
        keep = np.argpartition(-approx, short - 1, axis=1)[:, :short] if short < approx.shape[1] else None
        cells = candidates if keep is None else np.take_along_axis(candidates, keep, 1)
        sims = np.einsum("wkd,wd->wk", self.leaves[cells], w)
        if keep is not None:
            sims[np.take_along_axis(approx, keep, 1) == -np.inf] = -np.inf
        else:
            sims[approx == -np.inf] = -np.inf
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        return np.take_along_axis(cells, np.take_along_axis(top, order, 1), 1), np.take_along_axis(top_sims, order, 1)

    def _low(self) -> tuple[np.ndarray, np.ndarray]:
        """(basis float32 [D, P], fine centroids in it [C1, C2, P]): the top-P directions of the
        centroids' second moment, so that <w, c> ~ <w B, c B>. Derived, computed on first use."""
        cached = self.__dict__.get("_low_cache")
        if cached is None:
            leaves = self.leaves[self.used_cells].astype(np.float64)
            values, vectors = np.linalg.eigh(leaves.T @ leaves)
            basis = np.ascontiguousarray(vectors[:, ::-1][:, : min(PROBE_DIMS, self.dim)], dtype=np.float32)
            cached = (basis, np.ascontiguousarray(self.fine @ basis))
            object.__setattr__(self, "_low_cache", cached)
        return cached
