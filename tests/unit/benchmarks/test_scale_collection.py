"""The scale benchmark's synthetic collection: exact scan, determinism, cache reuse (tiny, fake embeddings)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import scale_collection as sc  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fake_real() -> sc.RealEmbeddings:
    rng = np.random.default_rng(0)
    regions = _unit(rng.standard_normal((30, 4, 16)))
    lengths = [3, 1, 0, 5, 2, 4, 2, 3]  # one caption without scored words: never a query
    words = [_unit(rng.standard_normal((n, 16))) for n in lengths]
    return sc.RealEmbeddings(regions, [f"caption {i}" for i in range(len(lengths))], words)


def _reference_top(regions: np.ndarray, words: list[np.ndarray], top: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force in float64: every image scored, stable sort by descending score."""
    r = regions.astype(np.float64)
    scores = np.stack(
        [np.einsum("nrd,wd->nwr", r, w.astype(np.float64)).max(axis=2).sum(axis=1) for w in words]
    )
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("max_bytes", [1, 3000, 1 << 30])  # one image per chunk, a few, all at once
def test_exact_scan_equals_brute_force(fake_real, max_bytes):
    rng = np.random.default_rng(1)
    regions = _unit(rng.standard_normal((157, 4, 16))).astype(np.float16)
    words = [w for w in fake_real.query_words if w.shape[0]]
    ids, scores, info = sc.exact_scan(regions, words, top=20, max_bytes=max_bytes, progress=False)
    ref_ids, ref_scores = _reference_top(regions, words, 20)
    assert ids.shape == scores.shape == (len(words), 20)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ids, ref_ids)
    if max_bytes == 1:
        assert info["images_per_chunk"] == 1


def test_exact_scan_breaks_ties_by_lower_index():
    regions = np.zeros((10, 2, 4), dtype=np.float16)
    regions[:, :, 0] = 1.0  # every image scores the same
    ids, _, _ = sc.exact_scan(regions, [np.eye(4, dtype=np.float32)[:1]], top=5, max_bytes=64, progress=False)
    assert ids.tolist() == [[0, 1, 2, 3, 4]]


def test_exact_scan_shorter_than_top():
    regions = _unit(np.random.default_rng(2).standard_normal((3, 2, 4))).astype(np.float16)
    ids, scores, _ = sc.exact_scan(regions, [np.eye(4, dtype=np.float32)[:2]], top=100, progress=False)
    assert ids.shape == (1, 3) and sorted(ids[0].tolist()) == [0, 1, 2]


def test_recipe_is_deterministic_by_seed(fake_real, tmp_path):
    recipe = sc.RegionRecipe(n_images=sc.CHUNK_IMAGES + 5, seed=3)  # two random chunks
    a, _ = sc.build_collection(
        fake_real, recipe, tmp_path / "a", 4, model_fingerprint="f" * 64, progress=False
    )
    b, _ = sc.build_collection(
        fake_real, recipe, tmp_path / "b", 4, model_fingerprint="f" * 64, progress=False
    )
    c, _ = sc.build_collection(
        fake_real,
        sc.RegionRecipe(n_images=recipe.n_images, seed=4),
        tmp_path / "c",
        4,
        model_fingerprint="f" * 64,
        progress=False,
    )
    np.testing.assert_array_equal(np.asarray(a.regions), np.asarray(b.regions))
    assert a.query_texts == b.query_texts
    np.testing.assert_array_equal(a.exact_top, b.exact_top)
    assert not np.array_equal(np.asarray(a.regions), np.asarray(c.regions))
    # rows are unit vectors (up to float16 rounding), and the noise reached its target cosine
    norms = np.linalg.norm(np.asarray(a.regions, dtype=np.float32), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert abs(a.manifest["perturbation"]["measured_mean_centred_cosine_to_source"] - 0.9) < 0.01
    # the captions without words are never chosen; a prefix of the permutation serves fewer queries
    assert "caption 2" not in a.query_texts and len(a.query_texts) == 4
    assert sc.select_queries(fake_real, 2, 3) == sc.select_queries(fake_real, 4, 3)[:2]


def test_exact_lists_match_the_stored_regions(fake_real, tmp_path):
    coll, _ = sc.build_collection(
        fake_real, sc.RegionRecipe(n_images=300), tmp_path, 5, model_fingerprint="x" * 64, progress=False
    )
    ref_ids, ref_scores = _reference_top(np.asarray(coll.regions), coll.query_words, sc.TOP)
    np.testing.assert_array_equal(coll.exact_top, ref_ids)
    np.testing.assert_allclose(coll.exact_scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(coll.scores_of(0, coll.exact_top[0, :7]), coll.exact_scores[0, :7], atol=1e-5)


def test_cache_is_reused_and_rebuilt_when_needed(fake_real, tmp_path, monkeypatch):
    recipe = sc.RegionRecipe(n_images=50, seed=1)
    first, done = sc.build_collection(
        fake_real, recipe, tmp_path, 3, model_fingerprint="m" * 64, progress=False
    )
    assert done["built"]

    def fail(*args, **kwargs):
        raise AssertionError("the cached collection should have been used")

    monkeypatch.setattr(sc, "synthesize", fail)
    monkeypatch.setattr(sc, "exact_scan", fail)
    again, done = sc.build_collection(
        fake_real, recipe, tmp_path, 2, model_fingerprint="m" * 64, progress=False
    )
    assert not done["built"] and again.n_queries == 2
    np.testing.assert_array_equal(again.exact_top, first.exact_top[:2])
    monkeypatch.undo()

    # more queries than cached: the regions stay, the exact lists are recomputed
    monkeypatch.setattr(sc, "synthesize", fail)
    more, done = sc.build_collection(
        fake_real, recipe, tmp_path, 5, model_fingerprint="m" * 64, progress=False
    )
    assert done["built"] and not done["regions_rebuilt"] and more.n_queries == 5
    np.testing.assert_array_equal(more.exact_top[:3], first.exact_top)
    monkeypatch.undo()

    # another recipe (or an interrupted build: no manifest) builds again
    _, done = sc.build_collection(
        fake_real,
        sc.RegionRecipe(n_images=50, seed=1, centred_cosine=0.8),
        tmp_path,
        3,
        model_fingerprint="m" * 64,
        progress=False,
    )
    assert done["regions_rebuilt"]
    (tmp_path / sc.MANIFEST).unlink()
    assert sc.load_collection(tmp_path) is None


def test_real_embeddings_round_trip(fake_real, tmp_path):
    sc.save_real(fake_real, tmp_path)
    back = sc.load_real(tmp_path)
    np.testing.assert_array_equal(back.regions, fake_real.regions)
    assert back.query_texts == fake_real.query_texts
    assert [w.shape for w in back.query_words] == [w.shape for w in fake_real.query_words]
    assert sc.load_real(tmp_path / "missing") is None
