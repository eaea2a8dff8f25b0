"""Shared seeded data for the surrogate-text tests (small D keeps the whole directory fast)."""

import numpy as np
import pytest

from teran_es.config import QuantizerConfig
from teran_es.surrogate import SurrogateTextEncoder

DIM = 16


def unit_vectors(rng: np.random.Generator, shape: tuple[int, ...], offset: float = 0.3) -> np.ndarray:
    """Unit vectors [..., DIM] with a shared mean direction (as real embeddings have), float32."""
    x = rng.standard_normal(shape + (DIM,)) + offset * np.ones(DIM)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(name="unit_vectors")
def unit_vectors_fixture():
    """The :func:`unit_vectors` helper (test modules cannot import conftest under importlib mode)."""
    return unit_vectors


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def sample(rng: np.random.Generator) -> np.ndarray:
    """float32 [500, DIM] unit vectors."""
    return unit_vectors(rng, (500,))


@pytest.fixture
def image_sample(rng: np.random.Generator) -> np.ndarray:
    """float32 [60, 6, DIM]: 60 images of 6 regions."""
    return unit_vectors(rng, (60, 6))


@pytest.fixture
def encoder(sample: np.ndarray) -> SurrogateTextEncoder:
    return SurrogateTextEncoder.fit(sample, QuantizerConfig(gamma=8, q_factor=50.0, seed=3))
