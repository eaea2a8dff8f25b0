"""The index protocol that both backends (embedded, Elasticsearch) implement: a core the
library calls (``Index``) and an extension with the rest (``ExtendedIndex``).

An index holds one *surrogate document* per image (or per region): a bag of surrogate
terms with integer frequencies. A query is either

* weighted terms ``{term: weight}``: the score of a document is the exact dot product
  sum_t tf(doc, t) * weight(query, t), no idf, no length normalisation; or
* a ``MaxSumQuery`` (the cell first stage, on the cells field): the sum over its groups of
  the largest weight(t) among the group's terms that the document holds.

Only documents sharing at least one term with the query match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from teran_es.errors import TeranError
from teran_es.surrogate.query import MaxSumQuery

# What ``Index.search`` takes (see the module docstring).
Query = Mapping[str, float] | MaxSumQuery

# The index records these in its metadata; search refuses a mismatch.
FINGERPRINT_KEYS = ("quantizer_fingerprint", "model_fingerprint")

# Elasticsearch stores sparse_vector values with 9 significant bits: integers up to 512 are exact.
MAX_TERM_FREQUENCY = 512


# The two fields surrogate terms go into: weighted terms with frequencies (the scalar first
# stage), or cells, which carry no frequency (the cell first stage; frequency 1).
TERMS_FIELD = "terms"
CELLS_FIELD = "cells"
FIELDS = (TERMS_FIELD, CELLS_FIELD)


@dataclass(frozen=True)
class SurrogateDocument:
    """One document: a stable id, its surrogate terms (in ``field``), and what a hit shows."""

    id: str
    terms: Mapping[str, int]
    path: str | None = None
    caption: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    field: str = TERMS_FIELD
    rerank_codes: str | None = None  # the image's packed region codes (``store.wire``), or None


@dataclass(frozen=True)
class IndexHit:
    id: str
    score: float


@dataclass
class AddReport:
    """What an ``add`` call did. Failed documents went to the dead-letter file, if any."""

    indexed: int = 0
    failed: int = 0
    dead_letter_path: str | None = None


class IndexError_(TeranError, RuntimeError):
    """Base of the index errors (named with a trailing underscore to not shadow the builtin)."""


class IndexMismatchError(IndexError_):
    """The index was built with another quantizer or model than the one in use."""


class IndexUnavailableError(IndexError_):
    """The backend cannot be reached (server down, wrong version, bad credentials)."""


class InvalidDocumentError(IndexError_, ValueError):
    """A document or query that no backend would accept (bad term, bad frequency)."""


@runtime_checkable
class Index(Protocol):
    """What the library calls on an index: open-time metadata, add, search, lookups, count.

    Ingest adds and checks what is there (``existing_ids``, ``refresh``, ``count``); search
    searches and fetches what hits show (``search``, ``get_many``). Both backends implement
    :class:`ExtendedIndex` as well.
    """

    name: str

    def meta(self) -> dict[str, Any]:
        """The metadata the index was created with (fingerprints, versions)."""
        ...

    def add(self, docs: Iterable[SurrogateDocument]) -> AddReport:
        """Index a stream of documents; an existing id is replaced (idempotent re-ingest)."""
        ...

    def search(self, query: Query, k: int) -> list[IndexHit]:
        """Top-``k`` documents by the query's score (exact), best first, ties by id."""
        ...

    def get_many(self, ids: Sequence[str]) -> dict[str, SurrogateDocument]:
        """What hits show (path, caption, metadata; terms left empty) for the ``ids`` that
        exist, in one round trip where the backend allows."""
        ...

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already indexed (for resumable ingest)."""
        ...

    def count(self) -> int: ...

    def refresh(self) -> None:
        """Make everything added so far visible to search."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ExtendedIndex(Index, Protocol):
    """What an index offers beyond the library's needs: batched search (benchmarks), a
    document with its terms, deletion (maintenance and tests). A new backend may start
    without these."""

    def search_many(self, queries: Sequence[Query], k: int) -> list[list[IndexHit]]:
        """``search`` for a batch of queries (one round trip where the backend allows)."""
        ...

    def get(self, doc_id: str) -> SurrogateDocument | None:
        """One document with its terms, or None."""
        ...

    def delete(self, ids: Iterable[str]) -> int:
        """Remove the documents with these ids; returns how many there were."""
        ...


def check_meta(actual: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Raise ``IndexMismatchError`` when a fingerprint in ``expected`` differs from ``actual``."""
    for key in FINGERPRINT_KEYS:
        want = expected.get(key)
        have = actual.get(key)
        if want and have and want != have:
            raise IndexMismatchError(
                f"{where} was built with {key}={have}, but the pipeline uses {want}. "
                "Re-ingest into a new index (or delete this one), or search with the model/quantizer "
                "that built it."
            )
