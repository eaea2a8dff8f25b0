"""Retry of what the index rejected: ``teran-es ingest --retry-failed``.

An ingest writes the documents Elasticsearch rejected (after its own retries with backoff)
to the pipeline's dead-letter file. :func:`retry_failed` indexes those images again. Their
documents are rebuilt from the feature store with the pipeline's quantizer (what a fresh
ingest would send), so the source is not needed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

from teran_es.index import dead_letter_path
from teran_es.indexer import Ingestor, IngestReport, ShownFields
from teran_es.surrogate import FirstStageEncoder
from teran_es.surrogate.terms import parse_region_document_id
from teran_es.workdir import WorkdirNotFoundError

log = logging.getLogger(__name__)

# A dead-letter file being retried is moved aside under this suffix until the retry is done.
RETRYING_SUFFIX = ".retrying"


@dataclass
class RetryReport:
    """What :func:`retry_failed` did with the dead-letter file."""

    records: int = 0  # lines read from the dead-letter file
    unreadable_lines: int = 0  # lines that were not JSON (a write cut short): dropped, with a warning
    images: int = 0  # distinct images those documents belong to
    indexed: int = 0
    failed: int = 0  # rejected again: written to the dead-letter file anew
    not_in_store: list[str] = field(default_factory=list)  # kept in the dead-letter file: re-ingest their source
    dead_letter_path: str | None = None
    total_in_index: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def retry_failed(ingestor: Ingestor) -> RetryReport:
    """Index again the images whose documents the dead-letter file of ``ingestor``'s pipeline holds.

    The file is first moved aside to ``<name>.retrying``: documents rejected again go to a new
    dead-letter file, and the moved one is deleted only once the retry has finished. An
    interrupted retry (server down) leaves it in place for the next retry, which reads both.
    """
    report = RetryReport()
    live = dead_letter_path(ingestor.config)
    aside = live.with_name(live.name + RETRYING_SUFFIX)
    report.dead_letter_path = str(live)
    if live.exists():
        if aside.exists():
            ends_cleanly = aside.read_bytes().endswith(b"\n") or aside.stat().st_size == 0
            with aside.open("a", encoding="utf-8") as out:
                out.write(("" if ends_cleanly else "\n") + live.read_text(encoding="utf-8"))
            live.unlink()
        else:
            live.replace(aside)
    if not aside.exists():
        return report
    if ingestor.quantizer is None:
        raise WorkdirNotFoundError(
            f"{aside} names failed documents, but pipeline {ingestor.config.name!r} has no quantizer yet"
        )
    wanted: dict[str, ShownFields] = {}
    records_of: dict[str, list[str]] = {}
    for line in aside.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            document = record.get("document") or {}
            image_id = _image_id_of_failed(ingestor.quantizer, str(record["id"]), document)
        except (ValueError, KeyError, TypeError, AttributeError):  # JSONDecodeError is a ValueError
            report.unreadable_lines += 1
            continue
        report.records += 1
        caption = document.get("caption")
        wanted.setdefault(image_id, ShownFields(document.get("path"), [caption] if caption else []))
        records_of.setdefault(image_id, []).append(line)
    if report.unreadable_lines:
        log.warning("%d lines of %s are not JSON records; dropped", report.unreadable_lines, aside)
    report.images = len(wanted)
    stored = ingestor.store.contains(wanted)
    report.not_in_store = sorted(set(wanted) - stored)
    if report.not_in_store:
        # Nothing to rebuild them from: keep their records for a re-run of the ingest of their source.
        live.parent.mkdir(parents=True, exist_ok=True)
        with live.open("a", encoding="utf-8") as out:
            for image_id in report.not_in_store:
                # dict.fromkeys: a record read from both files (an interrupted retry) is kept once.
                out.write("".join(line + "\n" for line in dict.fromkeys(records_of[image_id])))
    indexed = IngestReport()
    ingestor.index_stored({i: wanted[i] for i in wanted if i in stored}, indexed)
    index = ingestor.writable_index()
    index.refresh()
    report.indexed, report.failed = indexed.indexed, indexed.index_failed
    report.total_in_index = index.count()
    aside.unlink()
    return report


def _image_id_of_failed(quantizer: FirstStageEncoder, doc_id: str, document: dict) -> str:
    """The image a failed document belongs to: its metadata says, else its (region) document id."""
    metadata = document.get("metadata") or {}
    if metadata.get("image_id"):
        return str(metadata["image_id"])
    if quantizer.region_documents:
        return parse_region_document_id(doc_id)[0]
    return doc_id
