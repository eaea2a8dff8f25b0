import pytest
from hypothesis import given
from hypothesis import strategies as st

from teran_es.index.terms import is_valid_term
from teran_es.surrogate import (
    parse_region_document_id,
    parse_term,
    region_document_id,
    term_name,
    vocabulary,
)


@given(st.integers(1, 5000).flatmap(lambda d: st.tuples(st.just(d), st.integers(0, 2 * d - 1))))
def test_term_name_round_trips_and_is_a_valid_index_term(dim_component):
    dim, component = dim_component
    name = term_name(component, dim)
    assert parse_term(name, dim) == component
    assert is_valid_term(name)
    assert len(name) <= 5


def test_vocabulary_matches_term_name():
    dim = 7
    assert vocabulary(dim) == [term_name(c, dim) for c in range(2 * dim)]
    assert len(set(vocabulary(dim))) == 2 * dim


@pytest.mark.parametrize(
    "bad", ["", "q1", "p", "p01", "p-1", "P1", "p1.0", " p1", "p1 ", "n16", "p16", "p1x"]
)
def test_parse_term_rejects_non_canonical_names(bad):
    with pytest.raises(ValueError):
        parse_term(bad, 16)


@pytest.mark.parametrize("component", [-1, 32])
def test_term_name_rejects_out_of_range(component):
    with pytest.raises(ValueError, match="outside"):
        term_name(component, 16)


@given(st.text(min_size=0, max_size=20), st.integers(0, 10_000))
def test_region_document_id_round_trips(image_id, slot):
    assert parse_region_document_id(region_document_id(image_id, slot)) == (image_id, slot)


@pytest.mark.parametrize("bad", ["img", "img#r", "img#rx", "img#r01", "img#r-1", "img#1"])
def test_parse_region_document_id_rejects_malformed(bad):
    with pytest.raises(ValueError, match="region document id"):
        parse_region_document_id(bad)
