"""The embedded backend: an in-process inverted index persisted on disk, no server.

Layout of an index directory::

    manifest.json            format version, name, metadata, live segments, tombstones
    seg-000001/              one immutable segment per flush
        terms.json           the segment's vocabulary (sorted)
        term_offsets.npy     int64 [V+1]   postings of term t: post_*[off[t]:off[t+1]]
        post_docs.npy        int32 [P]     segment-local document numbers
        post_tfs.npy         uint16 [P]    term frequencies (1..512)
        doc_offsets.npy      int64 [N+1]   forward view, for ``get``
        doc_terms.npy        int32 [P]     vocabulary positions
        doc_tfs.npy          uint16 [P]
        stored.json          [{id, path, caption, metadata}] in document-number order
    tomb-<segment>-<gen>.npy int32         deleted document numbers of one segment

Segments are written to a temporary directory and renamed; the manifest is replaced
atomically afterwards. A crash therefore leaves either the old or the new state, never a
half-written one; stray temporaries are removed on the next open. Replacing a document
(same id) tombstones the old copy, so re-ingesting is idempotent. Scoring is the exact
dot product sum_t tf * weight over the query's terms, the same as the Elasticsearch
mapping; ties are broken by id.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teran_es.index.base import (
    TERMS_FIELD,
    AddReport,
    IndexError_,
    IndexHit,
    InvalidDocumentError,
    Query,
    SurrogateDocument,
    check_meta,
)
from teran_es.index.terms import validate_document, validate_query
from teran_es.surrogate.query import MaxSumQuery

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEAD_LETTER = "dead-letter.jsonl"
# Documents buffered before a segment is written, and the segment count that triggers a merge.
DEFAULT_SEGMENT_DOCS = 50_000
MAX_SEGMENTS = 8


@dataclass
class _Segment:
    """A read view of one segment (arrays memory-mapped)."""

    name: str
    terms: dict[str, int]
    term_offsets: np.ndarray
    post_docs: np.ndarray
    post_tfs: np.ndarray
    doc_offsets: np.ndarray
    doc_terms: np.ndarray
    doc_tfs: np.ndarray
    vocab: list[str]
    stored: list[dict[str, Any]]
    deleted: np.ndarray  # bool [N]

    @property
    def n_docs(self) -> int:
        return len(self.stored)


def _atomic_write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _append_dead_letter(path: Path, doc: SurrogateDocument, reason: str) -> None:
    """One JSON line per rejected document, so a later run can inspect or retry it."""
    record = {
        "id": doc.id,
        "error": reason,
        "document": {"terms": dict(doc.terms), "path": doc.path, "caption": doc.caption},
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def _write_segment(directory: Path, name: str, docs: Sequence[SurrogateDocument]) -> None:
    """Write ``docs`` as an immutable segment ``directory/name``."""
    vocab = sorted({t for d in docs for t in d.terms})
    position = {t: i for i, t in enumerate(vocab)}
    lengths = np.fromiter((len(d.terms) for d in docs), dtype=np.int64, count=len(docs))
    doc_terms = np.fromiter((position[t] for d in docs for t in d.terms), dtype=np.int32, count=int(lengths.sum()))
    doc_tfs = np.fromiter((tf for d in docs for tf in d.terms.values()), dtype=np.uint16, count=int(lengths.sum()))
    stored = [
        {"id": d.id, "path": d.path, "caption": d.caption, "metadata": dict(d.metadata), "field": d.field} for d in docs
    ]
    _write_segment_arrays(directory, name, vocab, lengths, doc_terms, doc_tfs, stored)


def _write_segment_arrays(
    directory: Path,
    name: str,
    vocab: list[str],
    lengths: np.ndarray,
    doc_terms: np.ndarray,
    doc_tfs: np.ndarray,
    stored: list[dict[str, Any]],
) -> None:
    """Write a segment from its forward view (via a temporary directory, then a rename).

    vocab: sorted terms [V]; lengths: int64 [N] terms per document; doc_terms: int32 [P]
    vocabulary positions and doc_tfs: uint16 [P] frequencies, document after document.
    """
    doc_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=doc_offsets[1:])
    # Invert: sort postings by term (stable, so document numbers stay ascending per term).
    doc_numbers = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    order = np.argsort(doc_terms, kind="stable")
    post_docs = doc_numbers[order]
    post_tfs = doc_tfs[order]
    term_offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc_terms, minlength=len(vocab)), out=term_offsets[1:])

    tmp = directory / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for fname, arr in (
        ("term_offsets", term_offsets),
        ("post_docs", post_docs),
        ("post_tfs", post_tfs),
        ("doc_offsets", doc_offsets),
        ("doc_terms", doc_terms),
        ("doc_tfs", doc_tfs),
    ):
        np.save(tmp / f"{fname}.npy", arr)
    with (tmp / "terms.json").open("w", encoding="utf-8") as fh:
        json.dump(vocab, fh)
    with (tmp / "stored.json").open("w", encoding="utf-8") as fh:
        json.dump(stored, fh)
    tmp.rename(directory / name)


def _merge_segments(directory: Path, name: str, segments: Sequence[_Segment]) -> int:
    """Write the live documents of ``segments`` as one segment, array to array; returns its size."""
    vocab = sorted(set().union(*(seg.vocab for seg in segments)))
    vocab_array = np.asarray(vocab, dtype=object)
    lengths, terms, tfs, stored = [], [], [], []
    for seg in segments:
        live = ~seg.deleted
        seg_lengths = np.diff(np.asarray(seg.doc_offsets))
        keep = np.repeat(live, seg_lengths)
        # Segment vocabulary position -> merged vocabulary position.
        remap = np.searchsorted(vocab_array, np.asarray(seg.vocab, dtype=object)).astype(np.int32)
        lengths.append(seg_lengths[live])
        terms.append(remap[np.asarray(seg.doc_terms)[keep]])
        tfs.append(np.asarray(seg.doc_tfs)[keep])
        stored.extend(rec for rec, alive in zip(seg.stored, live.tolist(), strict=True) if alive)
    if not stored:
        return 0
    _write_segment_arrays(
        directory, name, vocab, np.concatenate(lengths), np.concatenate(terms), np.concatenate(tfs), stored
    )
    return len(stored)


def _read_segment(directory: Path, name: str, tombstone: str | None) -> _Segment:
    seg = directory / name

    def load(fname: str) -> np.ndarray:
        return np.load(seg / f"{fname}.npy", mmap_mode="r")

    with (seg / "terms.json").open(encoding="utf-8") as fh:
        vocab = json.load(fh)
    with (seg / "stored.json").open(encoding="utf-8") as fh:
        stored = json.load(fh)
    deleted = np.zeros(len(stored), dtype=bool)
    if tombstone:
        deleted[np.load(directory / tombstone)] = True
    return _Segment(
        name=name,
        terms={t: i for i, t in enumerate(vocab)},
        term_offsets=load("term_offsets"),
        post_docs=load("post_docs"),
        post_tfs=load("post_tfs"),
        doc_offsets=load("doc_offsets"),
        doc_terms=load("doc_terms"),
        doc_tfs=load("doc_tfs"),
        vocab=vocab,
        stored=stored,
        deleted=deleted,
    )


def _postings(
    seg: _Segment, terms: Mapping[str, float] | tuple[tuple[str, float], ...], constant: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(documents int32 [P], clause scores float32 [P]) of the query terms the segment has.

    A clause scores as Lucene scores a term of a ``sparse_vector`` field: the float32 boost
    times the stored value, in float32 (``constant``: the boost alone). Sums of clauses run in
    float64 and are rounded to float32 at the end, as Lucene's disjunctions do: both backends
    then see the same ties.
    """
    pairs = terms.items() if isinstance(terms, Mapping) else terms
    found = [(seg.terms[t], w) for t, w in pairs if t in seg.terms]
    if not found:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    bounds = [(int(seg.term_offsets[t]), int(seg.term_offsets[t + 1])) for t, _ in found]
    docs = np.concatenate([seg.post_docs[lo:hi] for lo, hi in bounds])
    weights = np.repeat(np.array([w for _, w in found], dtype=np.float32), [hi - lo for lo, hi in bounds])
    if constant:
        return docs, weights
    values = np.concatenate([seg.post_tfs[lo:hi] for lo, hi in bounds]).astype(np.float32)
    values *= weights
    return docs, values


