"""The work directory of one collection: what is in it, and how its first stage is opened.

    <workdir>/config.toml       the resolved pipeline config of the first ingest
    <workdir>/quantizer.npz     the first-stage encoder (cell codebooks or the scalar quantizer),
                                fitted on the first ingest
    <workdir>/store/            region embeddings for the exact rerank
    <workdir>/index/            the embedded index (or the Elasticsearch index named in the config)
    <workdir>/skipped.jsonl     items that could not be ingested, with the reason
    <workdir>/bank_normalisers.parquet  each stored image's query-bank normaliser, when the
                                model carries a bank (normaliser_file.py)
    <workdir>/dead-letter.jsonl documents Elasticsearch rejected (the embedded index keeps its
                                own in <index>/)

The saved encoder is the truth about how the documents were built. ``open_quantizer``
compares it with the pipeline file: a document-side setting that differs is refused (only a
re-ingest could change it), and the query-side settings of the file are applied.
"""

from __future__ import annotations

from pathlib import Path

from teran_es.config import PipelineConfig
from teran_es.errors import ConfigError, TeranError
from teran_es.normaliser_file import NORMALISER_FILE
from teran_es.surrogate import FirstStageEncoder, cell_encoder, encoder, load_encoder

QUANTIZER_FILE = "quantizer.npz"
SKIPPED_FILE = "skipped.jsonl"
# Settings of each kind that shape the documents; 0 for these means "chosen at fit time".
_AUTOMATIC_WHEN_ZERO = ("cells", "coarse_cells")


class QuantizerMismatchError(TeranError, ValueError):
    """The pipeline asks for a first stage other than the one the collection was indexed with."""


class WorkdirNotFoundError(TeranError, FileNotFoundError):
    """The pipeline's work directory holds no ingested collection yet (no saved first stage)."""


class Artifacts:
    """Paths of a pipeline's work directory."""

    def __init__(self, config: PipelineConfig):
        self.root = config.resolved_workdir()
        self.config = self.root / "config.toml"
        self.quantizer = self.root / QUANTIZER_FILE
        self.store = self.root / "store"
        self.skipped = self.root / SKIPPED_FILE
        self.normalisers = self.root / NORMALISER_FILE


STORE_LOCATIONS = ("local", "elasticsearch")


def index_meta(quantizer: FirstStageEncoder, model_fp: str, rerank_codes: str | None = None) -> dict:
    """What an index records about the encoder and model that built its documents, and the dtype
    of the region codes its documents carry for the rerank (``store.location="elasticsearch"``)."""
    meta = {"quantizer_fingerprint": quantizer.fingerprint, "model_fingerprint": model_fp}
    if rerank_codes:
        meta["rerank_codes"] = rerank_codes
    return meta


def rerank_codes_dtype(config: PipelineConfig) -> str | None:
    """The store dtype whose codes the index documents carry, or None when the rerank reads the
    local store only (``store.location``); refuses the combinations that cannot carry them."""
    location = config.store.location
    if location not in STORE_LOCATIONS:
        raise ConfigError(f"store.location={location!r}: choose one of {', '.join(STORE_LOCATIONS)}")
    if location == "local":
        return None
    if config.index.backend != "elasticsearch":
        raise ConfigError(
            f"store.location=elasticsearch keeps the rerank codes in the Elasticsearch index; the "
            f"{config.index.backend} backend is local anyway: use store.location=local"
        )
    if config.quantizer.kind != "cells" and config.quantizer.pooling == "region":
        raise ConfigError("store.location=elasticsearch needs one document per image; quantizer.pooling=region "
                          "makes one per region: choose max or sum pooling, or store.location=local")
    return config.store.dtype


def document_settings(kind: str) -> tuple[str, ...]:
    """The quantizer settings that change the documents of a first stage of ``kind``."""
    if kind == "cells":
        return cell_encoder.DOCUMENT_SETTINGS
    return ("kind", *encoder.DOCUMENT_SETTINGS, "sample_size", "seed")


def open_quantizer(config: PipelineConfig, path: Path | None = None, model_fingerprint: str = "") -> FirstStageEncoder:
    """The collection's saved encoder with the pipeline's query-side settings applied.

    Raises ``QuantizerMismatchError`` when the pipeline's document-side settings differ from
    the saved ones (or the encoder was fitted for another model), saying how to rebuild.
    """
    path = Artifacts(config).quantizer if path is None else path
    saved = load_encoder(path)
    wanted = config.quantizer
    differ = []
    for name in document_settings(saved.config.kind):
        have, want = getattr(saved.config, name), getattr(wanted, name)
        if name in _AUTOMATIC_WHEN_ZERO and want == 0:
            continue
        if have != want:
            differ.append(f"quantizer.{name} = {want!r} (indexed with {have!r})")
    rebuild = (
        f"Either keep the indexed settings, or rebuild: ingest into a new work directory and index "
        f"(--set workdir=... --set index.name=...), or delete {path.parent} and the index "
        f"{config.resolved_index_name()!r} and ingest again."
    )
    if differ:
        raise QuantizerMismatchError(
            f"the pipeline asks for {', '.join(differ)}, but the documents of {path.parent} were built "
            f"otherwise and only a new ingest can change that. {rebuild}"
        )
    if model_fingerprint and saved.model_fingerprint and saved.model_fingerprint != model_fingerprint:
        raise QuantizerMismatchError(
            f"the first stage in {path} was fitted on the regions of model {saved.model_fingerprint[:12]}, "
            f"not of the pipeline's model {model_fingerprint[:12]}. {rebuild}"
        )
    return saved.with_query_settings(wanted)
