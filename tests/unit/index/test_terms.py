"""The index's rule for surrogate terms (``is_valid_term``), shared by both backends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teran_es.index.terms import is_valid_term


@pytest.mark.parametrize("term", ["", "a.b", "_id", "a b", "a\x00", "x" * 256, 3])
def test_unusable_terms_are_refused(term):
    assert not is_valid_term(term)


@given(st.text())
def test_valid_terms_are_safe_sparse_vector_keys(term):
    if is_valid_term(term):
        assert term and "." not in term and not term.startswith("_")
        assert not any(ch.isspace() for ch in term)
        assert len(term.encode("utf-8")) <= 255
