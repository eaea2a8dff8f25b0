"""Validation of surrogate terms and weights, shared by both backends (pure, no I/O)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from teran_es.index.base import (
    CELLS_FIELD,
    FIELDS,
    MAX_TERM_FREQUENCY,
    InvalidDocumentError,
    Query,
    SurrogateDocument,
)
from teran_es.surrogate.query import MaxSumQuery

# sparse_vector keys become Lucene feature names inside one field: a dot would be read as
# an object path by Elasticsearch, so terms are restricted to a safe alphabet.
_TERM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def is_valid_term(term: str) -> bool:
    return isinstance(term, str) and bool(_TERM_RE.match(term))


def validate_document(doc: SurrogateDocument) -> None:
    """Raise ``InvalidDocumentError`` naming the document when its field, a term or a frequency is
    unusable (cells carry no frequency: theirs must be 1)."""
    if doc.field not in FIELDS:
        raise InvalidDocumentError(f"document {doc.id!r}: unknown field {doc.field!r} (known: {', '.join(FIELDS)})")
    validate_document_terms(doc.id, doc.terms)
    if doc.field == CELLS_FIELD and any(tf != 1 for tf in doc.terms.values()):
        raise InvalidDocumentError(f"document {doc.id!r}: cells carry no frequency (every value must be 1)")


def validate_document_terms(doc_id: str, terms: Mapping[str, int]) -> None:
    """Raise ``InvalidDocumentError`` naming the document when a term or frequency is unusable."""
    if not doc_id or not isinstance(doc_id, str) or len(doc_id.encode()) > 512:
        raise InvalidDocumentError(f"document id {doc_id!r} must be a non-empty string of at most 512 bytes")
    for term, tf in terms.items():
        if not is_valid_term(term):
            raise InvalidDocumentError(
                f"document {doc_id!r}: term {term!r} is not allowed (letters, digits, '_' and '-', "
                "at most 64 characters, no leading '_' or '-')"
            )
        if isinstance(tf, bool) or not isinstance(tf, int | float) or tf != int(tf):
            raise InvalidDocumentError(
                f"document {doc_id!r}: frequency of {term!r} must be an integer, got {tf!r}"
            )
        if not 1 <= tf <= MAX_TERM_FREQUENCY:
            raise InvalidDocumentError(
                f"document {doc_id!r}: frequency of {term!r} is {tf}, outside 1..{MAX_TERM_FREQUENCY} "
                "(values above 512 are not stored exactly by Elasticsearch)"
            )


def validate_query(query: Query) -> None:
    """Raise ``InvalidDocumentError`` for an empty query, a bad term or a non-finite/negative weight."""
    if isinstance(query, MaxSumQuery):
        problems = query.problems()
        bad = [t for g in query.groups for t, _ in g if not is_valid_term(t)]
        if bad:
            problems.append(f"query term {bad[0]!r} is not allowed")
        if problems:
            raise InvalidDocumentError("; ".join(problems))
        return
    if not query:
        raise InvalidDocumentError("the query has no terms")
    for term, weight in query.items():
        if not is_valid_term(term):
            raise InvalidDocumentError(f"query term {term!r} is not allowed")
        w = float(weight)
        if not math.isfinite(w) or w <= 0:
            # Elasticsearch rejects negative boosts; zero would only add no-op clauses.
            raise InvalidDocumentError(
                f"query weight of {term!r} must be a positive finite number, got {weight!r}"
            )
