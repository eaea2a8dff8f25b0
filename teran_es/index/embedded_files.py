"""The embedded index's files: immutable segments, tombstones and the manifest that names them.

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
        stored.json          [{id, path, caption, metadata, field}] in document-number order
    tomb-<segment>-<gen>.npy int32         deleted document numbers of one segment
    dead-letter.jsonl        documents the index refused, one JSON line each (see embedded.py)
    .lock                    held (flock) by the one process that may write

A segment is written to ``.tmp-<name>`` and renamed into place; tombstone files are new files
named by generation; the manifest is replaced atomically (written, fsynced, renamed) after
both. Nothing a manifest names is ever modified, so a reader of one manifest sees one state.
Pure file formats here: when to write what is ``embedded.py``'s business.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teran_es.index.base import TERMS_FIELD, SurrogateDocument

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Segment:
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


def new_manifest(name: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an empty index."""
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "meta": meta,
        "segments": [],
        "tombstones": {},
        "next_segment": 1,
        "generation": 0,
    }


def atomic_write_json(path: Path, payload: Any) -> None:
    """Replace ``path`` with ``payload`` as JSON: readers see the old file or the new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def segment_name(number: int) -> str:
    return f"seg-{number:06d}"


def write_tombstone(directory: Path, segment: Segment, deleted_now: Sequence[int], generation: int) -> str:
    """Write the tombstone file of ``segment`` with ``deleted_now`` (document numbers) added to
    what it already deletes; return the file's name (new for every generation)."""
    deleted = segment.deleted.copy()
    deleted[list(deleted_now)] = True
    file_name = f"tomb-{segment.name}-{generation:08d}.npy"
    np.save(directory / file_name, np.flatnonzero(deleted).astype(np.int32))
    return file_name


def write_segment(directory: Path, name: str, docs: Sequence[SurrogateDocument]) -> None:
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


def merge_segments(directory: Path, name: str, segments: Sequence[Segment]) -> int:
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


def read_segment(directory: Path, name: str, tombstone: str | None) -> Segment:
    """The segment ``directory/name`` (arrays memory-mapped), minus the documents its tombstone
    file (if any) deletes."""
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
    return Segment(
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


def document(seg: Segment, local: int) -> SurrogateDocument:
    """Document number ``local`` of ``seg``, rebuilt from the forward view and stored fields."""
    lo, hi = int(seg.doc_offsets[local]), int(seg.doc_offsets[local + 1])
    terms = {seg.vocab[t]: int(tf) for t, tf in zip(seg.doc_terms[lo:hi], seg.doc_tfs[lo:hi], strict=True)}
    rec = seg.stored[local]
    return SurrogateDocument(
        id=rec["id"],
        terms=terms,
        path=rec["path"],
        caption=rec["caption"],
        metadata=rec["metadata"],
        field=rec.get("field", TERMS_FIELD),
    )
