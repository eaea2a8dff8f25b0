"""A compact CSR-like container for surrogate-text encodings (numpy only), and the documents
of a batch of images that either first stage encodes into one (:class:`DocumentBatch`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from teran_es.surrogate.terms import region_document_id


@dataclass(frozen=True)
class SparseEncoding:
    """Rows of (component, value) pairs, CSR layout.

    indices: int32 [nnz], component ids in [0, n_components), increasing within a row.
    values: [nnz], int32 term frequencies (documents) or float64 weights (queries), all > 0.
    indptr: int64 [n_rows + 1], row ``i`` is ``indices[indptr[i]:indptr[i+1]]``.
    n_components: 2 * D (the CReLU-split dimension).
    """

    indices: np.ndarray
    values: np.ndarray
    indptr: np.ndarray
    n_components: int

    def __post_init__(self) -> None:
        if self.indices.ndim != 1 or self.values.shape != self.indices.shape:
            raise ValueError("indices and values must be 1-D arrays of the same length")
        if self.indptr.ndim != 1 or self.indptr.size < 1 or self.indptr[0] != 0:
            raise ValueError("indptr must be a 1-D array starting at 0")
        if self.indptr[-1] != self.indices.size:
            raise ValueError(f"indptr ends at {self.indptr[-1]}, but there are {self.indices.size} entries")

    @property
    def n_rows(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def terms_per_row(self) -> np.ndarray:
        """int64 [n_rows]: number of terms of each row."""
        return np.diff(self.indptr)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices [k], values [k]) of row ``i``."""
        start, end = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[start:end], self.values[start:end]

    def to_dense(self) -> np.ndarray:
        """[n_rows, n_components] dense matrix (for tests and small batches)."""
        dense = np.zeros((self.n_rows, self.n_components), dtype=self.values.dtype)
        rows = np.repeat(np.arange(self.n_rows), self.terms_per_row())
        dense[rows, self.indices] = self.values
        return dense


def dense_to_sparse(dense: np.ndarray) -> SparseEncoding:
    """Keep the non-zero entries of ``dense`` [N, C] as a SparseEncoding (row-major order)."""
    if dense.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {dense.shape}")
    rows, cols = np.nonzero(dense)
    counts = np.bincount(rows, minlength=dense.shape[0])
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return SparseEncoding(cols.astype(np.int32), dense[rows, cols], indptr, int(dense.shape[1]))


def concatenate(parts: Sequence[SparseEncoding], n_components: int, value_dtype: type) -> SparseEncoding:
    """Stack the rows of several encodings (all with ``n_components`` components)."""
    if any(p.n_components != n_components for p in parts):
        raise ValueError("cannot concatenate encodings with different numbers of components")
    if not parts:
        return SparseEncoding(
            np.zeros(0, np.int32), np.zeros(0, value_dtype), np.zeros(1, np.int64), n_components
        )
    offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
    indptr = np.concatenate(
        [np.zeros(1, np.int64)] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
    )
    return SparseEncoding(
        np.concatenate([p.indices for p in parts]).astype(np.int32, copy=False),
        np.concatenate([p.values for p in parts]).astype(value_dtype, copy=False),
        indptr.astype(np.int64, copy=False),
        n_components,
    )


def row_terms(encoding: SparseEncoding, row: int, vocabulary: Sequence[str]) -> dict[str, int | float]:
    """Row ``row`` as ``{term: value}``, with Python ints for integer values and floats otherwise."""
    indices, values = encoding.row(row)
    return dict(zip([vocabulary[i] for i in indices.tolist()], values.tolist(), strict=True))


def all_row_terms(encoding: SparseEncoding, vocabulary: Sequence[str]) -> list[dict[str, int | float]]:
    """Every row as ``{term: value}`` (the only per-row Python loop; used to build requests)."""
    names = np.asarray(vocabulary, dtype=object)[encoding.indices].tolist()
    values = encoding.values.tolist()
    bounds = encoding.indptr.tolist()
    return [
        dict(zip(names[s:e], values[s:e], strict=True)) for s, e in zip(bounds[:-1], bounds[1:], strict=True)
    ]


@dataclass(frozen=True)
class DocumentBatch:
    """Documents of a batch of images.

    encoding: one row per document (int32 tf). image_rows: int64 [n_docs], the image's row in
    the input batch. region_slots: int64 [n_docs], the region index for pooling="region",
    -1 for pooled documents.
    """

    encoding: SparseEncoding
    image_rows: np.ndarray
    region_slots: np.ndarray

    def ids(self, image_ids: Sequence[str]) -> list[str]:
        """Document ids: the image id, or ``<image_id>#r<slot>`` for region documents."""
        return [
            image_ids[row] if slot < 0 else region_document_id(image_ids[row], slot)
            for row, slot in zip(self.image_rows.tolist(), self.region_slots.tolist(), strict=True)
        ]
