"""The embedded backend: an in-process inverted index persisted on disk, no server.

An index is a directory of immutable segments, tombstones and a manifest that names them
(``embedded_files.py``: the format, and why a crash leaves the old or the new state, never a
half-written one); scoring is ``embedded_scoring.py``. This module is the ``Index`` itself:
opening (one writer at a time, a file lock; stray temporaries removed), buffering documents
into segments, merging, deleting, searching and reading back.

Replacing a document (same id) tombstones the old copy, so re-ingesting is idempotent.
Scoring is the exact dot product sum_t tf * weight over the query's terms (or the max-sum of a
``MaxSumQuery``), the same as the Elasticsearch mapping; ties are broken by id.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from teran_es.index.base import (
    AddReport,
    IndexError_,
    IndexHit,
    InvalidDocumentError,
    Query,
    SurrogateDocument,
    check_meta,
)
from teran_es.index.embedded_files import (
    FORMAT_VERSION,
    MANIFEST,
    Segment,
    atomic_write_json,
    document,
    merge_segments,
    new_manifest,
    read_segment,
    segment_name,
    write_segment,
    write_tombstone,
)
from teran_es.index.embedded_scoring import segment_candidates
from teran_es.index.terms import validate_document, validate_query

DEAD_LETTER = "dead-letter.jsonl"
# Documents buffered before a segment is written, and the segment count that triggers a merge.
DEFAULT_SEGMENT_DOCS = 50_000
MAX_SEGMENTS = 8


def _append_dead_letter(path: Path, doc: SurrogateDocument, reason: str) -> None:
    """One JSON line per rejected document, so a later run can inspect or retry it."""
    record = {
        "id": doc.id,
        "error": reason,
        "document": {"terms": dict(doc.terms), "path": doc.path, "caption": doc.caption},
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


class EmbeddedIndex:
    """The default backend (see module docstring). One writer at a time (a file lock)."""

    def __init__(
        self, path: Path, manifest: dict[str, Any], lock_fh: Any, segment_docs: int, read_only: bool = False
    ):
        self.path = path
        self.read_only = read_only
        self.name = manifest["name"]
        self._manifest = manifest
        self._lock_fh = lock_fh
        self._segment_docs = segment_docs
        self._segments: list[Segment] = []
        self._where: dict[str, tuple[int, int]] = {}  # id -> (segment position, document number)
        self._pending: dict[str, SurrogateDocument] = {}
        self._load_segments()

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        create: bool = True,
        meta: Mapping[str, Any] | None = None,
        name: str | None = None,
        segment_docs: int = DEFAULT_SEGMENT_DOCS,
        read_only: bool = False,
    ) -> EmbeddedIndex:
        """Open the index at ``path`` (creating it when ``create``), checking fingerprints in ``meta``.

        ``read_only`` takes no lock and sees the index as committed at open time; writes raise.
        """
        directory = Path(path)
        manifest_path = directory / MANIFEST
        if not manifest_path.exists():
            if not create:
                raise IndexError_(f"no embedded index at {directory} (run an ingest first)")
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise IndexError_(f"cannot create the index directory {directory}: {exc}") from None
        if read_only and not manifest_path.exists():
            raise IndexError_(f"no embedded index at {directory} (run an ingest first)")
        lock_fh = None if read_only else cls._lock(directory)
        if manifest_path.exists():
            with manifest_path.open(encoding="utf-8") as fh:
                manifest = json.load(fh)
            if manifest.get("format_version") != FORMAT_VERSION:
                if lock_fh is not None:
                    lock_fh.close()
                raise IndexError_(
                    f"{manifest_path}: format version {manifest.get('format_version')} is not "
                    f"{FORMAT_VERSION}; rebuild the index with this version of teran-es"
                )
            if meta:
                try:
                    check_meta(manifest.get("meta", {}), meta, f"the embedded index at {directory}")
                except Exception:
                    if lock_fh is not None:
                        lock_fh.close()
                    raise
        else:
            manifest = new_manifest(name or directory.name, dict(meta or {}))
            atomic_write_json(manifest_path, manifest)
        if not read_only:
            # Leftovers of an interrupted write are not referenced by the manifest: remove them.
            # A segment renamed into place by a process killed before it replaced the manifest
            # is one too, and its name would be written again by the next flush.
            referenced = set(manifest["segments"])
            for stray in [*directory.glob(".tmp-*"), *directory.glob("seg-*")]:
                if stray.name not in referenced:
                    shutil.rmtree(stray, ignore_errors=True)
        return cls(directory, manifest, lock_fh, segment_docs, read_only)

    @staticmethod
    def _lock(directory: Path) -> Any:
        try:
            fh = (directory / ".lock").open("a+")
        except OSError as exc:
            raise IndexError_(f"cannot open {directory} for writing: {exc}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise IndexError_(f"the embedded index at {directory} is open in another process") from None
        return fh

    def _load_segments(self) -> None:
        tomb = self._manifest["tombstones"]
        self._segments = [read_segment(self.path, s, tomb.get(s)) for s in self._manifest["segments"]]
        self._where = {}
        for si, seg in enumerate(self._segments):
            for local, rec in enumerate(seg.stored):
                if not seg.deleted[local]:
                    self._where[rec["id"]] = (si, local)

    # -- the Index protocol -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return dict(self._manifest.get("meta", {}))

    def add(self, docs: Iterable[SurrogateDocument]) -> AddReport:
        """Validate and buffer documents; a segment is written every ``segment_docs`` documents.

        A document that fails validation is appended to ``dead-letter.jsonl`` in the index
        directory (with the reason) and counted as failed; the others go on. What was
        buffered is flushed even when the stream itself raises.
        """
        self._require_writable()
        report = AddReport()
        dead_letter = self.path / DEAD_LETTER
        try:
            for doc in docs:
                try:
                    validate_document(doc)
                except InvalidDocumentError as exc:
                    _append_dead_letter(dead_letter, doc, str(exc))
                    report.failed += 1
                    report.dead_letter_path = str(dead_letter)
                    continue
                self._pending[doc.id] = doc
                report.indexed += 1
                if len(self._pending) >= self._segment_docs:
                    self._flush()
        finally:
            self._flush()
        return report

    def _flush(self) -> None:
        if not self._pending:
            return
        docs = list(self._pending.values())
        m = self._manifest
        name = segment_name(m["next_segment"])
        write_segment(self.path, name, docs)
        replaced: dict[str, list[int]] = {}
        for d in docs:
            if d.id in self._where:
                si, local = self._where[d.id]
                replaced.setdefault(self._segments[si].name, []).append(local)
        new_manifest = dict(m)
        new_manifest["segments"] = [*m["segments"], name]
        new_manifest["next_segment"] = m["next_segment"] + 1
        new_manifest["generation"] = m["generation"] + 1
        new_manifest["tombstones"] = self._with_tombstones(replaced, new_manifest["generation"])
        self._commit(new_manifest)
        self._pending.clear()
        if len(self._manifest["segments"]) > MAX_SEGMENTS:
            self.merge()

    def _with_tombstones(self, extra: Mapping[str, list[int]], generation: int) -> dict[str, str]:
        """Write new tombstone files for the segments in ``extra``; return the tombstone map."""
        tombstones = dict(self._manifest["tombstones"])
        by_name = {s.name: s for s in self._segments}
        for seg_name, locals_ in extra.items():
            tombstones[seg_name] = write_tombstone(self.path, by_name[seg_name], locals_, generation)
        return tombstones

    def _commit(self, manifest: dict[str, Any]) -> None:
        old_files = set(self._manifest["tombstones"].values()) | set(self._manifest["segments"])
        atomic_write_json(self.path / MANIFEST, manifest)
        self._manifest = manifest
        self._load_segments()
        # Only after the new manifest is durable may files it no longer names be removed.
        live = set(manifest["tombstones"].values()) | set(manifest["segments"])
        for stale in old_files - live:
            target = self.path / stale
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def merge(self) -> None:
        """Rewrite all live documents into a single segment (drops tombstoned copies)."""
        self._require_writable()
        self._flush()
        if len(self._segments) <= 1 and not self._manifest["tombstones"]:
            return
        m = self._manifest
        name = segment_name(m["next_segment"])
        written = merge_segments(self.path, name, self._segments)
        new_manifest = dict(m)
        new_manifest["generation"] = m["generation"] + 1
        new_manifest["tombstones"] = {}
        new_manifest["next_segment"] = m["next_segment"] + 1
        new_manifest["segments"] = [name] if written else []
        self._commit(new_manifest)

    def search(self, query: Query, k: int) -> list[IndexHit]:
        validate_query(query)
        if k <= 0:
            return []
        # Each segment keeps its ties at the k-th score, so that ties are broken by id overall.
        candidates = [c for seg in self._segments for c in segment_candidates(seg, query, k)]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        return [IndexHit(id=doc_id, score=score) for score, doc_id in candidates[:k]]

    def search_many(self, queries: Sequence[Query], k: int) -> list[list[IndexHit]]:
        return [self.search(q, k) for q in queries]

    def get(self, doc_id: str) -> SurrogateDocument | None:
        if doc_id in self._pending:
            return self._pending[doc_id]
        where = self._where.get(doc_id)
        return None if where is None else document(self._segments[where[0]], where[1])

    def get_many(self, ids: Sequence[str]) -> dict[str, SurrogateDocument]:
        found: dict[str, SurrogateDocument] = {}
        for doc_id in ids:
            doc = self.get(doc_id)
            if doc is not None:
                found[doc_id] = SurrogateDocument(doc.id, {}, doc.path, doc.caption, doc.metadata, doc.field)
        return found

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self._where or i in self._pending}

    def delete(self, ids: Iterable[str]) -> int:
        self._require_writable()
        self._flush()
        by_segment: dict[str, list[int]] = {}
        for doc_id in ids:
            where = self._where.get(doc_id)
            if where is not None:
                by_segment.setdefault(self._segments[where[0]].name, []).append(where[1])
        n = sum(len(v) for v in by_segment.values())
        if n:
            new_manifest = dict(self._manifest)
            new_manifest["generation"] = self._manifest["generation"] + 1
            new_manifest["tombstones"] = self._with_tombstones(by_segment, new_manifest["generation"])
            self._commit(new_manifest)
        return n

    def count(self) -> int:
        return len(self._where) + sum(1 for i in self._pending if i not in self._where)

    def refresh(self) -> None:
        """Writable: commit what is buffered. Read-only: move the snapshot to the latest commit
        (what a writer in another process has committed since the open)."""
        if self.read_only:
            self._reload()
            return
        self._flush()

    def _reload(self, attempts: int = 5) -> None:
        # A writer may commit again and remove files of the manifest just read: read it anew.
        for attempt in range(attempts):
            try:
                with (self.path / MANIFEST).open(encoding="utf-8") as fh:
                    manifest = json.load(fh)
                if manifest.get("generation") == self._manifest.get("generation"):
                    return
                previous = self._manifest
                self._manifest = manifest
                try:
                    self._load_segments()
                except BaseException:
                    self._manifest = previous
                    raise
                return
            except (OSError, ValueError):
                if attempt == attempts - 1:
                    raise

    def _require_writable(self) -> None:
        if self.read_only:
            raise IndexError_(f"the embedded index at {self.path} was opened read-only")

    def close(self) -> None:
        if self._lock_fh is not None:
            self._flush()
            self._lock_fh.close()
            self._lock_fh = None

    def size_on_disk(self) -> int:
        """Bytes used by the index directory."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def __enter__(self) -> EmbeddedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
