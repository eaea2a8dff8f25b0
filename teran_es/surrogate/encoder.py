"""The surrogate-text encoder: encode documents and queries, save/load, fingerprint (fit: scalar_fit.py).

Units and what Q means
----------------------
Documents are encoded from d = CReLU(R (v - mu)) and queries from a = CReLU(R q), both in
embedding units (2D non-negative components). A kept document component with value x gets

    tf = floor(Q * x / doc_scale + 0.5), clipped to max_tf; tf == 0 drops the term,

where ``doc_scale`` is calibrated at fit time as the ``scale_quantile`` (default 0.999)
quantile of the kept document values of the sample, encoded exactly as documents will be
(same pooling, same sparsification). So **Q is the tf given to a value at the top of the
calibrated range**: values up to doc_scale use tf 1..Q, one tf step is ``tf_step =
doc_scale / Q`` embedding units, and tf reaches max_tf only for values above
(max_tf / Q) * doc_scale (about 1 in 1000 kept values exceeds doc_scale itself). Query
weights are not quantised: they are the kept components of a in embedding units (float64).

What the score approximates
---------------------------
score = sum_t weight_t * tf_t, and score * tf_step approximates
P(q, v) = <CReLU(R q), CReLU(R (v - mu))> = sum_i max((R q)_i (R (v - mu))_i, 0)
with equality up to rounding when nothing is dropped (gamma >= D for a single vector, since
a CReLU'd vector has at most D non-zero components; Q large; no clipping at max_tf).
P is not <q, v - mu>: CReLU drops the products of opposite-sign components, so
P = (<q, v - mu> + <|R q|, |R (v - mu)|>) / 2. For a random rotation the second term
concentrates around (2/pi) |q| |v - mu| (sqrt(1 - c^2) + c arcsin c), c the cosine of q and
v - mu: P increases with c at fixed norms, so rankings agree in expectation, with a bias
towards documents far from the mean. Ranking by <q, v - mu> equals ranking by <q, v>.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from teran_es.config import QuantizerConfig
from teran_es.errors import ConfigError
from teran_es.surrogate import ops
from teran_es.surrogate.errors import EncoderFileError
from teran_es.surrogate.saved import check_fingerprint, config_from_dict, encoder_metadata, write_encoder_file
from teran_es.surrogate.sparse import (
    DocumentBatch,
    SparseEncoding,
    all_row_terms,
    concatenate,
    dense_to_sparse,
    row_terms,
)
from teran_es.surrogate.terms import vocabulary

FORMAT = "teran-es/surrogate-text/1"
ROLES = ("document", "query")
POOLINGS = ("max", "sum", "region")
QUERY_MODES = ("sum", "per-word")
DOC_SPARSIFY_ORDERS = ("pooled", "regions")
# Settings that change document encodings; the query-side ones (query_weighting, query_gamma)
# may change at search time without reindexing, and seed/sample_size act through mu, R, doc_scale.
DOCUMENT_SETTINGS = ("gamma", "q_factor", "max_tf", "pooling", "doc_gamma", "doc_sparsify", "scale_quantile")
QUERY_SETTINGS = ("query_weighting", "query_gamma")
_CHUNK_FLOATS = 1 << 22  # about 16 MB of float32 per working array


def check_config(config: QuantizerConfig, dim: int) -> None:
    """Raise ConfigError when a setting is out of range for vectors of dimension ``dim``."""
    problems = []
    if config.gamma < 1:
        problems.append(f"gamma must be >= 1, got {config.gamma}")
    if config.doc_gamma < 0 or config.query_gamma < 0:
        problems.append("doc_gamma and query_gamma must be >= 0 (0 = default)")
    if not (np.isfinite(config.q_factor) and config.q_factor > 0):
        problems.append(f"q_factor must be a positive number, got {config.q_factor}")
    if config.max_tf < 1:
        problems.append(f"max_tf must be >= 1, got {config.max_tf}")
    if config.pooling not in POOLINGS:
        problems.append(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
    if config.query_weighting not in QUERY_MODES:
        problems.append(f"query_weighting must be one of {QUERY_MODES}, got {config.query_weighting!r}")
    if config.doc_sparsify not in DOC_SPARSIFY_ORDERS:
        problems.append(f"doc_sparsify must be one of {DOC_SPARSIFY_ORDERS}, got {config.doc_sparsify!r}")
    if not 0.0 < config.scale_quantile <= 1.0:
        problems.append(f"scale_quantile must be in (0, 1], got {config.scale_quantile}")
    if config.sample_size < 2:
        problems.append(f"sample_size must be >= 2, got {config.sample_size}")
    if dim < 1:
        problems.append(f"dimension must be >= 1, got {dim}")
    if problems:
        raise ConfigError("invalid quantizer config: " + "; ".join(problems))


class SurrogateTextEncoder:
    """Scalar-quantisation surrogate text for D-dimensional embeddings (see module docstring).

    Build with :meth:`fit` or :meth:`load`; the constructor takes fitted parameters:
    mean float32 [D], rotation float32 [D, D] (orthogonal), doc_scale > 0.
    """

    def __init__(
        self,
        config: QuantizerConfig,
        mean: np.ndarray,
        rotation: np.ndarray,
        doc_scale: float,
        model_fingerprint: str = "",
    ) -> None:
        mean = np.asarray(mean, dtype=np.float32)
        rotation = np.asarray(rotation, dtype=np.float32)
        if mean.ndim != 1 or rotation.shape != (mean.size, mean.size):
            raise ValueError(f"mean must be [D] and rotation [D, D]; got {mean.shape} and {rotation.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(rotation).all()):
            raise ValueError("mean and rotation must be finite")
        if not (np.isfinite(doc_scale) and doc_scale > 0):
            raise ValueError(f"doc_scale must be a positive finite number, got {doc_scale}")
        check_config(config, mean.size)
        # a private copy: later edits must not change encodings
        self.config = dataclasses.replace(config, kind="scalar")
        self.model_fingerprint = model_fingerprint
        self.mean = mean
        self.rotation = rotation
        self.doc_scale = float(doc_scale)
        self._vocabulary = vocabulary(mean.size)
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
    ) -> SurrogateTextEncoder:
        """Fit mu, R and doc_scale on a sample (see :func:`.scalar_fit.fit_surrogate_text_encoder`)."""
        from teran_es.surrogate.scalar_fit import fit_surrogate_text_encoder  # it builds this class

        return fit_surrogate_text_encoder(sample, config, mask=mask, model_fingerprint=model_fingerprint)

    def kept_document_values(
        self, images: np.ndarray, mask: np.ndarray | None, single_vectors: bool
    ) -> np.ndarray:
        """float [n]: the positive kept document values, before quantisation, of images [N, R, D]
        (+ bool mask [N, R]; ``single_vectors``: one vector each, R = 1): what doc_scale is fitted on."""
        found = []
        for start in range(0, images.shape[0], self._images_per_chunk(images.shape[1])):
            chunk = images[start : start + self._images_per_chunk(images.shape[1])]
            chunk_mask = None if mask is None else mask[start : start + chunk.shape[0]]
            if single_vectors:
                values = self._document_vector_values(chunk[:, 0, :])
            else:
                values, _, _ = self._document_values(chunk, chunk_mask)
            found.append(values[values > 0])
        return np.concatenate(found) if found else np.zeros(0)

    # ------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(self.mean.size)

    index_field = "terms"  # the index field its terms go into (with frequencies)

    @property
    def region_documents(self) -> bool:
        """True when every region is a document of its own (pooling="region")."""
        return self.config.pooling == "region"

    def with_query_settings(self, config: QuantizerConfig) -> SurrogateTextEncoder:
        """The same fitted encoder with ``config``'s query-side settings (query_weighting, query_gamma)."""
        changed = dataclasses.replace(self.config, **{name: getattr(config, name) for name in QUERY_SETTINGS})
        return SurrogateTextEncoder(changed, self.mean, self.rotation, self.doc_scale, self.model_fingerprint)

    @property
    def n_components(self) -> int:
        """2 * D: the CReLU-split dimension, i.e. the vocabulary size."""
        return 2 * self.dim

    @property
    def gamma(self) -> int:
        """Components kept per single document vector (regions, region documents)."""
        return min(self.config.gamma, self.n_components)

    @property
    def doc_gamma(self) -> int:
        """Components kept per pooled document (n_components = no cap)."""
        if self.config.doc_gamma > 0:
            return min(self.config.doc_gamma, self.n_components)
        return self.gamma if self.config.doc_sparsify == "pooled" else self.n_components

    @property
    def query_gamma(self) -> int:
        """Components kept per query vector (per word with query_weighting="per-word")."""
        return min(self.config.query_gamma or self.config.gamma, self.n_components)

    @property
    def tf_step(self) -> float:
        """Embedding units per tf unit (doc_scale / Q): score * tf_step approximates P(q, v)."""
        return self.doc_scale / self.config.q_factor

    @property
    def vocabulary(self) -> list[str]:
        """Term names indexed by component (``p<i>`` / ``n<i>``)."""
        return self._vocabulary

    @property
    def fingerprint(self) -> str:
        """sha256 hex of mu, R, doc_scale, D and the document-side settings."""
        return self._fingerprint

    # --------------------------------------------------------------- encoding
    def transform(self, x: np.ndarray, role: str) -> np.ndarray:
        """Rotated vectors [N, D]: R (x - mu) for documents, R x for queries."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        arr = ops.check_vectors(x, self.dim, 2, f"{role} vectors")
        return ops.rotate(arr, self.rotation, self.mean if role == "document" else None)

    def encode_vectors(self, x: np.ndarray, role: str = "document") -> SparseEncoding:
        """Encode each vector of x [N, D] on its own.

        documents: top-gamma components of CReLU(R (x - mu)), int32 tf; queries: top
        query_gamma components of CReLU(R x), float64 weights in embedding units.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        arr = ops.check_vectors(x, self.dim, 2, f"{role} vectors")
        rows_per_chunk = max(1, _CHUNK_FLOATS // self.n_components)
        parts = []
        for start in range(0, arr.shape[0], rows_per_chunk):
            chunk = arr[start : start + rows_per_chunk]
            if role == "document":
                tf = ops.quantize_tf(
                    self._document_vector_values(chunk), 1.0 / self.tf_step, self.config.max_tf
                )
                parts.append(dense_to_sparse(tf))
            else:
                values = ops.crelu(ops.rotate(chunk, self.rotation, None)).astype(np.float64)
                parts.append(dense_to_sparse(ops.keep_top_k(values, self.query_gamma)))
        return concatenate(parts, self.n_components, np.int32 if role == "document" else np.float64)

    def encode_images(self, regions: np.ndarray, mask: np.ndarray | None = None) -> DocumentBatch:
        """Documents of images: regions float [N_img, R, D], mask bool [N_img, R] (None = all valid).

        pooling "max"/"sum": one document per image (see :meth:`_document_values` for the
        order of sparsification and pooling); "region": one document per valid region.
        """
        arr = ops.check_vectors(regions, self.dim, 3, "regions")
        region_mask = ops.check_mask(mask, arr.shape[:2], "mask")
        step = self._images_per_chunk(arr.shape[1])
        parts, image_rows, slots = [], [], []
        for start in range(0, arr.shape[0], step):
            values, rows, chunk_slots = self._document_values(
                arr[start : start + step], region_mask[start : start + step]
            )
            parts.append(dense_to_sparse(ops.quantize_tf(values, 1.0 / self.tf_step, self.config.max_tf)))
            image_rows.append(rows + start)
            slots.append(chunk_slots)
        return DocumentBatch(
            concatenate(parts, self.n_components, np.int32),
            np.concatenate(image_rows) if image_rows else np.zeros(0, np.int64),
            np.concatenate(slots) if slots else np.zeros(0, np.int64),
        )

    def encode_queries(
        self, words: np.ndarray, mask: np.ndarray | None = None, mode: str | None = None
    ) -> SparseEncoding:
        """Queries from sentences: words float [B, W, D], mask bool [B, W]; float64 weights.

        mode "sum": top query_gamma of sum_w CReLU(R w); "per-word": sum over words of each
        word's top query_gamma components of CReLU(R w). None = config.query_weighting.
        """
        mode = self.config.query_weighting if mode is None else mode
        if mode not in QUERY_MODES:
            raise ValueError(f"query mode must be one of {QUERY_MODES}, got {mode!r}")
        arr = ops.check_vectors(words, self.dim, 3, "words")
        word_mask = ops.check_mask(mask, arr.shape[:2], "mask")
        step = max(1, _CHUNK_FLOATS // max(1, arr.shape[1] * self.n_components))
        parts = []
        for start in range(0, arr.shape[0], step):
            chunk = arr[start : start + step]
            rotated = ops.rotate(chunk.reshape(-1, self.dim), self.rotation, None)
            values = (
                ops.crelu(rotated)
                .astype(np.float64)
                .reshape(chunk.shape[0], chunk.shape[1], self.n_components)
            )
            values = np.where(word_mask[start : start + step, :, None], values, 0.0)
            if mode == "per-word":
                pooled = ops.keep_top_k(values, self.query_gamma).sum(axis=1)
            else:
                pooled = ops.keep_top_k(values.sum(axis=1), self.query_gamma)
            parts.append(dense_to_sparse(pooled))
        return concatenate(parts, self.n_components, np.float64)

    def query(self, words: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
        """One sentence's query, words float [W, D] (+ bool mask [W]): ``{term: weight}``, summed."""
        return self.query_terms(words, mask)

    def query_terms(
        self, words: np.ndarray, mask: np.ndarray | None = None, mode: str | None = None
    ) -> dict[str, float]:
        """One sentence's query, words float [W, D] (+ bool mask [W]), as ``{term: weight}``."""
        arr = ops.check_vectors(words, self.dim, 2, "words")
        batch_mask = None if mask is None else ops.check_mask(mask, arr.shape[:1], "mask")[None]
        return self.document_terms(self.encode_queries(arr[None], batch_mask, mode), 0)

    def document_terms(self, encoding: SparseEncoding, row: int) -> dict:
        """Row ``row`` of an encoding as ``{term: tf}`` (documents) or ``{term: weight}`` (queries)."""
        return row_terms(encoding, row, self._vocabulary)

    def term_dicts(self, encoding: SparseEncoding) -> list[dict]:
        """Every row of an encoding as a ``{term: value}`` dict."""
        return all_row_terms(encoding, self._vocabulary)

    # ---------------------------------------------------------------- internals
    def _images_per_chunk(self, regions_per_image: int) -> int:
        return max(1, _CHUNK_FLOATS // max(1, regions_per_image * self.n_components))

    def _document_vector_values(self, vectors: np.ndarray) -> np.ndarray:
        """[N, 2D] kept values (top gamma of CReLU(R (v - mu))) of single document vectors."""
        return ops.keep_top_k(ops.crelu(ops.rotate(vectors, self.rotation, self.mean)), self.gamma)

    def _document_values(
        self, regions: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kept, unquantised document values for a chunk of images.

        regions [B, R, D], mask bool [B, R] | None -> (values [n_docs, 2D], image_rows [n_docs],
        region_slots [n_docs]). Pooled modes: CReLU'd regions are sparsified to the top gamma
        first when doc_sparsify == "regions", pooled ("max"/"sum"), then cut to the top doc_gamma
        (doc_gamma = no cap for "regions" unless set). "region": each valid region's top gamma.
        """
        n_images, n_regions, dim = regions.shape
        rotated = ops.rotate(regions.reshape(-1, dim), self.rotation, self.mean)
        values = ops.crelu(rotated).reshape(n_images, n_regions, self.n_components)
        if mask is None:
            mask = np.ones((n_images, n_regions), dtype=bool)
        if self.config.pooling == "region":
            image_rows, slots = np.nonzero(mask)
            kept = ops.keep_top_k(values[image_rows, slots], self.gamma)
            return kept, image_rows.astype(np.int64), slots.astype(np.int64)
        if self.config.doc_sparsify == "regions":
            values = ops.keep_top_k(values, self.gamma)
        pooled = ops.keep_top_k(ops.pool_regions(values, mask, self.config.pooling), self.doc_gamma)
        return pooled, np.arange(n_images, dtype=np.int64), np.full(n_images, -1, dtype=np.int64)

    def _compute_fingerprint(self) -> str:
        settings = {name: getattr(self.config, name) for name in DOCUMENT_SETTINGS}
        digest = hashlib.sha256()
        digest.update(FORMAT.encode())
        digest.update(json.dumps({"dim": self.dim, "settings": settings}, sort_keys=True).encode())
        digest.update(self.mean.astype("<f4").tobytes())
        digest.update(self.rotation.astype("<f4").tobytes())
        digest.update(np.float64(self.doc_scale).astype("<f8").tobytes())
        return digest.hexdigest()

    # ----------------------------------------------------------- serialisation
    def metadata(self) -> dict:
        """JSON-able description: format, dim, doc_scale, full config, fingerprint, numpy version."""
        return encoder_metadata(FORMAT, self, doc_scale=self.doc_scale)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write mu, R, doc_scale and the JSON metadata to one .npz file (atomically)."""
        arrays = {"mean": self.mean, "rotation": self.rotation, "doc_scale": np.float64(self.doc_scale)}
        return write_encoder_file(path, self.metadata(), arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SurrogateTextEncoder:
        """Read a file written by :meth:`save`; raises EncoderFileError if it is not one or was altered."""
        from teran_es.surrogate.loading import load_encoder

        encoder = load_encoder(path)
        if not isinstance(encoder, cls):
            raise EncoderFileError(f"{path}: holds a {type(encoder).__name__}, not a {cls.__name__}")
        return encoder

    @classmethod
    def from_arrays(cls, data, metadata: dict, where: str) -> SurrogateTextEncoder:
        """Rebuild an encoder from the arrays and metadata :meth:`save` wrote; checks the fingerprint."""
        try:
            mean, rotation, doc_scale = data["mean"], data["rotation"], float(data["doc_scale"])
        except KeyError as exc:
            raise EncoderFileError(f"{where}: not a surrogate-text encoder file ({exc})") from None
        config = config_from_dict(metadata.get("config", {}), where)
        encoder = cls(config, mean, rotation, doc_scale, str(metadata.get("model_fingerprint", "")))
        check_fingerprint(encoder.fingerprint, metadata, where)
        return encoder

    def __repr__(self) -> str:
        return (
            f"SurrogateTextEncoder(dim={self.dim}, pooling={self.config.pooling!r}, gamma={self.gamma}, "
            f"doc_gamma={self.doc_gamma}, Q={self.config.q_factor}, fingerprint={self.fingerprint[:12]})"
        )