def _max_sum_scores(seg: _Segment, query: MaxSumQuery) -> tuple[np.ndarray, np.ndarray]:
    """Sum over groups of the largest weight among each group's terms a document holds (constant
    score: the frequency plays no part, as in Elasticsearch's constant_score clauses)."""
    scores = np.zeros(seg.n_docs)
    best = np.zeros(seg.n_docs, np.float32)  # a group's best clause per document, reset after each group
    for group in query.groups:
        docs, values = _postings(seg, group, constant=True)
        if docs.size == 0:
            continue
        order = np.argsort(values, kind="stable")
        best[docs[order]] = values[order]  # the last write per document is its largest value
        touched = np.unique(docs)
        scores[touched] += best[touched]
        best[touched] = 0.0
    scores = scores.astype(np.float32)
    return scores, (scores > 0) & ~seg.deleted


def _segment_scores(seg: _Segment, query: Query) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of one segment's documents: (scores float64 [N], matched bool [N])."""
    if isinstance(query, MaxSumQuery):
        return _max_sum_scores(seg, query)
    docs, values = _postings(seg, query)
    scores = np.bincount(docs, weights=values, minlength=seg.n_docs).astype(np.float32)
    # Weights are positive and tf >= 1, so a document matched exactly when its score is positive.
    return scores, (scores > 0) & ~seg.deleted


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
        self._segments: list[_Segment] = []
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
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": name or directory.name,
                "meta": dict(meta or {}),
                "segments": [],
                "tombstones": {},
                "next_segment": 1,
                "generation": 0,
            }
            _atomic_write_json(manifest_path, manifest)
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
        self._segments = [_read_segment(self.path, s, tomb.get(s)) for s in self._manifest["segments"]]
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
        name = f"seg-{m['next_segment']:06d}"
        _write_segment(self.path, name, docs)
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
            deleted = by_name[seg_name].deleted.copy()
            deleted[locals_] = True
            fname = f"tomb-{seg_name}-{generation:08d}.npy"
            np.save(self.path / fname, np.flatnonzero(deleted).astype(np.int32))
            tombstones[seg_name] = fname
        return tombstones

    def _commit(self, manifest: dict[str, Any]) -> None:
        old_files = set(self._manifest["tombstones"].values()) | set(self._manifest["segments"])
        _atomic_write_json(self.path / MANIFEST, manifest)
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
        name = f"seg-{m['next_segment']:06d}"
        written = _merge_segments(self.path, name, self._segments)
        new_manifest = dict(m)
        new_manifest["generation"] = m["generation"] + 1
        new_manifest["tombstones"] = {}
        new_manifest["next_segment"] = m["next_segment"] + 1
        new_manifest["segments"] = [name] if written else []
        self._commit(new_manifest)

    def _document(self, si: int, local: int) -> SurrogateDocument:
        seg = self._segments[si]
        lo, hi = int(seg.doc_offsets[local]), int(seg.doc_offsets[local + 1])
        terms = {
            seg.vocab[t]: int(tf) for t, tf in zip(seg.doc_terms[lo:hi], seg.doc_tfs[lo:hi], strict=True)
        }
        rec = seg.stored[local]
        return SurrogateDocument(
            id=rec["id"],
            terms=terms,
            path=rec["path"],
            caption=rec["caption"],
            metadata=rec["metadata"],
            field=rec.get("field", TERMS_FIELD),
        )

    def search(self, query: Query, k: int) -> list[IndexHit]:
        validate_query(query)
        if k <= 0:
            return []
        candidates: list[tuple[float, str]] = []
        for seg in self._segments:
            scores, matched = _segment_scores(seg, query)
            idx = np.flatnonzero(matched)
            if idx.size == 0:
                continue
            sub = scores[idx]
            if idx.size > k:
                # Keep every document tied with the k-th score so ties can be broken by id.
                kth = np.partition(sub, idx.size - k)[idx.size - k]
                keep = sub >= kth
                idx, sub = idx[keep], sub[keep]
            candidates.extend((float(s), seg.stored[i]["id"]) for i, s in zip(idx, sub, strict=True))
        candidates.sort(key=lambda c: (-c[0], c[1]))
        return [IndexHit(id=doc_id, score=score) for score, doc_id in candidates[:k]]

    def search_many(self, queries: Sequence[Query], k: int) -> list[list[IndexHit]]:
        return [self.search(q, k) for q in queries]

    def get(self, doc_id: str) -> SurrogateDocument | None:
        if doc_id in self._pending:
            return self._pending[doc_id]
        where = self._where.get(doc_id)
        return None if where is None else self._document(*where)

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
        self._flush()

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
