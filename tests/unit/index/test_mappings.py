"""The shipped index definition (no server)."""

from __future__ import annotations

import pytest

from teran_es.index.mappings import MappingNotFoundError, load_mapping


def test_image_index_v1_is_an_exact_sparse_vector_mapping():
    definition = load_mapping("image-index", 1)
    assert definition["version"] == 1
    props = definition["mappings"]["properties"]
    # Pruning would drop query terms: scores must stay the exact dot product.
    assert props["terms"] == {"type": "sparse_vector", "index_options": {"prune": False}}
    assert props["image_id"]["type"] == "keyword"
    assert props["metadata"] == {"type": "object", "enabled": False}
    # Only core analysis exists in the minimal distribution.
    assert props["caption"]["analyzer"] == "standard"
    assert definition["mappings"]["dynamic"] == "strict"
    assert definition["mappings"]["_meta"] == {"mapping": "image-index", "mapping_version": 1}


def test_image_index_v2_adds_a_keyword_cells_field_and_keeps_v1s_fields():
    v1, v2 = load_mapping("image-index", 1), load_mapping()
    assert v2["version"] == 2 and v2["mappings"]["_meta"]["mapping_version"] == 2
    props = v2["mappings"]["properties"]
    # cells carry no frequency and are never sorted or aggregated on: postings of documents only
    assert props["cells"] == {"type": "keyword", "index_options": "docs", "doc_values": False}
    assert {k: v for k, v in props.items() if k != "cells"} == v1["mappings"]["properties"]


def test_load_mapping_returns_a_fresh_copy():
    first = load_mapping()
    first["mappings"]["properties"].clear()
    assert load_mapping()["mappings"]["properties"]


def test_unknown_mapping_versions_are_a_clear_error():
    with pytest.raises(MappingNotFoundError, match="image-index.v99.json"):
        load_mapping("image-index", 99)
