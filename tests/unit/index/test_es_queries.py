"""The pure Elasticsearch request builders (no server)."""

from __future__ import annotations

import pytest

from teran_es.index import es_queries
from teran_es.index.base import SurrogateDocument
from teran_es.index.mappings import load_mapping

QUERY = {"t1": 0.5, "t22": 2, "abc": 1.25}


def test_bool_query_is_a_should_of_term_clauses_boosted_by_weight():
    body = es_queries.bool_term_query(QUERY)
    assert body == {
        "bool": {
            "should": [
                {"term": {"terms": {"value": "t1", "boost": 0.5}}},
                {"term": {"terms": {"value": "t22", "boost": 2.0}}},
                {"term": {"terms": {"value": "abc", "boost": 1.25}}},
            ]
        }
    }
    assert all(isinstance(c["term"]["terms"]["boost"], float) for c in body["bool"]["should"])


def test_sparse_vector_query_turns_pruning_off():
    body = es_queries.sparse_vector_query(QUERY)
    assert body == {
        "sparse_vector": {"field": "terms", "query_vector": {"t1": 0.5, "t22": 2.0, "abc": 1.25}, "prune": False}
    }


def test_weighted_terms_query_dispatches_and_refuses_unknown_formulations():
    assert es_queries.weighted_terms_query(QUERY, "bool") == es_queries.bool_term_query(QUERY)
    assert es_queries.weighted_terms_query(QUERY, "sparse_vector") == es_queries.sparse_vector_query(QUERY)
    assert es_queries.DEFAULT_FORMULATION in es_queries.FORMULATIONS
    with pytest.raises(ValueError, match="unknown query formulation"):
        es_queries.weighted_terms_query(QUERY, "knn")


def test_search_body_asks_for_k_hits_without_totals_or_source_and_ids_from_doc_values():
    body = es_queries.search_body(QUERY, 7, "bool")
    assert body["size"] == 7
    assert body["track_total_hits"] is False
    assert body["_source"] is False
    assert body["stored_fields"] == "_none_" and body["docvalue_fields"] == [es_queries.ID_FIELD]
    assert body["query"] == es_queries.bool_term_query(QUERY)
    with pytest.raises(ValueError):
        es_queries.search_body(QUERY, 0)


def test_msearch_body_pairs_a_header_with_each_query_in_order():
    queries = [{"a": 1.0}, {"b": 2.0}, {"c": 3.0}]
    body = es_queries.msearch_body("images", queries, 5, "sparse_vector")
    assert len(body) == 6
    assert body[0::2] == [{"index": "images", "allow_partial_search_results": False}] * 3
    assert [b["query"]["sparse_vector"]["query_vector"] for b in body[1::2]] == queries
    assert all(b["size"] == 5 for b in body[1::2])


def test_batched_splits_in_order():
    assert [list(b) for b in es_queries.batched(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(es_queries.batched([], 3)) == []
    with pytest.raises(ValueError):
        list(es_queries.batched([1], 0))


def test_documents_round_trip_through_source():
    doc = SurrogateDocument(id="img-1", terms={"t1": 512, "t2": 1}, path="/a.jpg", caption="a cat",
                            metadata={"w": 640})
    action = es_queries.index_action("images", doc)
    assert action["_op_type"] == "index" and action["_id"] == "img-1" and action["_index"] == "images"
    source = action["_source"]
    assert source == {"terms": {"t1": 512, "t2": 1}, "image_id": "img-1", "path": "/a.jpg", "caption": "a cat",
                      "metadata": {"w": 640}}
    # The server hands frequencies back as floats.
    returned = {**source, "terms": {"t1": 512.0, "t2": 1.0}}
    assert es_queries.document_from_source("img-1", returned) == doc


def test_optional_fields_are_left_out_of_the_source():
    source = es_queries.document_source(SurrogateDocument(id="x", terms={"a": 3}))
    assert source == {"terms": {"a": 3}, "image_id": "x"}
    assert es_queries.document_from_source("x", source) == SurrogateDocument(id="x", terms={"a": 3})


def test_delete_actions():
    assert list(es_queries.delete_actions("i", ["a", "b"])) == [
        {"_op_type": "delete", "_index": "i", "_id": "a"},
        {"_op_type": "delete", "_index": "i", "_id": "b"},
    ]


def test_index_definition_records_fingerprints_and_shard_layout_without_touching_the_shipped_one():
    shipped = load_mapping()
    definition = es_queries.index_definition(
        shipped, {"quantizer_fingerprint": "q", "model_fingerprint": "m", "unset": None}, shards=3, replicas=1
    )
    assert definition["settings"]["index"]["number_of_shards"] == 3
    assert definition["settings"]["index"]["number_of_replicas"] == 1
    meta = definition["mappings"]["_meta"]
    assert meta["quantizer_fingerprint"] == "q" and meta["model_fingerprint"] == "m"
    assert meta["mapping"] == "image-index" and meta["mapping_version"] == 2
    assert "unset" not in meta
    assert "quantizer_fingerprint" not in shipped["mappings"]["_meta"]
    assert shipped["settings"]["index"]["number_of_shards"] == 1


def test_rerank_codes_travel_as_a_doc_values_field_kept_out_of_source():
    from teran_es.index.base import SurrogateDocument
    from teran_es.index.mappings import load_mapping

    plain = es_queries.index_definition(load_mapping(), {"quantizer_fingerprint": "q"}, 1, 0)
    assert es_queries.RERANK_CODES_FIELD not in plain["mappings"]["properties"]
    with_codes = es_queries.index_definition(load_mapping(), {"rerank_codes": "int8"}, 1, 0)
    assert with_codes["mappings"]["properties"][es_queries.RERANK_CODES_FIELD] == {"type": "binary", "doc_values": True}
    assert es_queries.RERANK_CODES_FIELD in with_codes["mappings"]["_source"]["excludes"]
    doc = SurrogateDocument(id="a", terms={"t": 1}, rerank_codes="AAEC")
    assert es_queries.document_source(doc)[es_queries.RERANK_CODES_FIELD] == "AAEC"
    assert es_queries.RERANK_CODES_FIELD not in es_queries.document_source(SurrogateDocument(id="a", terms={"t": 1}))
    body = es_queries.search_body({"t": 1.0}, 5, "sparse_vector", with_codes=True)
    assert body["docvalue_fields"] == [es_queries.ID_FIELD, es_queries.RERANK_CODES_FIELD]
