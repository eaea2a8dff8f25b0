"""Hypothesis properties: any finite input gives valid terms, tf in [1, max_tf], deterministic output."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from teran_es.config import QuantizerConfig
from teran_es.index.terms import is_valid_term
from teran_es.surrogate import SurrogateTextEncoder, parse_term

DIM = 16
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Arbitrary float32 values, plus the extremes drawn often: zeros, the largest finite, subnormals.
ELEMENTS = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, FLOAT32_MAX, -FLOAT32_MAX, 1e-45, -1e-45, 1e-38, 1.0]),
)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def encoders() -> dict[str, SurrogateTextEncoder]:
    rng = np.random.default_rng(7)
    images = rng.standard_normal((40, 5, DIM)).astype(np.float32)
    return {
        pooling: SurrogateTextEncoder.fit(images, QuantizerConfig(gamma=5, doc_gamma=9, pooling=pooling))
        for pooling in ("max", "sum", "region")
    }


def assert_valid_documents(encoder, encoding, max_terms):
    assert encoding.values.dtype == np.int32
    if encoding.nnz:
        assert encoding.values.min() >= 1 and encoding.values.max() <= encoder.config.max_tf
        assert encoding.indices.min() >= 0 and encoding.indices.max() < 2 * DIM
    assert (encoding.terms_per_row() <= max_terms).all()
    for terms in encoder.term_dicts(encoding):
        for term, tf in terms.items():
            assert is_valid_term(term) and 0 <= parse_term(term, DIM) < 2 * DIM
            assert isinstance(tf, int)


@PROPERTY_SETTINGS
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.just(DIM)), elements=ELEMENTS))
def test_any_finite_document_vectors_encode_to_valid_terms(encoders, x):
    encoder = encoders["region"]
    first = encoder.encode_vectors(x, "document")
    assert_valid_documents(encoder, first, encoder.gamma)
    second = encoder.encode_vectors(x.copy(), "document")
    np.testing.assert_array_equal(first.to_dense(), second.to_dense())


@PROPERTY_SETTINGS
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(0, 5), st.just(DIM)), elements=ELEMENTS),
    st.sampled_from(["max", "sum", "region"]),
    st.data(),
)
def test_any_finite_images_encode_to_valid_documents(encoders, regions, pooling, data):
    encoder = encoders[pooling]
    mask = data.draw(hnp.arrays(np.bool_, regions.shape[:2]))
    batch = encoder.encode_images(regions, mask)
    max_terms = encoder.gamma if pooling == "region" else encoder.doc_gamma
    assert_valid_documents(encoder, batch.encoding, max_terms)
    expected_rows = int(mask.sum()) if pooling == "region" else regions.shape[0]
    assert batch.encoding.n_rows == expected_rows
    np.testing.assert_array_equal(
        batch.encoding.to_dense(), encoder.encode_images(regions, mask).encoding.to_dense()
    )


@PROPERTY_SETTINGS
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(0, 4), st.just(DIM)), elements=ELEMENTS),
    st.sampled_from(["sum", "per-word"]),
)
def test_any_finite_sentences_encode_to_finite_positive_weights(encoders, words, mode):
    encoder = encoders["max"]
    encoding = encoder.encode_queries(words, mode=mode)
    assert encoding.values.dtype == np.float64
    assert np.isfinite(encoding.values).all() and (encoding.values > 0).all()
    per_row_cap = encoder.query_gamma * (words.shape[1] if mode == "per-word" else 1)
    assert (encoding.terms_per_row() <= min(per_row_cap, 2 * DIM)).all()
    np.testing.assert_array_equal(encoding.to_dense(), encoder.encode_queries(words, mode=mode).to_dense())
    for terms in encoder.term_dicts(encoding):
        assert all(is_valid_term(t) and isinstance(w, float) for t, w in terms.items())


@PROPERTY_SETTINGS
@given(
    hnp.arrays(
        np.float32, st.tuples(st.integers(2, 30), st.just(DIM)), elements=st.floats(-1e3, 1e3, width=32)
    )
)
def test_fit_on_arbitrary_samples_is_deterministic_or_refuses_clearly(x):
    config = QuantizerConfig(gamma=4, seed=11)
    try:
        first = SurrogateTextEncoder.fit(x, config)
    except ValueError as exc:
        assert "constant sample" in str(exc)
        return
    assert first.fingerprint == SurrogateTextEncoder.fit(x.copy(), config).fingerprint
    assert first.doc_scale > 0
