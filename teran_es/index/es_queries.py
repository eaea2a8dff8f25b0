"""Pure builders of Elasticsearch request bodies (plain dicts; sent by ``elastic.py`` and ``elastic_bulk.py``).

Both query formulations score a document by the exact dot product
sum_t tf(doc, t) * weight(query, t) on the ``sparse_vector`` field:

* ``bool``: one ``term`` clause per query term with ``boost = weight``; a term query on a
  sparse_vector field is a linear feature query (score = stored value x boost), and a
  ``bool.should`` sums its clauses (no coordination factor since Lucene 7).
* ``sparse_vector``: the dedicated query with ``prune: false`` (pruning drops query terms
  and would make scores approximate).

A ``MaxSumQuery`` (the cell first stage) goes to the keyword field ``cells``: a
``bool.should`` with one ``dis_max`` per group (``tie_breaker`` 0: the group's best clause
only) over ``constant_score`` clauses whose boosts are the weights. The terms of a group that
share a weight go into one ``terms`` filter: one clause, and a set lookup instead of a scored
disjunction (at 1M images about 3x faster than one clause per term).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from teran_es.errors import ConfigError
from teran_es.index.base import CELLS_FIELD, TERMS_FIELD, Query, SurrogateDocument
from teran_es.surrogate.query import MaxSumQuery

FORMULATIONS = ("bool", "sparse_vector")
# The faster of the two, measured by benchmarks/bench_index.py (both are exact).
DEFAULT_FORMULATION = "sparse_vector"
# A hit needs only its id and score. The id comes from the doc values of ID_FIELD (a copy of
# _id), not from stored fields: fetching _id as a stored field cost about 17 ms per 1,000 hits
# on the 2-core box, the doc values about 1 ms.
ID_FIELD = "image_id"
# binary, doc values only: an image's region codes for the rerank (store.location="elasticsearch")
RERANK_CODES_FIELD = "rerank_codes"


def bool_term_query(query: Mapping[str, float], field: str = TERMS_FIELD) -> dict[str, Any]:
    """``bool.should`` of ``term`` clauses, boost = the query weight."""
    return {
        "bool": {
            "should": [
                {"term": {field: {"value": term, "boost": float(weight)}}} for term, weight in query.items()
            ]
        }
    }


def sparse_vector_query(query: Mapping[str, float], field: str = TERMS_FIELD) -> dict[str, Any]:
    """The ``sparse_vector`` query on stored tokens, pruning off (exact)."""
    return {
        "sparse_vector": {
            "field": field,
            "query_vector": {term: float(weight) for term, weight in query.items()},
            "prune": False,
        }
    }


def max_sum_query(query: MaxSumQuery, field: str = CELLS_FIELD) -> dict[str, Any]:
    """``bool.should`` of one ``dis_max`` (tie_breaker 0) per group, over ``constant_score``
    filters, one per distinct weight of the group (a ``term``, or a ``terms`` of several)."""
    should = []
    for group in query.groups:
        by_weight: dict[float, list[str]] = {}
        for term, weight in group:
            by_weight.setdefault(weight, []).append(term)
        clauses = [
            {
                "constant_score": {
                    "filter": {"term": {field: terms[0]}} if len(terms) == 1 else {"terms": {field: terms}},
                    "boost": weight,
                }
            }
            for weight, terms in by_weight.items()
        ]
        should.append({"dis_max": {"queries": clauses, "tie_breaker": 0.0}})
    return {"bool": {"should": should}}


def weighted_terms_query(
    query: Query, formulation: str = DEFAULT_FORMULATION, field: str = TERMS_FIELD
) -> dict[str, Any]:
    """The request's query: a MaxSumQuery's own shape, or weighted terms in ``formulation``."""
    if isinstance(query, MaxSumQuery):
        return max_sum_query(query)
    if formulation == "bool":
        return bool_term_query(query, field)
    if formulation == "sparse_vector":
        return sparse_vector_query(query, field)
    raise ConfigError(f"unknown query formulation {formulation!r} (known: {', '.join(FORMULATIONS)})")


def search_body(
    query: Query,
    k: int,
    formulation: str = DEFAULT_FORMULATION,
    field: str = TERMS_FIELD,
    with_codes: bool = False,
) -> dict[str, Any]:
    """Top-``k`` by score: no total hit count (lets Lucene skip non-competitive docs), no _source;
    ``with_codes``: each hit's rerank codes too, from doc values, in the same request."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return {
        "query": weighted_terms_query(query, formulation, field),
        "size": k,
        "track_total_hits": False,
        "_source": False,
        "stored_fields": "_none_",
        "docvalue_fields": [ID_FIELD, RERANK_CODES_FIELD] if with_codes else [ID_FIELD],
        # Ties by id, as the embedded index breaks them: which of several tied documents make the
        # top k must not depend on Lucene's internal document numbers.
        "sort": [{"_score": "desc"}, {ID_FIELD: "asc"}],
    }


