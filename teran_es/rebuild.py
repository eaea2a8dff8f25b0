"""Rebuild a pipeline's Elasticsearch index without downtime: ``teran-es ingest --rebuild``.

Every image of the feature store is encoded again with the work directory's first stage (the
saved quantizer: a new one must be put there first) into a new index with the pipeline's current
index settings (``elasticsearch.shards`` / ``replicas``, rerank codes with
``store.location="elasticsearch"``) behind the same alias; searches answer from the old index until
the alias switches (``index.elastic_rebuild``). What a hit shows (path, caption) is copied from
the old index. The source images are not needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from teran_es.errors import ConfigError
from teran_es.index import SurrogateDocument
from teran_es.indexer import Ingestor, ShownFields
from teran_es.workdir import WorkdirNotFoundError

if TYPE_CHECKING:
    from teran_es.index.elastic_rebuild import RebuildReport

CHUNK = 512  # images per store read and bulk stream


def rebuild_index(
    ingestor: Ingestor, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> RebuildReport:
    """Rebuild ``ingestor``'s Elasticsearch index from its feature store behind the same alias.

    Returns the ``RebuildReport``; raises ``RebuildError`` (alias left on the old index) when the
    new index cannot be completed or checked.
    """
    config = ingestor.config
    if config.index.backend != "elasticsearch":
        raise ConfigError(
            f"--rebuild switches an Elasticsearch alias; the {config.index.backend} backend has no alias. "
            "Delete its index directory and ingest again instead."
        )
    if ingestor.quantizer is None or len(ingestor.store) == 0:
        raise WorkdirNotFoundError(f"pipeline {config.name!r} has nothing ingested yet: ingest a source first")
    from teran_es.index.elastic import ElasticIndex
    from teran_es.index.elastic_rebuild import rebuild_behind_alias

    meta = ingestor.index_meta()
    # The old index is opened without a fingerprint check: a rebuild exists to change them.
    current = ElasticIndex.open(config.elasticsearch, config.resolved_index_name(), create=False)
    try:
        def fill(new: ElasticIndex) -> tuple[int, int]:
            sent = failed = 0
            ids = ingestor.store.ids()
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                shown = _shown_fields(current.get_many(ingestor._probe_ids(part)).values())
                regions, mask = ingestor.store.get_many(part)
                docs = ingestor._documents(part, regions.numpy(), mask.numpy(), shown)
                result = new.add(docs)
                sent, failed = sent + len(docs), failed + result.failed
                if progress is not None:
                    progress(len(part))
            return sent, failed

        return rebuild_behind_alias(current, meta, fill)
    finally:
        current.close()


def _shown_fields(docs) -> dict[str, ShownFields]:
    """Image id -> what its hit shows, from the old index's documents."""
    shown: dict[str, ShownFields] = {}
    for doc in docs:
        assert isinstance(doc, SurrogateDocument)
        image_id = str((doc.metadata or {}).get("image_id") or doc.id)
        shown[image_id] = ShownFields(doc.path, [doc.caption] if doc.caption else [])
    return shown
