"""Writing documents to Elasticsearch in bulk: ``streaming_bulk`` with its retries and backoff,
rejected documents to a dead-letter file, and what a caller needs to resume after a lost
connection. One of the three modules that import ``elasticsearch`` (with ``elastic.py`` and
``elastic_server.py``).
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from elasticsearch import Elasticsearch, helpers

from teran_es.config import ElasticsearchConfig
from teran_es.index import es_queries
from teran_es.index.base import AddReport, IndexError_, InvalidDocumentError, SurrogateDocument
from teran_es.index.elastic_server import error_summary, translated_errors
from teran_es.index.terms import validate_document

logger = logging.getLogger(__name__)

# Statuses the client's transport retries on its own for bulk requests: its default without 429
# (Too Many Requests), which ``streaming_bulk`` retries with backoff instead.
TRANSPORT_RETRY_STATUSES = (502, 503, 504)


class DeadLetterFile:
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


def bulk_index(
    client: Elasticsearch,
    index: str,
    docs: Iterable[SurrogateDocument],
    config: ElasticsearchConfig,
    dead_letter_path: Path,
    where: str,
) -> AddReport:
    """Stream ``docs`` into ``index`` through ``helpers.streaming_bulk``.

    Invalid documents and items the server rejects go to the dead-letter file. A lost
    connection raises ``IndexUnavailableError`` after counting what was acknowledged:
    acknowledged documents stay indexed, and ids are stable, so re-running the same
    ingest is safe and completes it.
    """
    report = AddReport()
    dead = DeadLetterFile(dead_letter_path)
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
            yield es_queries.index_action(index, doc)

    def settle(doc_id: str) -> SurrogateDocument | None:
        queue = in_flight.get(doc_id)
        if not queue:
            return None
        doc = queue.popleft()
        if not queue:
            del in_flight[doc_id]
        return doc

    try:
        with translated_errors("indexing documents", where, index):
            for ok, item in helpers.streaming_bulk(
                # 429 is retried by the helper only, after its capped backoff: the transport
                # would otherwise resend a rejected bulk request at once, three more times.
                client.options(retry_on_status=TRANSPORT_RETRY_STATUSES),
                actions(),
                chunk_size=config.bulk_chunk_docs,
                max_chunk_bytes=config.bulk_chunk_bytes,
                max_retries=config.bulk_max_retries,
                initial_backoff=config.bulk_initial_backoff,
                max_backoff=config.bulk_max_backoff,
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
                    summary = error_summary(info)
                    rejected_kinds[summary.split(":", 1)[0]] += 1
                    dead.write(info.get("_id") or (doc.id if doc else "?"), summary, doc, info.get("status"))
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


def bulk_delete(
    client: Elasticsearch, index: str, ids: Iterable[str], config: ElasticsearchConfig, where: str
) -> int:
    """Delete ``ids`` from ``index`` in bulk; returns how many were there. An id that was not
    there is fine; any other refusal raises ``IndexError_``."""
    deleted = 0
    with translated_errors("deleting documents", where, index):
        for _ok, item in helpers.streaming_bulk(
            client,
            es_queries.delete_actions(index, ids),
            chunk_size=config.bulk_chunk_docs,
            max_retries=config.bulk_max_retries,
            initial_backoff=config.bulk_initial_backoff,
            max_backoff=config.bulk_max_backoff,
            raise_on_error=False,
        ):
            info = item["delete"]
            if info.get("result") == "deleted":
                deleted += 1
            elif info.get("status") != 404:  # 404: the id was not there, which is fine
                raise IndexError_(f"could not delete {info.get('_id')!r}: {error_summary(info)}")
    return deleted
