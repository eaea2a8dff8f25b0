"""Index backends behind one protocol (see ``base.Index``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from teran_es.config import PipelineConfig
from teran_es.errors import ConfigError
from teran_es.index.base import (
    AddReport,
    Index,
    IndexError_,
    IndexHit,
    IndexMismatchError,
    IndexUnavailableError,
    InvalidDocumentError,
    SurrogateDocument,
)

__all__ = [
    "AddReport",
    "Index",
    "IndexError_",
    "IndexHit",
    "IndexMismatchError",
    "IndexUnavailableError",
    "InvalidDocumentError",
    "SurrogateDocument",
    "open_index",
    "embedded_index_path",
    "dead_letter_path",
]


def embedded_index_path(config: PipelineConfig) -> Path:
    return Path(config.index.path) if config.index.path else config.resolved_workdir() / "index"


def dead_letter_path(config: PipelineConfig) -> Path:
    """Where the pipeline's index writes the documents it could not index (JSON lines)."""
    if config.index.backend == "embedded":
        from teran_es.index.embedded import DEAD_LETTER

        return embedded_index_path(config) / DEAD_LETTER
    if config.elasticsearch.dead_letter_path:
        return Path(config.elasticsearch.dead_letter_path)
    return config.resolved_workdir() / "dead-letter.jsonl"


def open_index(
    config: PipelineConfig,
    create: bool = True,
    meta: Mapping[str, Any] | None = None,
    read_only: bool = False,
) -> Index:
    """Open the pipeline's index on its configured backend (imports Elasticsearch only when used).

    ``read_only`` lets searchers open an embedded index that a writer holds (a snapshot).
    """
    backend = config.index.backend
    if backend == "embedded":
        from teran_es.index.embedded import EmbeddedIndex

        return EmbeddedIndex.open(
            embedded_index_path(config),
            create=create and not read_only,
            meta=meta,
            name=config.resolved_index_name(),
            read_only=read_only,
        )
    if backend == "elasticsearch":
        from teran_es.index.elastic import ElasticIndex

        return ElasticIndex.open(
            config.elasticsearch,
            config.resolved_index_name(),
            create=create,
            meta=meta,
            dead_letter_path=dead_letter_path(config),
        )
    raise ConfigError(f"unknown index backend {backend!r} (use 'embedded' or 'elasticsearch')")
