"""What the sparse score approximates, measured against brute force on seeded data.

Quantity: with a = CReLU(R q) and d = CReLU(R (v - mu)), the surrogate score
score(q, v) = sum_t weight_t * tf_t, scaled back by tf_step = doc_scale / Q, approximates
P(q, v) = <a, d> = sum_i max((R q)_i (R (v - mu))_i, 0) = (<q, v - mu> + <|R q|, |R (v - mu)|>) / 2.
The error |score * tf_step - P| comes from rounding (shrinks as Q grows) and from the
components dropped by top-gamma (shrinks as gamma grows; none are dropped once gamma >= D,
because a CReLU'd vector has at most D non-zero components).
"""

import numpy as np
import pytest

from teran_es.config import QuantizerConfig
from teran_es.surrogate import SurrogateTextEncoder, crelu

DIM = 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)

    def unit(n):
        x = rng.standard_normal((n, DIM)) + 0.3
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return unit(2000), unit(300), unit(100)  # fit sample, documents, queries


def brute_force_p(encoder, queries, documents):
    """[Nq, Nd] float64: P(q, v) by dense CReLU products."""
    a = crelu(encoder.transform(queries, "query").astype(np.float64))
    d = crelu(encoder.transform(documents, "document").astype(np.float64))
    return a @ d.T


def surrogate_mae(data, **settings):
    sample, documents, queries = data
    encoder = SurrogateTextEncoder.fit(sample, QuantizerConfig(seed=0, **settings))
    scores = (
        encoder.encode_vectors(queries, "query").to_dense() @ encoder.encode_vectors(documents).to_dense().T
    )
    p = brute_force_p(encoder, queries, documents)
    return float(np.abs(scores * encoder.tf_step - p).mean()), float(np.abs(p).mean())


def test_p_is_half_the_dot_product_plus_half_the_absolute_product(data):
    sample, documents, queries = data
    encoder = SurrogateTextEncoder.fit(sample, QuantizerConfig())
    rq = encoder.transform(queries, "query").astype(np.float64)
    rv = encoder.transform(documents, "document").astype(np.float64)
    true_dot = queries.astype(np.float64) @ (documents - encoder.mean).astype(np.float64).T
    expected = (true_dot + np.abs(rq) @ np.abs(rv).T) / 2
    np.testing.assert_allclose(brute_force_p(encoder, queries, documents), expected, atol=1e-5)


def test_error_shrinks_as_q_grows(data):
    errors = [surrogate_mae(data, gamma=2 * DIM, q_factor=q)[0] for q in (2, 8, 32, 128)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    _, mean_abs_p = surrogate_mae(data, gamma=2 * DIM, q_factor=128)
    assert errors[-1] < 0.01 * mean_abs_p  # measured about 0.2%


def test_error_shrinks_as_gamma_grows(data):
    errors = [surrogate_mae(data, gamma=g, q_factor=256)[0] for g in (2, 4, 8, 16, DIM)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] == pytest.approx(surrogate_mae(data, gamma=2 * DIM, q_factor=256)[0])


# ------------------------------------------------------------------------ pooling bounds
@pytest.fixture(scope="module")
def images_and_sentences():
    rng = np.random.default_rng(99)
    regions = rng.standard_normal((12, 7, DIM)).astype(np.float32) + 0.2
    region_mask = rng.random((12, 7)) > 0.2
    words = rng.standard_normal((8, 5, DIM)).astype(np.float32) + 0.2
    word_mask = rng.random((8, 5)) > 0.2
    word_mask[:, 0] = True
    return regions, region_mask, words, word_mask


def test_max_pooling_upper_bounds_mrsw_on_kept_parts(images_and_sentences):
    """With t_j = tf vector of region j (its top-gamma, quantised) and a_k = query vector of
    word k (its top query_gamma), the max-pooled document m = max_j t_j satisfies, exactly,
        sum_k max_j <a_k, t_j>  <=  <sum_k a_k, m>  =  per-word query . document
    (doc_sparsify="regions", no doc_gamma cap, query_weighting="per-word")."""
    regions, region_mask, words, word_mask = images_and_sentences
    config = QuantizerConfig(
        gamma=6, query_gamma=6, pooling="max", doc_sparsify="regions", query_weighting="per-word"
    )
    encoder = SurrogateTextEncoder.fit(regions, config, mask=region_mask)
    documents = encoder.encode_images(regions, region_mask).encoding.to_dense().astype(np.float64)
    queries = encoder.encode_queries(words, word_mask).to_dense()
    for i in range(regions.shape[0]):
        t = encoder.encode_vectors(regions[i][region_mask[i]]).to_dense().astype(np.float64)
        np.testing.assert_array_equal(
            documents[i], t.max(axis=0) if len(t) else 0.0
        )  # rounding commutes with max
        for s in range(words.shape[0]):
            a = encoder.encode_vectors(words[s][word_mask[s]], "query").to_dense()
            # float32 rotation of a batch vs. of one sentence differs in the last bits only
            np.testing.assert_allclose(queries[s], a.sum(axis=0), rtol=1e-6)
            mrsw_kept = (a @ t.T).max(axis=1).sum() if len(t) else 0.0
            assert mrsw_kept <= a.sum(axis=0) @ documents[i] * (1 + 1e-12)


def test_sum_pooling_equals_sum_sum_on_kept_parts(images_and_sentences):
    """sum_k sum_j <a_k, t_j> == <sum_k a_k, sum_j t_j> when no tf is clipped (sum pooling)."""
    regions, region_mask, words, word_mask = images_and_sentences
    config = QuantizerConfig(
        gamma=6, query_gamma=6, pooling="sum", doc_sparsify="regions", query_weighting="per-word"
    )
    encoder = SurrogateTextEncoder.fit(regions, config, mask=region_mask)
    documents = encoder.encode_images(regions, region_mask).encoding.to_dense().astype(np.float64)
    assert documents.max() < encoder.config.max_tf
    for i in range(regions.shape[0]):
        t = encoder.encode_vectors(regions[i][region_mask[i]]).to_dense().astype(np.float64)
        # sum-then-round differs from round-then-sum by at most half a step per region
        assert np.abs(documents[i] - t.sum(axis=0)).max() <= 0.5 * max(len(t), 1) + 1e-9


def test_dense_max_pooling_bound(images_and_sentences):
    """Without sparsification or rounding: sum_k max_j <w_k+, r_j+> <= <sum_k w_k+, max_j r_j+>."""
    regions, region_mask, words, word_mask = images_and_sentences
    encoder = SurrogateTextEncoder.fit(regions, QuantizerConfig(), mask=region_mask)
    for i in range(regions.shape[0]):
        r = crelu(encoder.transform(regions[i][region_mask[i]], "document").astype(np.float64))
        for s in range(words.shape[0]):
            w = crelu(encoder.transform(words[s][word_mask[s]], "query").astype(np.float64))
            assert (w @ r.T).max(axis=1).sum() <= w.sum(axis=0) @ r.max(axis=0) * (1 + 1e-12)
