"""The Elasticsearch backend: ``ElasticIndex``, the ``Index`` over one Elasticsearch index, reached
through its alias (``elastic_alias.py``).

This module opens the index and searches and reads it; connecting, the server check, index
creation and error translation are ``elastic_server.py``, bulk writes with retries and
dead letters ``elastic_bulk.py``. These three are the only modules of teran-es that import
``elasticsearch``. Request bodies come from ``es_queries`` (pure), the index definition from
``mappings/``, the server address and credentials from ``connection``. Every client error is
translated into an ``IndexError_`` subclass whose message says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from teran_es.config import ElasticsearchConfig
from teran_es.errors import ConfigError
from teran_es.index import elastic_alias, es_queries
from teran_es.index.base import (
    AddReport,
    IndexError_,
    IndexHit,
    IndexUnavailableError,
    Query,
    SurrogateDocument,
)
from teran_es.index.connection import resolve_connection
from teran_es.index.elastic_bulk import bulk_delete, bulk_index
from teran_es.index.elastic_server import (
    CLIENT_VERSION,
    DocumentNotFound,
    check_index,
    check_server,
    create_index,
    error_summary,
    server_version_of,
    translated_errors,
)
from teran_es.index.terms import validate_query

# Re-exported: the names callers (benchmarks, tests) know this backend by.
__all__ = ["CLIENT_VERSION", "MGET_BATCH", "ElasticIndex", "server_version_of", "translated_errors"]

# Ids per mget request in ``existing_ids`` and ``get_many``.
MGET_BATCH = 1000


class ElasticIndex:
    """One Elasticsearch index of surrogate documents (see ``base.Index``)."""

    def __init__(
        self,
        client: Elasticsearch,
        name: str,
        meta: Mapping[str, Any],
        config: ElasticsearchConfig,
        where: str,
        dead_letter_path: Path,
        formulation: str,
        owns_client: bool,
        server_version: str,
        target: elastic_alias.Target | None = None,
    ):
        self.name = name  # what every request addresses: the alias (or an older teran-es's index)
        self.target = target or elastic_alias.Target(name, name, legacy=True)
        self.server_version = server_version
        self.formulation = formulation
        self.dead_letter_path = dead_letter_path
        self._client = client
        self._meta = dict(meta)
        self._config = config
        self._where = where
        self._owns_client = owns_client

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        config: ElasticsearchConfig,
        name: str,
        create: bool = True,
        meta: Mapping[str, Any] | None = None,
        client: Elasticsearch | None = None,
        dead_letter_path: str | Path | None = None,
        formulation: str | None = None,
    ) -> ElasticIndex:
        """Connect, check the server, then create the index (recording ``meta``) or open it and
        check its fingerprints against ``meta``.

        ``name`` is an alias: a new index is created as ``<name>-000001`` with the alias on it;
        an existing alias must point at exactly one index, which must not be red. A concrete
        index called ``name`` (made by an older teran-es) is used as it is; ``teran-es ingest
        --rebuild`` turns it into an alias without downtime."""
        formulation = formulation or config.query_formulation or es_queries.DEFAULT_FORMULATION
        if formulation not in es_queries.FORMULATIONS:
            raise ConfigError(
                f"unknown query formulation {formulation!r} (known: {', '.join(es_queries.FORMULATIONS)})"
            )
        owns_client = client is None
        if client is None:
            settings = resolve_connection(config)
            where = settings.describe()
            client = Elasticsearch(**settings.client_kwargs())
        else:
            where = "the given Elasticsearch client"
        try:
            version = check_server(client, where)
            target = _open_target(client, name, config, meta, create, where)
            recorded = check_index(client, target.concrete, meta, where, _label(target))
        except BaseException:
            if owns_client:
                client.close()
            raise
        dead_letter = Path(
            dead_letter_path or config.dead_letter_path or f"{name}.dead-letter.jsonl"
        ).absolute()
        return cls(client, name, recorded, config, where, dead_letter, formulation, owns_client, version, target)

    @property
    def client(self) -> Elasticsearch:
        """The client (for the rebuild and the tests; owned by this index when it made it)."""
        return self._client

    @property
    def where(self) -> str:
        """The server, described without secrets."""
        return self._where

    @property
    def config(self) -> ElasticsearchConfig:
        return self._config

    # -- the Index protocol -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def add(self, docs: Iterable[SurrogateDocument]) -> AddReport:
        """Stream documents in bulk (``elastic_bulk.bulk_index``): invalid or rejected ones go to
        the dead-letter file; a lost connection raises after counting what was acknowledged,
        and re-running the same ingest completes it (ids are stable)."""
        return bulk_index(self._client, self.name, docs, self._config, self.dead_letter_path, self._where)

    def search(self, query: Query, k: int) -> list[IndexHit]:
        validate_query(query)
        if k <= 0:
            return []
        body = es_queries.search_body(query, k, self.formulation)
        with self._translated("searching"):
            # all shards or an error: never a silent part of the collection (a node lost, no replica)
            response = self._client.search(index=self.name, body=body, allow_partial_search_results=False)
        return _hits(response["hits"]["hits"])

    def search_with_codes(self, query: Query, k: int) -> tuple[list[IndexHit], dict[str, str]]:
        """``search``, with each hit's packed rerank codes (``store.wire``) fetched in the same
        request; needs an index created with ``rerank_codes`` in its metadata."""
        validate_query(query)
        if k <= 0:
            return [], {}
        body = es_queries.search_body(query, k, self.formulation, with_codes=True)
        with self._translated("searching with rerank codes"):
            response = self._client.search(index=self.name, body=body, allow_partial_search_results=False)
        raw = response["hits"]["hits"]
        codes = {}
        for h in raw:
            values = h.get("fields", {}).get(es_queries.RERANK_CODES_FIELD)
            if not values:
                raise IndexError_(
                    f"document {h['fields'][es_queries.ID_FIELD][0]!r} of {self.name!r} carries no rerank codes; "
                    "rebuild the index with store.location=elasticsearch (`teran-es ingest --rebuild`)"
                )
            codes[h["fields"][es_queries.ID_FIELD][0]] = values[0]
        return _hits(raw), codes

    def search_many(self, queries: Sequence[Query], k: int) -> list[list[IndexHit]]:
        """One ``_msearch`` per ``msearch_batch`` queries; results in query order."""
        for query in queries:
            validate_query(query)
        if k <= 0:
            return [[] for _ in queries]
        results: list[list[IndexHit]] = []
        for batch in es_queries.batched(list(queries), self._config.msearch_batch):
            body = es_queries.msearch_body(self.name, batch, k, self.formulation)
            with self._translated("searching (msearch)"):
                response = self._client.msearch(searches=body)
            for position, answer in enumerate(response["responses"]):
                if "error" in answer:
                    raise IndexError_(
                        f"Elasticsearch failed query {len(results) + position} of the batch on {self._where}: "
                        f"{error_summary(answer)}"
                    )
                results.append(_hits(answer["hits"]["hits"]))
        return results

    def get(self, doc_id: str) -> SurrogateDocument | None:
        try:
            with self._translated("reading a document"):
                # The server keeps vectors out of _source; ask for them back.
                response = self._client.get(index=self.name, id=doc_id, source_exclude_vectors=False)
        except DocumentNotFound:
            return None
        return es_queries.document_from_source(response["_id"], response["_source"])

    def get_many(self, ids: Sequence[str]) -> dict[str, SurrogateDocument]:
        found: dict[str, SurrogateDocument] = {}
        for batch in es_queries.batched(list(ids), MGET_BATCH):
            with self._translated("reading documents"):
                # only what a hit shows: the terms are the bulk of a stored document
                response = self._client.mget(
                    index=self.name, ids=list(batch), source_includes=list(es_queries.DISPLAY_FIELDS)
                )
            for doc in response["docs"]:
                if doc.get("found"):
                    found[doc["_id"]] = es_queries.document_from_source(doc["_id"], doc.get("_source") or {})
        return found

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for batch in es_queries.batched(list(ids), MGET_BATCH):
            with self._translated("checking existing ids"):
                response = self._client.mget(index=self.name, ids=list(batch), source=False)
            found.update(d["_id"] for d in response["docs"] if d.get("found"))
        return found

    def delete(self, ids: Iterable[str]) -> int:
        return bulk_delete(self._client, self.name, ids, self._config, self._where)

    def count(self) -> int:
        with self._translated("counting documents"):
            return int(self._client.count(index=self.name)["count"])

    def refresh(self) -> None:
        with self._translated("refreshing"):
            self._client.indices.refresh(index=self.name)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
            self._owns_client = False

    def __enter__(self) -> ElasticIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- maintenance and measurement (not part of the protocol) ------------------------------

    def delete_index(self) -> None:
        """Delete the whole index from the server, every concrete index behind the alias (tests, benchmarks)."""
        for index in elastic_alias.concrete_indexes(self._client, self.name, self._where):
            with self._translated("deleting the index"):
                self._client.indices.delete(index=index, ignore_unavailable=True)

    def flush(self) -> None:
        with self._translated("flushing"):
            self._client.indices.flush(index=self.name)

    def force_merge(self, max_num_segments: int = 1) -> None:
        """Merge segments (slow; makes the on-disk size and search speed of a finished index)."""
        with self._translated("force-merging"):
            self._client.options(request_timeout=3600).indices.forcemerge(
                index=self.name, max_num_segments=max_num_segments, wait_for_completion=True
            )

    def size_on_disk(self) -> int:
        """Bytes of the index's primary shards on the server's disk."""
        with self._translated("reading index statistics"):
            stats = self._client.indices.stats(index=self.name, metric="store")
        return sum(int(i["primaries"]["store"]["size_in_bytes"]) for i in stats["indices"].values())

    def segment_count(self) -> int:
        with self._translated("reading index statistics"):
            stats = self._client.indices.stats(index=self.name, metric="segments")
        return sum(int(i["primaries"]["segments"]["count"]) for i in stats["indices"].values())

    # -- errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        with translated_errors(action, self._where, self.name):
            yield

    def __repr__(self) -> str:
        return f"ElasticIndex(name={self.name!r}, server={self._where!r}, formulation={self.formulation!r})"


def _open_target(
    client: Elasticsearch,
    name: str,
    config: ElasticsearchConfig,
    meta: Mapping[str, Any] | None,
    create: bool,
    where: str,
) -> elastic_alias.Target:
    """The one index behind ``name``, created (first generation, alias on it) when allowed."""
    target = elastic_alias.resolve(client, name, where)
    if target is not None:
        elastic_alias.check_not_red(client, target, where)
        return target
    if not create:
        raise IndexUnavailableError(
            f"Elasticsearch index (or alias) {name!r} does not exist on {where}; ingest first (or check index.name)"
        )
    first = elastic_alias.generation_name(name, 1)
    create_index(client, first, config, meta, where, alias=name)
    target = elastic_alias.resolve(client, name, where)
    if target is None:
        raise IndexUnavailableError(
            f"index {first!r} exists on {where} but alias {name!r} does not point at it (a build that was "
            f"cut short?); delete index {first!r} and ingest again"
        )
    return target


def _label(target: elastic_alias.Target) -> str:
    return repr(target.alias) if target.legacy else f"{target.alias!r} (index {target.concrete!r})"


def _hits(raw: Sequence[Mapping[str, Any]]) -> list[IndexHit]:
    # Elasticsearch breaks score ties by internal document number; the protocol breaks them by id.
    hits = [IndexHit(id=h["fields"][es_queries.ID_FIELD][0], score=float(h["_score"])) for h in raw]
    hits.sort(key=lambda h: (-h.score, h.id))
    return hits
