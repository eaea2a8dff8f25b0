import numpy as np
import pytest

from teran_es.surrogate import (
    SparseEncoding,
    crelu,
    dense_to_sparse,
    pool_regions,
    quantize_tf,
    random_rotation,
    top_k_mask,
)
from teran_es.surrogate.sparse import all_row_terms, concatenate, row_terms


def test_random_rotation_is_orthogonal_seeded_and_seed_dependent():
    r = random_rotation(32, seed=5)
    assert r.dtype == np.float32
    np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-5)
    np.testing.assert_array_equal(r, random_rotation(32, seed=5))
    assert not np.allclose(r, random_rotation(32, seed=6))


def test_rotation_preserves_dot_products_up_to_the_query_mean_term(rng):
    r = random_rotation(16, seed=0).astype(np.float64)
    q, v, mu = rng.standard_normal((3, 16))
    assert np.isclose((r @ q) @ (r @ (v - mu)), q @ v - q @ mu)


def test_crelu_splits_signs():
    x = np.array([[1.5, -2.0, 0.0]])
    np.testing.assert_array_equal(crelu(x), [[1.5, 0.0, 0.0, 0.0, 2.0, 0.0]])


def test_crelu_dot_is_the_positive_part_of_the_products(rng):
    a, b = rng.standard_normal((2, 16))
    products = a * b
    assert np.isclose(crelu(a) @ crelu(b), np.maximum(products, 0).sum())
    assert np.isclose(crelu(a) @ crelu(b), (a @ b + np.abs(a) @ np.abs(b)) / 2)


def test_top_k_mask_matches_sorting(rng):
    values = rng.standard_normal((50, 20))
    for k in (0, 1, 5, 20, 25):
        mask = top_k_mask(values, k)
        assert (mask.sum(axis=1) == min(k, 20)).all()
        if 0 < k < 20:
            threshold = np.sort(values, axis=1)[:, -k][:, None]
            np.testing.assert_array_equal(mask, values >= threshold)


def test_pool_regions_max_and_sum_respect_the_mask(rng):
    values = rng.random((3, 4, 6))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    pooled_max = pool_regions(values, mask, "max")
    pooled_sum = pool_regions(values, mask, "sum")
    np.testing.assert_allclose(pooled_max[0], values[0, :2].max(axis=0))
    np.testing.assert_allclose(pooled_sum[1], values[1].sum(axis=0))
    assert not pooled_max[2].any() and not pooled_sum[2].any()
    np.testing.assert_allclose(pool_regions(values[0], mask[0], "max"), pooled_max[0])
    with pytest.raises(ValueError, match="pooling mode"):
        pool_regions(values, mask, "mean")


def test_quantize_rounds_clips_and_commutes_with_max(rng):
    values = np.array([0.0, 0.004, 0.006, 0.0149, 0.0151, 3.0, 1e30], dtype=np.float32)
    np.testing.assert_array_equal(quantize_tf(values, 100.0, 512), [0, 0, 1, 1, 2, 300, 512])
    a, b = rng.random((2, 100)) * 10
    np.testing.assert_array_equal(
        quantize_tf(np.maximum(a, b), 37.0, 200),
        np.maximum(quantize_tf(a, 37.0, 200), quantize_tf(b, 37.0, 200)),
    )


def test_sparse_round_trip_concatenate_and_dicts():
    dense = np.array([[0, 3, 0, 1], [0, 0, 0, 0], [2, 0, 0, 0]], dtype=np.int32)
    enc = dense_to_sparse(dense)
    assert enc.n_rows == 3 and enc.nnz == 3 and enc.indices.dtype == np.int32
    np.testing.assert_array_equal(enc.to_dense(), dense)
    np.testing.assert_array_equal(enc.terms_per_row(), [2, 0, 1])
    both = concatenate([enc, enc], 4, np.int32)
    np.testing.assert_array_equal(both.to_dense(), np.vstack([dense, dense]))
    names = ["a", "b", "c", "d"]
    assert row_terms(enc, 0, names) == {"b": 3, "d": 1}
    assert all_row_terms(enc, names) == [{"b": 3, "d": 1}, {}, {"a": 2}]
    assert isinstance(row_terms(enc, 0, names)["b"], int)
    assert concatenate([], 4, np.int32).n_rows == 0


def test_sparse_encoding_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="indptr"):
        SparseEncoding(np.zeros(2, np.int32), np.zeros(2), np.array([0, 1]), 4)
