"""Cell tokens: the first stage with the shape of MrSw (numpy only).

Documents. Every region of an image is assigned to its cell in each of ``codebooks``
independent two-level k-means trees (``cells.CellCodebook``); the image's document is the
set of its distinct cells, one term ``m<codebook>c<cell>`` each, with frequency 1.

Queries. In each codebook, every word probes its ``nprobe`` most similar cells; cell c gets
the weight ``<w, centroid_c> - floor_w``, where ``floor_w`` is the similarity of the word's
last probed cell, rounded down to one of ``query_levels`` levels (so that the index looks up
the cells of a level as one set). A group per word and codebook; the index scores a document by

    sum over codebooks and words of max over the probed cells it holds of the weight,

so for one codebook the score plus the floors is sum_w max_{r probed} <w, centroid(r)>: MrSw
with each region replaced by its cell centroid. A word none of whose probed cells an image
holds scores the floor, its last probed similarity (the imputation XTR uses), so one
unmatched word does not drop an image. The codebooks' scores add up: each is an estimate of
MrSw with its own quantisation error, and their sum ranks better than any one of them
(benchmarks/sim_first_stage.py measured it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from teran_es.config import QuantizerConfig
from teran_es.errors import ConfigError
from teran_es.surrogate import ops
from teran_es.surrogate.cells import CellCodebook, split_cells
from teran_es.surrogate.errors import EncoderFileError, FitError
from teran_es.surrogate.query import MaxSumQuery
from teran_es.surrogate.saved import check_fingerprint, config_from_dict, encoder_metadata, write_encoder_file
from teran_es.surrogate.sparse import DocumentBatch, SparseEncoding

FORMAT = "teran-es/cell-tokens/1"
# Settings that change the documents (the codebooks or their use); nprobe and probe_beam are
# query-side and may change at search time without reindexing.
DOCUMENT_SETTINGS = ("kind", "cells", "coarse_cells", "codebooks", "kmeans_iters", "sample_size", "seed")
QUERY_SETTINGS = ("nprobe", "probe_beam", "query_levels")
MAX_CELLS = 2**18
MAX_CODEBOOKS = 8
# Sample vectors per cell that an automatic cell count aims for.
AUTO_VECTORS_PER_CELL = 16


def auto_cells(n_vectors: int) -> int:
    """The power of two nearest to n_vectors / 16, within [16, 2**18]."""
    target = max(1.0, n_vectors / AUTO_VECTORS_PER_CELL)
    return int(min(MAX_CELLS, max(16, 2 ** round(math.log2(target)))))


def check_cell_config(config: QuantizerConfig) -> None:
    """Raise ConfigError when a cell setting is out of range."""
    problems = []
    if config.cells < 0 or config.cells > MAX_CELLS:
        problems.append(f"cells must be in 0..{MAX_CELLS} (0 = automatic), got {config.cells}")
    if config.coarse_cells < 0:
        problems.append(f"coarse_cells must be >= 0 (0 = automatic), got {config.coarse_cells}")
    if config.cells and config.coarse_cells and config.cells % config.coarse_cells:
        problems.append(f"cells ({config.cells}) must be a multiple of coarse_cells ({config.coarse_cells})")
    if not 1 <= config.codebooks <= MAX_CODEBOOKS:
        problems.append(f"codebooks must be in 1..{MAX_CODEBOOKS}, got {config.codebooks}")
    if config.nprobe < 2:
        problems.append(f"nprobe must be >= 2 (the last probed cell is a word's floor), got {config.nprobe}")
    if config.query_levels < 0:
        problems.append(f"query_levels must be >= 0 (0 = exact weights), got {config.query_levels}")
    if config.probe_beam < 0:
        problems.append(f"probe_beam must be >= 0 (0 = every coarse cell), got {config.probe_beam}")
    if config.kmeans_iters < 1:
        problems.append(f"kmeans_iters must be >= 1, got {config.kmeans_iters}")
    if config.sample_size < 2:
        problems.append(f"sample_size must be >= 2, got {config.sample_size}")
    if problems:
        raise ConfigError("invalid quantizer config: " + "; ".join(problems))


def term_name(codebook: int, cell: int) -> str:
    return f"m{codebook}c{cell}"


def level_weights(weights: np.ndarray, levels: int) -> np.ndarray:
    """Each word's weights [W, n] (>= 0) rounded down to a multiple of its largest / ``levels``
    (0 = left as they are). Cells of one level share a weight, so the index scores them with
    one set lookup; what falls below the first level becomes 0 and is not probed."""
    if levels <= 0:
        return weights
    step = weights.max(axis=1, keepdims=True) / levels
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.floor(np.where(step > 0, weights / step, 0.0))
    return np.minimum(level, levels) * step


class CellTokenEncoder:
    """Bags of cells for images, probed cells for words (see the module docstring).

    Build with :meth:`fit` or :meth:`load`; the constructor takes fitted codebooks.
    """

    region_documents = False  # one document per image
    index_field = "cells"  # the index field its terms go into (no frequencies)

    def __init__(self, config: QuantizerConfig, codebooks: Sequence[CellCodebook], model_fingerprint: str = ""):
        check_cell_config(config)
        if not codebooks:
            raise ValueError("at least one codebook is needed")
        shapes = {(b.n_coarse, b.per_coarse, b.dim) for b in codebooks}
        if len(shapes) != 1:
            raise ValueError(f"the codebooks differ in shape: {sorted(shapes)}")
        self.config = dataclasses.replace(config, kind="cells")
        self.codebooks = list(codebooks)
        self.model_fingerprint = model_fingerprint
        self._fingerprint = self._compute_fingerprint()

    # ----------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        sample: np.ndarray,
        config: QuantizerConfig,
        *,
        mask: np.ndarray | None = None,
        model_fingerprint: str = "",
    ) -> CellTokenEncoder:
        """Fit the codebooks on region vectors: sample float [N, D], or [N_img, R, D] with an
        optional bool mask [N_img, R]. Each codebook takes its own seeded subsample of at most
        ``config.sample_size`` vectors (all of them when there are fewer)."""
        check_cell_config(config)
        arr = ops.check_vectors(sample, None, (2, 3), "sample")
        if arr.ndim == 3:
            arr = arr[ops.check_mask(mask, arr.shape[:2], "mask")]
        n = arr.shape[0]
        n_cells = config.cells or auto_cells(min(n, config.sample_size))
        n_coarse, _ = split_cells(n_cells, config.coarse_cells)
        if min(n, config.sample_size) < 2 * n_coarse:
            raise FitError(
                f"sample: {min(n, config.sample_size)} vectors cannot fit {n_coarse} coarse cells (at least "
                f"{2 * n_coarse} are needed); ingest more images before the first fit, lower "
                "quantizer.cells, or raise quantizer.sample_size"
            )
        resolved = dataclasses.replace(config, cells=n_cells, coarse_cells=n_coarse)
        codebooks = []
        for m in range(config.codebooks):
            rng = np.random.default_rng((config.seed, 11, m))
            rows = np.sort(rng.choice(n, size=config.sample_size, replace=False)) if n > config.sample_size else slice(None)
            codebooks.append(
                CellCodebook.fit(arr[rows], n_cells, n_coarse, iters=config.kmeans_iters, seed=config.seed * 1000 + m)
            )
        return cls(resolved, codebooks, model_fingerprint)

    # ------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return self.codebooks[0].dim

    @property
    def n_cells(self) -> int:
        """Cells per codebook."""
        return self.codebooks[0].n_cells

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the format, the document-side settings and every centroid."""
        return self._fingerprint

    def with_query_settings(self, config: QuantizerConfig) -> CellTokenEncoder:
        """The same codebooks, probed with ``config``'s query-side settings (nprobe, probe_beam)."""
        changed = dataclasses.replace(self.config, **{name: getattr(config, name) for name in QUERY_SETTINGS})
        return CellTokenEncoder(changed, self.codebooks, self.model_fingerprint)

    # --------------------------------------------------------------- encoding
    def cells_of(self, vectors: np.ndarray) -> np.ndarray:
        """int64 [N, M]: the cell of each vector [N, D] in each of the M codebooks."""
        arr = ops.check_vectors(vectors, self.dim, 2, "vectors")
        return np.stack([book.assign(arr) for book in self.codebooks], axis=1)

    def encode_images(self, regions: np.ndarray, mask: np.ndarray | None = None) -> DocumentBatch:
        """One document per image: regions float [B, R, D], mask bool [B, R] (None = all valid).
        Terms are indexed ``codebook * cells + cell``, frequency 1, one per distinct cell."""
        arr = ops.check_vectors(regions, self.dim, 3, "regions")
        region_mask = ops.check_mask(mask, arr.shape[:2], "mask")
        images, _ = np.nonzero(region_mask)
        cells = self.cells_of(arr[region_mask])  # [n_valid, M]
        width = self.n_cells * len(self.codebooks)
        columns = cells + np.arange(len(self.codebooks)) * self.n_cells
        keys = np.unique(np.repeat(images, len(self.codebooks)) * width + columns.ravel())
        rows = keys // width
        indptr = np.zeros(arr.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=arr.shape[0]), out=indptr[1:])
        encoding = SparseEncoding((keys % width).astype(np.int32), np.ones(keys.size, np.int32), indptr, width)
        return DocumentBatch(encoding, np.arange(arr.shape[0], dtype=np.int64), np.full(arr.shape[0], -1, np.int64))

    def term_dicts(self, encoding: SparseEncoding) -> list[dict[str, int]]:
        """Every document of an encoding as ``{term: 1}``."""
        names = [term_name(int(i) // self.n_cells, int(i) % self.n_cells) for i in encoding.indices.tolist()]
        bounds = encoding.indptr.tolist()
        values = encoding.values.tolist()
        return [dict(zip(names[s:e], values[s:e], strict=True)) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]

    def query(self, words: np.ndarray, mask: np.ndarray | None = None) -> MaxSumQuery:
        """One sentence's query: words float [W, D] (+ bool mask [W]); one group per word and codebook."""
        arr = ops.check_vectors(words, self.dim, 2, "words")
        kept = arr[ops.check_mask(mask, arr.shape[:1], "mask")]
        groups, offset = [], 0.0
        for m, book in enumerate(self.codebooks):
            if kept.shape[0] == 0:
                break
            cells, sims = book.probe(kept, self.config.nprobe, self.config.probe_beam or book.n_coarse)
            floors = sims[:, -1].astype(np.float64)
            offset += float(floors.sum())
            weights = level_weights(sims.astype(np.float64) - floors[:, None], self.config.query_levels)
            for word_cells, word_weights in zip(cells.tolist(), weights.tolist(), strict=True):
                groups.append({term_name(m, c): w for c, w in zip(word_cells, word_weights, strict=True) if w > 0})
        return MaxSumQuery.of(groups, offset)

    # ---------------------------------------------------------------- identity
    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(FORMAT.encode())
        settings = {name: getattr(self.config, name) for name in DOCUMENT_SETTINGS}
        digest.update(json.dumps({"dim": self.dim, "settings": settings}, sort_keys=True).encode())
        for book in self.codebooks:
            for array in (book.coarse, book.fine):
                digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
            digest.update(np.ascontiguousarray(book.fine_used, dtype="<i8").tobytes())
        return digest.hexdigest()

    def metadata(self) -> dict:
        """JSON-able description: format, dim, full config, fingerprint, numpy version."""
        return encoder_metadata(FORMAT, self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the codebooks and the JSON metadata to one .npz file (atomically)."""
        arrays = {}
        for m, book in enumerate(self.codebooks):
            arrays.update({f"coarse{m}": book.coarse, f"fine{m}": book.fine, f"fine_used{m}": book.fine_used})
        return write_encoder_file(path, self.metadata(), arrays)

    @classmethod
    def from_arrays(cls, data, metadata: dict, where: str) -> CellTokenEncoder:
        """Rebuild an encoder from the arrays and metadata :meth:`save` wrote; checks the fingerprint."""
        config = config_from_dict(metadata.get("config", {}), where)
        try:
            books = [
                CellCodebook(data[f"coarse{m}"], data[f"fine{m}"], data[f"fine_used{m}"]) for m in range(config.codebooks)
            ]
        except KeyError as exc:
            raise EncoderFileError(f"{where}: a codebook is missing ({exc})") from None
        encoder = cls(config, books, str(metadata.get("model_fingerprint", "")))
        check_fingerprint(encoder.fingerprint, metadata, where)
        return encoder

    def __repr__(self) -> str:
        return (
            f"CellTokenEncoder(dim={self.dim}, codebooks={len(self.codebooks)}, cells={self.n_cells}, "
            f"nprobe={self.config.nprobe}, fingerprint={self.fingerprint[:12]})"
        )
