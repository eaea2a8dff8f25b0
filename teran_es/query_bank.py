"""Query-bank normalisation of gallery items: a per-image offset that tempers "hub" images.

A model trained on some concepts scores the drawings of those concepts highly against many
texts, including texts about concepts it never saw, so they crowd the top of an unseen
concept's results. Scoring every gallery image once against a bank of training captions
gives each image a soft maximum of how strongly the trained texts already claim it:

    normaliser(i) = (1 / beta) * log( mean_b exp(beta * s(b, i)) )

and a text query ranks images by ``s(q, i) - normaliser(i)`` (an inverted softmax over the
bank, as in query-bank normalisation for cross-modal retrieval). ``beta`` sets how the bank's
scores are pooled: towards their mean as beta -> 0, their maximum as beta grows. One number
per image, computed offline, leaves image -> text rankings unchanged (every text of one image
moves by the same offset).
"""

from __future__ import annotations

import numpy as np


def bank_normaliser(bank_scores: np.ndarray, beta: float) -> np.ndarray:
    """Each image's log-mean-exp of its bank scores at temperature 1/beta.

    bank_scores [N, B] (image i against bank text b), beta > 0 -> float64 [N]. Computed
    stably (the row maximum is factored out).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    scores = np.asarray(bank_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"bank scores must be [images, bank texts] with at least one text, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("bank scores hold NaN or infinite values")
    z = beta * scores
    top = z.max(axis=1, keepdims=True)
    return (np.log(np.exp(z - top).mean(axis=1)) + top[:, 0]) / beta


def normalised_scores(scores: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """Text -> image scores [Q, N] less each image's normaliser [N] -> [Q, N]."""
    scores, normaliser = np.asarray(scores), np.asarray(normaliser)
    if scores.ndim != 2 or normaliser.shape != (scores.shape[1],):
        raise ValueError(f"scores {scores.shape} and normaliser {normaliser.shape} do not match ([Q, N] and [N])")
    return scores - normaliser[None, :]
