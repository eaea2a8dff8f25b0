"""Index backends behind one protocol (see ``base.Index``), and the registry that knows them.

``BACKENDS`` is the one place that names the backends: how each is opened for a pipeline, its
class, and where it writes the documents it rejects. The CLI's ``--backend`` choices and
``index.backend`` come from it; a backend's module is imported only when that backend is used
(the Elasticsearch client is slow to import).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teran_es.config import PipelineConfig
from teran_es.errors import ConfigError
from teran_es.index.base import (
    AddReport,
    ExtendedIndex,
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
    "BACKENDS",
    "Backend",
    "ExtendedIndex",
    "Index",
    "IndexError_",
    "IndexHit",
    "IndexMismatchError",
    "IndexUnavailableError",
    "InvalidDocumentError",
    "SurrogateDocument",
    "backend_of",
    "dead_letter_path",
    "embedded_index_path",
    "open_index",
]

# open(config, create, meta, read_only) -> Index
Opener = Callable[[PipelineConfig, bool, Mapping[str, Any] | None, bool], Index]


@dataclass(frozen=True)
class Backend:
    """One index backend as a pipeline uses it."""

    index_class: Callable[[], type]  # the class implementing ``Index``, imported on call
    open: Opener
    dead_letter_path: Callable[[PipelineConfig], Path]  # rejected documents, JSON lines


def embedded_index_path(config: PipelineConfig) -> Path:
    """The embedded index's directory: ``index.path``, else ``<workdir>/index``."""
    return Path(config.index.path) if config.index.path else config.resolved_workdir() / "index"


def _embedded_class() -> type:
    from teran_es.index.embedded import EmbeddedIndex

    return EmbeddedIndex


def _open_embedded(config: PipelineConfig, create: bool, meta: Mapping[str, Any] | None, read_only: bool) -> Index:
    return _embedded_class().open(
        embedded_index_path(config),
        create=create and not read_only,
        meta=meta,
        name=config.resolved_index_name(),
        read_only=read_only,
    )


def _embedded_dead_letter(config: PipelineConfig) -> Path:
    from teran_es.index.embedded import DEAD_LETTER

    return embedded_index_path(config) / DEAD_LETTER  # kept with the index it belongs to


def _elastic_class() -> type:
    from teran_es.index.elastic import ElasticIndex

    return ElasticIndex


def _open_elastic(config: PipelineConfig, create: bool, meta: Mapping[str, Any] | None, read_only: bool) -> Index:
    # read_only matters to the embedded index's file lock only: a server serves readers and a writer at once
    return _elastic_class().open(
        config.elasticsearch,
        config.resolved_index_name(),
        create=create,
        meta=meta,
        dead_letter_path=_elastic_dead_letter(config),
    )


def _elastic_dead_letter(config: PipelineConfig) -> Path:
    if config.elasticsearch.dead_letter_path:
        return Path(config.elasticsearch.dead_letter_path)
    return config.resolved_workdir() / "dead-letter.jsonl"  # the server's index has no directory of ours


BACKENDS: dict[str, Backend] = {
    "embedded": Backend(_embedded_class, _open_embedded, _embedded_dead_letter),
    "elasticsearch": Backend(_elastic_class, _open_elastic, _elastic_dead_letter),
}


def backend_of(config: PipelineConfig) -> Backend:
    """The registry entry of ``config.index.backend``; an unknown name is a ConfigError."""
    try:
        return BACKENDS[config.index.backend]
    except KeyError:
        raise ConfigError(
            f"unknown index backend {config.index.backend!r} (known: {', '.join(BACKENDS)})"
        ) from None


def dead_letter_path(config: PipelineConfig) -> Path:
    """Where the pipeline's index writes the documents it could not index (JSON lines)."""
    return backend_of(config).dead_letter_path(config)


def open_index(
    config: PipelineConfig,
    create: bool = True,
    meta: Mapping[str, Any] | None = None,
    read_only: bool = False,
) -> Index:
    """Open the pipeline's index on its configured backend (imports that backend only).

    ``read_only`` lets searchers open an embedded index that a writer holds (a snapshot).
    """
    return backend_of(config).open(config, create, meta, read_only)
