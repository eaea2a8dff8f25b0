import dataclasses

import numpy as np
import pytest

from teran_es.config import QuantizerConfig
from teran_es.surrogate import SurrogateTextEncoder, parse_term

DIM = 16  # as in conftest.py


# ---------------------------------------------------------------- brute-force references
def reference_kept(transformed: np.ndarray, k: int) -> np.ndarray:
    """Per-row loop: CReLU then keep the k largest components (ties never occur on random data)."""
    out = []
    for row in transformed:
        c = np.concatenate([np.maximum(row, 0), np.maximum(-row, 0)]).astype(np.float64)
        keep = np.zeros_like(c)
        order = np.argsort(-c, kind="stable")[:k]
        keep[order] = c[order]
        out.append(keep)
    return np.array(out)


def reference_top(values: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest entries of a 1-D array, zero the rest."""
    keep = np.zeros_like(values)
    order = np.argsort(-values, kind="stable")[:k]
    keep[order] = values[order]
    return keep


def reference_tf(values: np.ndarray, encoder: SurrogateTextEncoder) -> np.ndarray:
    tf = np.floor(values / encoder.tf_step + 0.5)
    return np.minimum(tf, encoder.config.max_tf).astype(np.int64)


# ------------------------------------------------------------------------------- fitting
def test_fit_centres_rotates_and_calibrates(sample, encoder):
    np.testing.assert_allclose(encoder.mean, sample.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(encoder.rotation @ encoder.rotation.T, np.eye(DIM), atol=1e-5)
    kept = reference_kept(encoder.transform(sample, "document"), encoder.gamma)
    assert np.isclose(encoder.doc_scale, np.quantile(kept[kept > 0], 0.999), rtol=1e-5)
    assert encoder.tf_step == pytest.approx(encoder.doc_scale / 50.0)


def test_transform_roles(sample, encoder):
    x = sample[:5].astype(np.float64)
    r = encoder.rotation.astype(np.float64)
    np.testing.assert_allclose(encoder.transform(sample[:5], "document"), (x - encoder.mean) @ r.T, atol=1e-5)
    np.testing.assert_allclose(encoder.transform(sample[:5], "query"), x @ r.T, atol=1e-5)


def test_fit_subsamples_to_sample_size(sample):
    small = SurrogateTextEncoder.fit(sample, QuantizerConfig(sample_size=100, seed=1))
    full = SurrogateTextEncoder.fit(sample, QuantizerConfig(sample_size=10_000, seed=1))
    assert not np.allclose(small.mean, full.mean)


def test_fit_rejects_degenerate_samples(sample):
    with pytest.raises(ValueError, match="at least 2"):
        SurrogateTextEncoder.fit(sample[:1], QuantizerConfig())
    with pytest.raises(ValueError, match="constant sample"):
        SurrogateTextEncoder.fit(np.ones((10, DIM), np.float32), QuantizerConfig())
    with pytest.raises(ValueError, match="image sample"):
        SurrogateTextEncoder.fit(sample, QuantizerConfig(pooling="sum"))


@pytest.mark.parametrize(
    "bad",
    [
        dict(gamma=0),
        dict(q_factor=0.0),
        dict(max_tf=0),
        dict(pooling="avg"),
        dict(query_weighting="max"),
        dict(doc_sparsify="late"),
        dict(scale_quantile=0.0),
    ],
)
def test_fit_rejects_bad_settings(sample, bad):
    with pytest.raises(ValueError, match="invalid quantizer config"):
        SurrogateTextEncoder.fit(sample, QuantizerConfig(**bad))


# ------------------------------------------------------------------------------ encoding
def test_encode_documents_matches_brute_force(sample, encoder):
    x = sample[:40]
    enc = encoder.encode_vectors(x, "document")
    assert enc.values.dtype == np.int32 and enc.indices.dtype == np.int32
    expected = reference_tf(reference_kept(encoder.transform(x, "document"), encoder.gamma), encoder)
    np.testing.assert_array_equal(enc.to_dense(), expected)
    assert (enc.terms_per_row() <= encoder.gamma).all()
    assert enc.values.min() >= 1 and enc.values.max() <= 512


def test_encode_queries_matches_brute_force(rng, encoder, unit_vectors):
    words = unit_vectors(rng, (3, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=bool)
    rotated = [encoder.transform(w, "query") for w in words]
    sum_mode = encoder.encode_queries(words, mask, mode="sum").to_dense()
    per_word = encoder.encode_queries(words, mask, mode="per-word").to_dense()
    for b in range(3):
        crelu_words = reference_kept(rotated[b][mask[b]], 2 * DIM)
        expected_sum = reference_top(crelu_words.sum(axis=0), encoder.query_gamma)
        np.testing.assert_allclose(sum_mode[b], expected_sum, rtol=1e-6)
        expected_per_word = reference_kept(rotated[b][mask[b]], encoder.query_gamma).sum(axis=0)
        np.testing.assert_allclose(per_word[b], expected_per_word, rtol=1e-6)
    assert sum_mode.dtype == np.float64


def test_query_terms_is_row_zero_of_encode_queries(rng, encoder, unit_vectors):
    words = unit_vectors(rng, (4,))
    terms = encoder.query_terms(words, np.array([1, 1, 0, 1], bool))
    enc = encoder.encode_queries(words[None], np.array([[1, 1, 0, 1]], bool))
    assert terms == encoder.document_terms(enc, 0)
    assert all(isinstance(w, float) and w > 0 for w in terms.values())
    assert {parse_term(t, DIM) for t in terms} == set(enc.row(0)[0].tolist())


def image_encoder(image_sample, **settings) -> SurrogateTextEncoder:
    return SurrogateTextEncoder.fit(image_sample, QuantizerConfig(gamma=6, seed=2, **settings))


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("order", ["pooled", "regions"])
def test_pooled_documents_match_brute_force(rng, image_sample, pooling, order, unit_vectors):
    encoder = image_encoder(image_sample, pooling=pooling, doc_sparsify=order, doc_gamma=10)
    regions = unit_vectors(rng, (5, 6))
    mask = np.ones((5, 6), bool)
    mask[1, 3:] = False
    mask[4] = False
    batch = encoder.encode_images(regions, mask)
    assert batch.encoding.n_rows == 5 and (batch.region_slots == -1).all()
    np.testing.assert_array_equal(batch.image_rows, np.arange(5))
    for i in range(5):
        valid = encoder.transform(regions[i][mask[i]], "document")
        per_region = reference_kept(valid, encoder.gamma if order == "regions" else 2 * DIM)
        if per_region.size == 0:
            pooled = np.zeros(2 * DIM)
        else:
            pooled = per_region.max(axis=0) if pooling == "max" else per_region.sum(axis=0)
        expected = reference_tf(reference_top(pooled, 10), encoder)
        np.testing.assert_array_equal(batch.encoding.to_dense()[i], expected)
    assert batch.encoding.terms_per_row()[4] == 0


def test_sum_pooling_calibrates_on_pooled_documents(image_sample):
    max_encoder = image_encoder(image_sample, pooling="max")
    sum_encoder = image_encoder(image_sample, pooling="sum")
    assert sum_encoder.doc_scale > 2 * max_encoder.doc_scale
    batch = sum_encoder.encode_images(image_sample)
    assert batch.encoding.values.max() < 2 * sum_encoder.config.q_factor


def test_region_documents_are_single_region_encodings(rng, image_sample, unit_vectors):
    encoder = image_encoder(image_sample, pooling="region")
    regions = unit_vectors(rng, (3, 6))
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    batch = encoder.encode_images(regions, mask)
    assert batch.encoding.n_rows == 16
    np.testing.assert_array_equal(batch.image_rows, np.repeat([0, 1, 2], [4, 6, 6]))
    np.testing.assert_array_equal(batch.region_slots, np.r_[0:4, 0:6, 0:6])
    single = encoder.encode_vectors(regions[mask], "document")
    np.testing.assert_array_equal(batch.encoding.to_dense(), single.to_dense())
    assert batch.ids(["a", "b", "c"])[:5] == ["a#r0", "a#r1", "a#r2", "a#r3", "b#r0"]


def test_doc_gamma_defaults(image_sample):
    assert image_encoder(image_sample, doc_gamma=0).doc_gamma == 6
    assert image_encoder(image_sample, doc_gamma=0, doc_sparsify="regions").doc_gamma == 2 * DIM
    assert image_encoder(image_sample).doc_gamma == 2 * DIM  # the default 256 is clamped to 2D
    assert image_encoder(image_sample, doc_gamma=1000).doc_gamma == 2 * DIM
    assert image_encoder(image_sample, query_gamma=3).query_gamma == 3


def test_chunked_encoding_equals_whole_batch(monkeypatch, sample, encoder):
    whole = encoder.encode_vectors(sample, "document")
    monkeypatch.setattr("teran_es.surrogate.encoder._CHUNK_FLOATS", 7 * 2 * DIM)
    chunked = encoder.encode_vectors(sample, "document")
    np.testing.assert_array_equal(whole.to_dense(), chunked.to_dense())


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("bad_value", "word"), [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")]
)
def test_non_finite_input_raises_a_clear_error(sample, image_sample, encoder, bad_value, word):
    bad = sample[:4].copy()
    bad[2, 3] = bad_value
    for call in (
        lambda: encoder.encode_vectors(bad, "document"),
        lambda: encoder.encode_vectors(bad, "query"),
        lambda: encoder.encode_queries(bad[None]),
        lambda: encoder.query_terms(bad),
        lambda: encoder.encode_images(bad[None]),
        lambda: SurrogateTextEncoder.fit(np.vstack([sample, bad]), QuantizerConfig()),
    ):
        with pytest.raises(ValueError, match=word):
            call()


def test_wrong_dimensions_raise(sample, encoder):
    with pytest.raises(ValueError, match="dimension 16"):
        encoder.encode_vectors(sample[:, :8])
    with pytest.raises(ValueError, match="2-D"):
        encoder.encode_vectors(sample[0])
    with pytest.raises(ValueError, match="3-D"):
        encoder.encode_images(sample)
    with pytest.raises(ValueError, match="mask"):
        encoder.encode_queries(sample[None, :5], np.ones((1, 4), bool))
    with pytest.raises(ValueError, match="role"):
        encoder.encode_vectors(sample, "image")
    with pytest.raises(ValueError, match="real numbers"):
        encoder.encode_vectors(np.full((2, DIM), "a"))


def test_float64_beyond_float32_range_raises(encoder):
    with pytest.raises(ValueError, match="float32 range"):
        encoder.encode_vectors(np.full((1, DIM), 1e300))


# ------------------------------------------------------------------ save, load, fingerprint
def test_save_load_round_trip(tmp_path, rng, sample, encoder, unit_vectors):
    path = encoder.save(tmp_path / "sub" / "quantizer.npz")
    loaded = SurrogateTextEncoder.load(path)
    assert loaded.fingerprint == encoder.fingerprint
    assert loaded.config == encoder.config and loaded.doc_scale == encoder.doc_scale
    np.testing.assert_array_equal(
        loaded.encode_vectors(sample).to_dense(), encoder.encode_vectors(sample).to_dense()
    )
    words = unit_vectors(rng, (2, 3))
    np.testing.assert_array_equal(
        loaded.encode_queries(words).to_dense(), encoder.encode_queries(words).to_dense()
    )
    assert not list(tmp_path.glob("**/*.tmp"))


def test_load_refuses_an_altered_file(tmp_path, encoder):
    path = encoder.save(tmp_path / "q.npz")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["mean"] = arrays["mean"] + 1e-3
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        SurrogateTextEncoder.load(tmp_path / "edited.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a first-stage encoder file"):
        SurrogateTextEncoder.load(tmp_path / "junk.npz")


def test_fingerprint_identity_and_sensitivity(rng, sample, encoder, unit_vectors):
    config = QuantizerConfig(gamma=8, q_factor=50.0, seed=3)
    assert SurrogateTextEncoder.fit(sample, config).fingerprint == encoder.fingerprint
    other_seed = SurrogateTextEncoder.fit(sample, dataclasses.replace(config, seed=4))
    other_sample = SurrogateTextEncoder.fit(unit_vectors(rng, (500,)), config)
    other_q = SurrogateTextEncoder.fit(sample, dataclasses.replace(config, q_factor=60.0))
    fingerprints = {
        encoder.fingerprint,
        other_seed.fingerprint,
        other_sample.fingerprint,
        other_q.fingerprint,
    }
    assert len(fingerprints) == 4
    query_side = SurrogateTextEncoder.fit(sample, dataclasses.replace(config, query_weighting="per-word"))
    assert query_side.fingerprint == encoder.fingerprint  # query-side settings may change without reindexing


def test_encoder_keeps_a_private_copy_of_its_config(sample):
    config = QuantizerConfig(gamma=8)
    encoder = SurrogateTextEncoder.fit(sample, config)
    config.gamma = 2
    assert encoder.gamma == 8
