"""Query-bank normalisation: the normaliser against a brute-force reference, its limits in
beta, and what it does (and does not do) to rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from teran_es.query_bank import bank_normaliser, normalised_scores


def brute_force_normaliser(bank_scores, beta):
    return np.asarray([math.log(sum(math.exp(beta * s) for s in row) / len(row)) / beta for row in bank_scores])


@pytest.mark.parametrize("beta", [0.5, 5.0, 20.0])
def test_normaliser_against_brute_force(beta):
    bank = np.random.default_rng(1).normal(0, 1, (7, 13))
    np.testing.assert_allclose(bank_normaliser(bank, beta), brute_force_normaliser(bank, beta), rtol=1e-10)


def test_normaliser_is_stable_for_large_scores():
    bank = np.full((2, 4), 300.0)
    bank[1, 0] = 310.0  # exp(40 * 310) overflows float64; the factored form does not
    out = bank_normaliser(bank, 40.0)
    assert np.isfinite(out).all()
    assert out[0] == pytest.approx(300.0)
    assert out[1] == pytest.approx(310.0 + math.log(0.25) / 40.0)


def test_normaliser_moves_from_mean_to_max_with_beta():
    bank = np.random.default_rng(2).normal(0, 1, (5, 30))
    np.testing.assert_allclose(bank_normaliser(bank, 1e-6), bank.mean(1), atol=1e-5)
    np.testing.assert_allclose(bank_normaliser(bank, 1e4), bank.max(1), atol=1e-3)
    low, mid, high = (bank_normaliser(bank, b) for b in (1.0, 5.0, 25.0))
    assert (low <= mid).all() and (mid <= high).all()  # a power mean grows with its exponent


def test_normalised_scores_demote_hub_images_for_text_queries():
    # image 0 is a hub: it scores high against every bank text; image 1 only against the query
    scores = np.array([[0.9, 0.8]])
    bank = np.array([[0.9, 0.9, 0.9], [0.1, 0.1, 0.1]])
    plain_top = int(np.argmax(scores[0]))
    normalised_top = int(np.argmax(normalised_scores(scores, bank_normaliser(bank, 5.0))[0]))
    assert (plain_top, normalised_top) == (0, 1)


def test_image_to_text_order_is_unchanged():
    rng = np.random.default_rng(3)
    scores, bank = rng.normal(0, 1, (20, 6)), rng.normal(0, 1, (6, 9))
    shifted = normalised_scores(scores, bank_normaliser(bank, 5.0))
    # ranking the 20 texts for each image: a per-image offset moves them all alike
    np.testing.assert_array_equal(np.argsort(-scores, axis=0, kind="stable"), np.argsort(-shifted, axis=0, kind="stable"))


@pytest.mark.parametrize(
    ("bank", "beta", "message"),
    [
        (np.ones((3, 2)), 0.0, "beta must be > 0"),
        (np.ones((3, 0)), 1.0, "at least one text"),
        (np.ones(3), 1.0, "at least one text"),
        (np.array([[1.0, np.nan]]), 1.0, "NaN"),
    ],
)
def test_bad_input_is_refused(bank, beta, message):
    with pytest.raises(ValueError, match=message):
        bank_normaliser(bank, beta)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="do not match"):
        normalised_scores(np.zeros((2, 3)), np.zeros(4))
