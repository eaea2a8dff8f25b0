"""The Elasticsearch backend: the only module of teran-es that imports ``elasticsearch``.

Request bodies come from ``es_queries`` (pure), the index definition from ``mappings/``,
the server address and credentials from ``connection``. Every client error is translated
into an ``IndexError_`` subclass whose message says what to do.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import elasticsearch
from elasticsearch import Elasticsearch, helpers

import teran_es
from teran_es.config import ElasticsearchConfig
from teran_es.errors import ConfigError
from teran_es.index import es_queries
from teran_es.index.base import (
    TERMS_FIELD,
    AddReport,
    IndexError_,
    IndexHit,
    IndexMismatchError,
    IndexUnavailableError,
    InvalidDocumentError,
    Query,
    SurrogateDocument,
    check_meta,
)
from teran_es.index.connection import resolve_connection
from teran_es.index.mappings import CURRENT_VERSION, IMAGE_INDEX, load_mapping
from teran_es.index.terms import validate_document, validate_query

logger = logging.getLogger(__name__)

CLIENT_VERSION: str = elasticsearch.__versionstr__
# Ids per mget request in ``existing_ids``.
MGET_BATCH = 1000
# Statuses the client's transport retries on its own for bulk requests: its default without 429
# (Too Many Requests), which ``streaming_bulk`` retries with backoff instead.
TRANSPORT_RETRY_STATUSES = (502, 503, 504)


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _error_summary(body: Any) -> str:
    """``type: reason`` of an Elasticsearch error body (a bulk item error or a request error)."""
    error = body.get("error", body) if isinstance(body, Mapping) else body
    if isinstance(error, Mapping):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        caused = error.get("caused_by")
        if isinstance(caused, Mapping) and caused.get("reason"):
            reason = f"{reason} (caused by {caused.get('type')}: {caused.get('reason')})"
        return f"{kind}: {reason}"
    return str(error)


class _DeadLetterFile:
    """Rejected documents, one JSON line each, appended as they come (never held in memory).
    Opened on the first rejection, so a clean ingest leaves no file behind."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def write(
        self, doc_id: str, error: str, document: SurrogateDocument | None, status: int | None = None
    ) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        record: dict[str, Any] = {"id": doc_id, "error": error}
        if status is not None:
            record["status"] = status
        if document is not None:
            record["document"] = {
                "terms": dict(document.terms),
                "path": document.path,
                "caption": document.caption,
                "metadata": dict(document.metadata),
            }
        self._fh.write(json.dumps(record, default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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
    ):
        self.name = name
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
        check its fingerprints against ``meta``."""
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
            version = _check_server(client, where)
            recorded = _create_or_open(client, name, config, meta, create, where)
        except BaseException:
            if owns_client:
                client.close()
            raise
        dead_letter = Path(
            dead_letter_path or config.dead_letter_path or f"{name}.dead-letter.jsonl"
        ).absolute()
        return cls(client, name, recorded, config, where, dead_letter, formulation, owns_client, version)

    # -- the Index protocol -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def add(self, docs: Iterable[SurrogateDocument]) -> AddReport:
        """Stream documents through ``helpers.streaming_bulk``.

        Invalid documents and items the server rejects go to the dead-letter file. A lost
        connection raises ``IndexUnavailableError`` after counting what was acknowledged:
        acknowledged documents stay indexed, and ids are stable, so re-running the same
        ingest is safe and completes it.
        """
        report = AddReport()
        dead = _DeadLetterFile(self.dead_letter_path)
        # Documents sent whose outcome is not yet known: at most about one chunk.
        in_flight: dict[str, collections.deque[SurrogateDocument]] = {}
        rejected_kinds: collections.Counter[str] = collections.Counter()

        def actions() -> Iterator[dict[str, Any]]:
            for doc in docs:
                try:
                    validate_document(doc)
                except InvalidDocumentError as exc:
                    dead.write(doc.id, str(exc), doc)
                    report.failed += 1
                    rejected_kinds["invalid_document"] += 1
                    continue
                in_flight.setdefault(doc.id, collections.deque()).append(doc)
                yield es_queries.index_action(self.name, doc)

        def settle(doc_id: str) -> SurrogateDocument | None:
            queue = in_flight.get(doc_id)
            if not queue:
                return None
            doc = queue.popleft()
            if not queue:
                del in_flight[doc_id]
            return doc

        try:
            with self._translated("indexing documents"):
                for ok, item in helpers.streaming_bulk(
                    # 429 is retried by the helper only, after its capped backoff: the transport
                    # would otherwise resend a rejected bulk request at once, three more times.
                    self._client.options(retry_on_status=TRANSPORT_RETRY_STATUSES),
                    actions(),
                    chunk_size=self._config.bulk_chunk_docs,
                    max_chunk_bytes=self._config.bulk_chunk_bytes,
                    max_retries=self._config.bulk_max_retries,
                    initial_backoff=self._config.bulk_initial_backoff,
                    max_backoff=self._config.bulk_max_backoff,
                    raise_on_error=False,
                    # Transport failures are not the documents' fault: raise, do not dead-letter.
                    raise_on_exception=True,
                ):
                    info = next(iter(item.values()))
                    doc = settle(info.get("_id"))
                    if ok:
                        report.indexed += 1
                    else:
                        report.failed += 1
                        summary = _error_summary(info)
                        rejected_kinds[summary.split(":", 1)[0]] += 1
                        dead.write(
                            info.get("_id") or (doc.id if doc else "?"), summary, doc, info.get("status")
                        )
        except IndexError_ as exc:
            # Keep the kind of failure (unavailable, refused), add what the caller needs to resume.
            pending = sum(len(q) for q in in_flight.values())
            raise type(exc)(
                f"{exc} -- {report.indexed} documents were acknowledged and stay indexed; {pending} were in "
                "flight without an answer. Re-run the same ingest once the server is back: document ids are "
                "stable, so documents sent again replace themselves."
            ) from exc.__cause__
        finally:
            dead.close()
        if dead.count:
            report.dead_letter_path = str(dead.path)
            logger.warning(
                "%d documents rejected (%s); written to %s",
                dead.count,
                ", ".join(f"{kind} x{n}" for kind, n in rejected_kinds.most_common()),
                dead.path,
            )
        return report

    def search(self, query: Query, k: int) -> list[IndexHit]:
        validate_query(query)
        if k <= 0:
            return []
        body = es_queries.search_body(query, k, self.formulation)
        with self._translated("searching"):
            response = self._client.search(index=self.name, body=body)
        return _hits(response["hits"]["hits"])

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
                        f"{_error_summary(answer)}"
                    )
                results.append(_hits(answer["hits"]["hits"]))
        return results

    def get(self, doc_id: str) -> SurrogateDocument | None:
        try:
            with self._translated("reading a document"):
                # The server keeps vectors out of _source; ask for them back.
                response = self._client.get(index=self.name, id=doc_id, source_exclude_vectors=False)
        except _DocumentNotFound:
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
        deleted = 0
        with self._translated("deleting documents"):
            for _ok, item in helpers.streaming_bulk(
                self._client,
                es_queries.delete_actions(self.name, ids),
                chunk_size=self._config.bulk_chunk_docs,
                max_retries=self._config.bulk_max_retries,
                initial_backoff=self._config.bulk_initial_backoff,
                max_backoff=self._config.bulk_max_backoff,
                raise_on_error=False,
            ):
                info = item["delete"]
                if info.get("result") == "deleted":
                    deleted += 1
                elif info.get("status") != 404:  # 404: the id was not there, which is fine
                    raise IndexError_(f"could not delete {info.get('_id')!r}: {_error_summary(info)}")
        return deleted

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
        """Delete the whole index from the server (tests, benchmarks)."""
        with self._translated("deleting the index"):
            self._client.indices.delete(index=self.name, ignore_unavailable=True)

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
        return int(stats["indices"][self.name]["primaries"]["store"]["size_in_bytes"])

    def segment_count(self) -> int:
        with self._translated("reading index statistics"):
            stats = self._client.indices.stats(index=self.name, metric="segments")
        return int(stats["indices"][self.name]["primaries"]["segments"]["count"])

    # -- errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        with translated_errors(action, self._where, self.name):
            yield

    def __repr__(self) -> str:
        return f"ElasticIndex(name={self.name!r}, server={self._where!r}, formulation={self.formulation!r})"


class _DocumentNotFound(IndexError_):
    """Internal: ``get`` of an id that is not in the (existing) index."""


@contextlib.contextmanager
def translated_errors(action: str, where: str, index: str | None = None) -> Iterator[None]:
    """Turn client exceptions into ``IndexError_`` subclasses with an actionable message."""
    try:
        yield
    except IndexError_:
        raise
    except elasticsearch.NotFoundError as exc:
        if isinstance(exc.body, Mapping) and exc.body.get("found") is False:
            raise _DocumentNotFound(str(exc)) from None
        raise IndexUnavailableError(
            f"Elasticsearch index {index!r} does not exist on {where} ({_error_summary(exc.body)}); "
            "create it by ingesting, or check the index name"
        ) from exc
    except elasticsearch.AuthenticationException as exc:
        raise IndexUnavailableError(
            f"Elasticsearch at {where} refused the credentials while {action}: authentication failed (401). "
            "Set ELASTICSEARCH_API_KEY, or ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD, to valid credentials."
        ) from exc
    except elasticsearch.AuthorizationException as exc:
        raise IndexUnavailableError(
            f"the credentials for {where} may not do this: {action} on index {index!r} (403: "
            f"{_error_summary(exc.body)}). Grant the role read/write/manage on the index."
        ) from exc
    except elasticsearch.UnsupportedProductError as exc:
        raise IndexUnavailableError(f"the server at {where} is not Elasticsearch: {exc}") from exc
    except elasticsearch.ApiError as exc:
        hint = ""
        if exc.status_code == 413:
            hint = " Lower elasticsearch.bulk_chunk_bytes."
        elif exc.status_code == 429:
            hint = " The server is overloaded; retry later or lower the ingest rate."
        raise IndexError_(
            f"Elasticsearch at {where} refused {action} ({exc.status_code} {_error_summary(exc.body)}).{hint}"
        ) from exc
    except elasticsearch.ConnectionTimeout as exc:
        raise IndexUnavailableError(
            f"Elasticsearch at {where} did not answer in time while {action}. Is it overloaded? "
            "Raise elasticsearch.request_timeout if it is just slow."
        ) from exc
    except elasticsearch.SSLError as exc:
        raise IndexUnavailableError(
            f"TLS failed talking to {where}: {exc.message}. Point ELASTICSEARCH_CA_CERTS (or elasticsearch.ca_certs) "
            "at the cluster's CA certificate."
        ) from exc
    except elasticsearch.ConnectionError as exc:
        raise IndexUnavailableError(
            f"cannot reach Elasticsearch at {where} while {action}: {exc.message}. Start the local one with "
            "`teran-es elasticsearch start`, or set ELASTICSEARCH_URL to a running cluster."
        ) from exc
    except elasticsearch.TransportError as exc:
        raise IndexUnavailableError(
            f"talking to Elasticsearch at {where} failed while {action}: {exc}"
        ) from exc


def _hits(raw: Sequence[Mapping[str, Any]]) -> list[IndexHit]:
    # Elasticsearch breaks score ties by internal document number; the protocol breaks them by id.
    hits = [IndexHit(id=h["fields"][es_queries.ID_FIELD][0], score=float(h["_score"])) for h in raw]
    hits.sort(key=lambda h: (-h.score, h.id))
    return hits


def server_version_of(client: Elasticsearch) -> str:
    """The server's version: ``GET /``, or the local node's info where ``/`` is not served
    (the minimal integ-test distribution answers ``GET /`` with 405)."""
    try:
        return str(client.info()["version"]["number"])
    except elasticsearch.ApiError as exc:
        if exc.status_code not in (404, 405):
            raise
    nodes = client.nodes.info(node_id="_local", filter_path="nodes.*.version")["nodes"]
    return str(next(iter(nodes.values()))["version"])


def _check_server(client: Elasticsearch, where: str) -> str:
    """The server's version, after checking it answers and shares the client's major version."""
    try:
        with translated_errors("checking the server", where):
            version = server_version_of(client)
    except IndexError_ as exc:
        cause = exc.__cause__
        if isinstance(cause, elasticsearch.ApiError) and "media_type_header_exception" in str(cause.body):
            # An older server rejects the client's "compatible-with=<major>" header.
            raise IndexUnavailableError(
                f"the server at {where} is older than Elasticsearch {_major(CLIENT_VERSION)}.x, which this "
                f"client ({CLIENT_VERSION}) needs. Use a {_major(CLIENT_VERSION)}.x cluster, or "
                "`teran-es elasticsearch start`."
            ) from cause
        if isinstance(exc, IndexUnavailableError):
            raise
        raise IndexUnavailableError(f"{exc} Is the URL that of an Elasticsearch server?") from cause
    if _major(version) != _major(CLIENT_VERSION):
        raise IndexUnavailableError(
            f"the server at {where} runs Elasticsearch {version}, but this teran-es uses the {CLIENT_VERSION} "
            f"client: the major versions must match. Use a {_major(CLIENT_VERSION)}.x cluster (e.g. "
            "`teran-es elasticsearch start`), or install the matching `elasticsearch` Python package."
        )
    return version


def _create_or_open(
    client: Elasticsearch,
    name: str,
    config: ElasticsearchConfig,
    meta: Mapping[str, Any] | None,
    create: bool,
    where: str,
) -> dict[str, Any]:
    """Create the index from the shipped mapping, or open and check an existing one. Returns its ``_meta``."""
    with translated_errors("opening the index", where, name):
        exists = bool(client.indices.exists(index=name))
        if not exists:
            if not create:
                raise IndexUnavailableError(
                    f"Elasticsearch index {name!r} does not exist on {where}; ingest first"
                )
            definition = es_queries.index_definition(
                load_mapping(IMAGE_INDEX, CURRENT_VERSION),
                {**dict(meta or {}), "created_by": f"teran-es {teran_es.__version__}"},
                shards=config.shards,
                replicas=config.replicas,
            )
            try:
                client.indices.create(
                    index=name, settings=definition["settings"], mappings=definition["mappings"]
                )
                client.cluster.health(index=name, wait_for_status="yellow", timeout="30s")
            except elasticsearch.BadRequestError as exc:
                if "resource_already_exists_exception" not in str(exc.body):
                    raise
                # Another process created it first: open it like any existing index.
        mapping = client.indices.get_mapping(index=name)
    body = mapping[name]["mappings"] if name in mapping else next(iter(mapping.values()))["mappings"]
    recorded = dict(body.get("_meta") or {})
    target = f"Elasticsearch index {name!r} on {where}"
    field_type = body.get("properties", {}).get(TERMS_FIELD, {}).get("type")
    if field_type != "sparse_vector" or recorded.get("mapping") != IMAGE_INDEX:
        raise IndexMismatchError(
            f"{target} is not a teran-es image index (its {TERMS_FIELD!r} field is {field_type!r}); "
            "choose another index name, or delete that index"
        )
    if int(recorded.get("mapping_version", 0)) > CURRENT_VERSION:
        raise IndexMismatchError(
            f"{target} uses mapping version {recorded.get('mapping_version')}, newer than this teran-es knows "
            f"({CURRENT_VERSION}); upgrade teran-es"
        )
    check_meta(recorded, meta or {}, target)
    return recorded