def msearch_body(
    index: str,
    queries: Sequence[Query],
    k: int,
    formulation: str = DEFAULT_FORMULATION,
    field: str = TERMS_FIELD,
) -> list[dict[str, Any]]:
    """The header/body pairs of one ``_msearch`` request, in query order. No partial results:
    a query whose shards are not all searched (a node lost, no replica) fails instead of
    silently missing documents."""
    body: list[dict[str, Any]] = []
    for query in queries:
        body.append({"index": index, "allow_partial_search_results": False})
        body.append(search_body(query, k, formulation, field))
    return body


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    if size < 1:
        raise ConfigError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def document_source(doc: SurrogateDocument) -> dict[str, Any]:
    """The stored document: terms as numbers, the fields a hit shows, and the id as a keyword."""
    source: dict[str, Any] = {ID_FIELD: doc.id}
    if doc.field == CELLS_FIELD:
        source[CELLS_FIELD] = list(doc.terms)
    else:
        source[TERMS_FIELD] = {term: int(tf) for term, tf in doc.terms.items()}
    if doc.path is not None:
        source["path"] = doc.path
    if doc.caption is not None:
        source["caption"] = doc.caption
    if doc.metadata:
        source["metadata"] = dict(doc.metadata)
    if doc.rerank_codes is not None:
        source[RERANK_CODES_FIELD] = doc.rerank_codes
    return source


def index_action(index: str, doc: SurrogateDocument) -> dict[str, Any]:
    """A bulk ``index`` action: the document id is the image id, so re-ingesting replaces (idempotent)."""
    return {"_op_type": "index", "_index": index, "_id": doc.id, "_source": document_source(doc)}


def delete_actions(index: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    for doc_id in ids:
        yield {"_op_type": "delete", "_index": index, "_id": doc_id}


DISPLAY_FIELDS = ("path", "caption", "metadata")  # what a hit shows; fetched without the terms


def document_from_source(doc_id: str, source: Mapping[str, Any]) -> SurrogateDocument:
    """Rebuild a ``SurrogateDocument`` from a stored ``_source`` (terms come back as floats)."""
    if CELLS_FIELD in source:
        terms, field = {term: 1 for term in source[CELLS_FIELD]}, CELLS_FIELD
    else:
        terms = {term: int(round(value)) for term, value in (source.get(TERMS_FIELD) or {}).items()}
        field = TERMS_FIELD
    return SurrogateDocument(
        id=doc_id,
        terms=terms,
        path=source.get("path"),
        caption=source.get("caption"),
        metadata=dict(source.get("metadata") or {}),
        field=field,
    )


def index_definition(
    definition: Mapping[str, Any],
    meta: Mapping[str, Any] | None,
    shards: int,
    replicas: int,
) -> dict[str, Any]:
    """Settings and mappings for ``indices.create``: the shipped definition plus the shard
    layout and the fingerprints recorded in ``mappings._meta``."""
    settings = {
        key: dict(value) if isinstance(value, Mapping) else value
        for key, value in definition["settings"].items()
    }
    index_settings = dict(settings.get("index", {}))
    index_settings.update(number_of_shards=shards, number_of_replicas=replicas)
    settings["index"] = index_settings
    mappings = dict(definition["mappings"])
    recorded = dict(mappings.get("_meta", {}))
    for key, value in (meta or {}).items():
        if value is not None:
            recorded[key] = value
    mappings["_meta"] = recorded
    if recorded.get("rerank_codes"):
        # not indexed (binary never is); doc values so a search returns it with the candidates
        mappings["properties"] = {**mappings["properties"], RERANK_CODES_FIELD: {"type": "binary", "doc_values": True}}
        # served from doc values; kept out of _source, which would hold a second copy
        source = dict(mappings.get("_source") or {})
        source["excludes"] = [*source.get("excludes", []), RERANK_CODES_FIELD]
        mappings["_source"] = source
    return {"settings": settings, "mappings": mappings}
