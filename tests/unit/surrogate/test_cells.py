"""k-means, the two-level cell codebook and the cell encoder, against brute-force references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from teran_es.config import QuantizerConfig
from teran_es.surrogate import CellTokenEncoder, MaxSumQuery, fit_encoder, load_encoder
from teran_es.surrogate.cell_encoder import auto_cells, level_weights
from teran_es.surrogate.cells import CellCodebook, split_cells
from teran_es.surrogate.kmeans import assign_nearest, kmeans


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --------------------------------------------------------------------------- k-means


def test_assign_nearest_is_the_brute_force_nearest_centroid():
    rng = np.random.default_rng(0)
    x, centroids = rng.standard_normal((500, 8)), rng.standard_normal((37, 8))
    distances = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign_nearest(x, centroids), distances.argmin(1))
    assert assign_nearest(np.zeros((0, 8)), centroids).shape == (0,)


def test_kmeans_finds_separated_clusters_and_uses_every_centroid():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((6, 5)) * 20
    x = np.concatenate([c + rng.standard_normal((100, 5)) for c in centres])
    found = kmeans(x, 6, iters=25, seed=3)
    # every true centre has a centroid within a unit of it
    assert (np.linalg.norm(centres[:, None] - found[None], axis=-1).min(1) < 1.0).all()
    labels = assign_nearest(x, found)
    assert np.bincount(labels, minlength=6).min() > 0
    np.testing.assert_array_equal(found, kmeans(x, 6, iters=25, seed=3))  # deterministic
    with pytest.raises(ValueError, match="1 <= k"):
        kmeans(x[:3], 4)


def test_kmeans_refills_empty_clusters_from_duplicate_points():
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # three distinct points, ten copies each
    found = kmeans(x, 5, iters=5, seed=0)
    assert len(np.unique(assign_nearest(x, found))) == 3
    assert np.isfinite(found).all()


# --------------------------------------------------------------------------- the codebook


def test_split_cells():
    assert split_cells(65536) == (256, 256)
    assert split_cells(262144) == (512, 512)
    assert split_cells(2048) == (64, 32)
    assert split_cells(96, 8) == (8, 12)
    with pytest.raises(ValueError):
        split_cells(100, 7)


@pytest.fixture(scope="module")
def codebook():
    return CellCodebook.fit(unit(np.random.default_rng(2), (6000, 16)), 256, iters=8, seed=0)


def test_assign_is_the_nearest_fine_centroid_of_the_nearest_coarse_one(codebook):
    x = unit(np.random.default_rng(3), (400, 16))
    cells = codebook.assign(x)
    coarse = assign_nearest(x, codebook.coarse)
    for v, cell, c in zip(x, cells, coarse, strict=True):
        fine = codebook.fine[c, : codebook.fine_used[c]]
        assert cell == c * codebook.per_coarse + int(((fine - v) ** 2).sum(1).argmin())


def test_probe_over_every_coarse_cell_is_the_exact_top_n(codebook):
    words = unit(np.random.default_rng(4), (5, 16))
    cells, sims = codebook.probe(words, 20, beam=0 or codebook.n_coarse)
    exact = words @ codebook.leaves.T
    exact[:, ~codebook.used_cells] = -np.inf
    for w in range(5):
        assert set(cells[w]) == set(np.argsort(-exact[w])[:20])
        np.testing.assert_allclose(sims[w], exact[w, cells[w]], rtol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()  # best first


def test_a_beam_probes_only_the_chosen_coarse_cells_and_ranks_them_exactly(codebook):
    words = unit(np.random.default_rng(5), (4, 16))
    cells, sims = codebook.probe(words, 10, beam=2)
    chosen = np.argsort(-(words @ codebook.coarse.T), axis=1)[:, :2]
    for w in range(4):
        assert set(cells[w] // codebook.per_coarse) <= set(chosen[w])
        np.testing.assert_allclose(sims[w], words[w] @ codebook.leaves[cells[w]].T, rtol=1e-5)


def test_a_coarse_cell_with_few_points_keeps_only_real_cells():
    rng = np.random.default_rng(6)
    x = np.concatenate([unit(rng, (2000, 8)), np.full((3, 8), 9.0, np.float32)])  # a far, tiny cluster
    book = CellCodebook.fit(x, 64, n_coarse=8, iters=10)
    assert book.fine_used.min() < book.per_coarse  # the tiny cluster's coarse cell
    unused = np.flatnonzero(~book.used_cells)
    assert not np.isin(book.assign(x), unused).any()
    cells, _ = book.probe(np.full((1, 8), 9.0, np.float32), 64, beam=0 or 8)
    assert not np.isin(cells, unused).any()


def test_probe_survives_vectors_near_the_float32_limit(codebook):
    words = np.full((2, 16), np.finfo(np.float32).max / 4, dtype=np.float32)
    cells, sims = codebook.probe(words, 5, beam=codebook.n_coarse)
    assert np.isfinite(sims).all() and cells.shape == (2, 5)


# --------------------------------------------------------------------------- the encoder


@pytest.fixture(scope="module")
def images():
    return unit(np.random.default_rng(7), (300, 6, 16))


@pytest.fixture(scope="module")
def encoder(images):
    return CellTokenEncoder.fit(images, QuantizerConfig(kind="cells", cells=64, codebooks=2, nprobe=12, probe_beam=0, sample_size=1000))


def test_documents_are_the_distinct_cells_of_the_valid_regions(encoder, images):
    mask = np.ones(images.shape[:2], dtype=bool)
    mask[0, 3:] = False
    batch = encoder.encode_images(images[:5], mask[:5])
    docs = encoder.term_dicts(batch.encoding)
    for i in range(5):
        cells = encoder.cells_of(images[i][mask[i]])
        assert docs[i] == {f"m{m}c{c}": 1 for m in range(2) for c in set(cells[:, m].tolist())}
    assert batch.ids(["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]


def brute_force_cell_score(encoder: CellTokenEncoder, regions: np.ndarray, words: np.ndarray) -> float:
    """sum over codebooks and words of max over the probed cells the image holds of sim - floor."""
    total = 0.0
    held = encoder.cells_of(regions)
    for m, book in enumerate(encoder.codebooks):
        sims = words @ book.leaves.T
        for w in range(words.shape[0]):
            order = np.argsort(-sims[w], kind="stable")[: encoder.config.nprobe]
            floor = sims[w, order[-1]]
            weights = {int(c): sims[w, c] - floor for c in order}
            total += max([weights.get(int(c), 0.0) for c in held[:, m]])
    return total


def test_the_query_scores_an_image_as_the_brute_force_cell_mrsw(encoder, images):
    exact_weights = encoder.with_query_settings(dataclasses.replace(encoder.config, query_levels=0))
    words = unit(np.random.default_rng(8), (3, 16))
    query = exact_weights.query(words)
    assert isinstance(query, MaxSumQuery) and len(query) <= 6
    for i in range(20):
        terms = set(encoder.term_dicts(encoder.encode_images(images[i : i + 1]).encoding)[0])
        score = sum(max([w for t, w in group if t in terms], default=0.0) for group in query.groups)
        assert score == pytest.approx(brute_force_cell_score(exact_weights, images[i], words), abs=1e-5)


def test_masked_words_are_left_out_and_the_floors_are_the_offset(encoder):
    words = unit(np.random.default_rng(9), (4, 16))
    plain = encoder.with_query_settings(dataclasses.replace(encoder.config, query_levels=0))
    masked = plain.query(words, np.array([True, False, True, False]))
    assert masked == plain.query(words[[0, 2]])
    floors = sum(book.probe(words[[0, 2]], 12, book.n_coarse)[1][:, -1].sum() for book in encoder.codebooks)
    assert masked.offset == pytest.approx(floors, abs=1e-5)


def test_level_weights_round_down_to_a_fraction_of_each_words_largest():
    weights = np.array([[0.0, 0.1, 0.35, 0.8], [0.2, 0.2, 0.2, 0.0]])
    np.testing.assert_allclose(level_weights(weights, 4), [[0.0, 0.0, 0.2, 0.8], [0.2, 0.2, 0.2, 0.0]])
    np.testing.assert_array_equal(level_weights(weights, 0), weights)
    assert (level_weights(np.zeros((1, 3)), 8) == 0).all()


def test_query_side_settings_change_the_query_not_the_fingerprint(encoder):
    words = unit(np.random.default_rng(10), (2, 16))
    wider = encoder.with_query_settings(dataclasses.replace(encoder.config, nprobe=30))
    assert wider.fingerprint == encoder.fingerprint
    assert wider.query(words).n_terms > encoder.query(words).n_terms


def test_save_load_round_trip_and_tampering(tmp_path, encoder, images):
    path = encoder.save(tmp_path / "cells.npz")
    loaded = load_encoder(path)
    assert isinstance(loaded, CellTokenEncoder) and loaded.fingerprint == encoder.fingerprint
    assert loaded.term_dicts(loaded.encode_images(images[:3]).encoding) == encoder.term_dicts(
        encoder.encode_images(images[:3]).encoding
    )
    with np.load(path) as data:
        arrays = dict(data)
    arrays["fine0"] = arrays["fine0"] + 1e-3
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        load_encoder(tmp_path / "edited.npz")


def test_fit_refuses_too_few_vectors_and_bad_settings(images):
    with pytest.raises(ValueError, match="coarse cells"):
        CellTokenEncoder.fit(images[:2], QuantizerConfig(kind="cells", cells=4096))
    for bad in ({"codebooks": 0}, {"nprobe": 1}, {"cells": 3 * 2**18}, {"cells": 100, "coarse_cells": 7}, {"query_levels": -1}):
        with pytest.raises(ValueError, match="invalid quantizer config"):
            CellTokenEncoder.fit(images, QuantizerConfig(kind="cells", **bad))
    with pytest.raises(ValueError, match="NaN"):
        CellTokenEncoder.fit(np.full((10, 4, 16), np.nan, np.float32), QuantizerConfig(kind="cells"))


def test_auto_cells_and_fit_encoder_dispatch(images):
    assert auto_cells(65536) == 4096 and auto_cells(10) == 16 and auto_cells(10**9) == 2**18
    fitted = fit_encoder(images, QuantizerConfig(kind="cells", codebooks=1, sample_size=1000))
    assert isinstance(fitted, CellTokenEncoder) and fitted.n_cells == auto_cells(1000)
    with pytest.raises(ValueError, match="quantizer.kind"):
        fit_encoder(images, QuantizerConfig(kind="lsh"))
