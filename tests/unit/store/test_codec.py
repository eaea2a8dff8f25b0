"""The dtype codec against brute-force, element-by-element references, and its error bounds."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from teran_es.store import codec


def reference_fp16(vectors: np.ndarray) -> np.ndarray:
    """Round every value through IEEE half with the struct module (round half to even)."""
    return np.array(
        [[struct.unpack("<e", struct.pack("<e", float(x)))[0] for x in row] for row in vectors],
        dtype=np.float64,
    )


def reference_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-vector int8 in float64 with Python's round (half to even)."""
    codes, scales = [], []
    for row in vectors.astype(np.float64):
        scale = max(abs(float(x)) for x in row) / 127
        scales.append(scale)
        codes.append([0 if scale == 0 else max(-127, min(127, round(float(x) / scale))) for x in row])
    return np.array(codes, dtype=np.int64), np.array(scales)


def random_unit_vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_fp32_is_exact():
    vectors = random_unit_vectors(5, 16, 0)
    codes, scales = codec.encode(vectors, "fp32")
    assert scales is None
    np.testing.assert_array_equal(codec.decode(codes, scales), vectors)


def test_fp16_matches_reference_rounding():
    vectors = np.concatenate([random_unit_vectors(6, 16, 1), [[1e-6, -3e-8, 65504.0, 0.1] * 4]]).astype(
        np.float32
    )
    codes, scales = codec.encode(vectors, "fp16")
    assert codes.dtype == np.float16 and scales is None
    np.testing.assert_array_equal(codec.decode(codes, scales).astype(np.float64), reference_fp16(vectors))


def test_int8_matches_reference():
    vectors = random_unit_vectors(40, 32, 2) * np.float32(3.0)
    codes, scales = codec.encode(vectors, "int8")
    want_codes, want_scales = reference_int8(vectors)
    np.testing.assert_allclose(scales, want_scales, rtol=1e-6)
    # float32 vs float64 division may flip a value sitting on a .5 tie; never by more than one step.
    assert np.abs(codes.astype(np.int64) - want_codes).max() <= 1
    assert (codes.astype(np.int64) != want_codes).mean() < 0.01
    assert np.abs(codes).max() == 127  # the largest component of each vector maps to +-127


def test_int8_zero_vector_round_trips_to_zero():
    codes, scales = codec.encode(np.zeros((2, 8), np.float32), "int8")
    assert not codes.any() and not scales.any()
    assert not codec.decode(codes, scales).any()


@pytest.mark.parametrize("dtype", codec.DTYPES)
def test_torch_decode_matches_numpy_decode(dtype):
    vectors = random_unit_vectors(9, 24, 3)
    codes, scales = codec.encode(vectors, dtype)
    out = torch.empty(vectors.shape)
    codec.decode_into(out, torch.from_numpy(codes), None if scales is None else torch.from_numpy(scales))
    np.testing.assert_array_equal(out.numpy(), codec.decode(codes, scales))


@pytest.mark.parametrize("dtype", codec.DTYPES)
def test_unit_vectors_stay_within_documented_bound(dtype):
    vectors = random_unit_vectors(64, 128, 4)
    decoded = codec.decode(*codec.encode(vectors, dtype))
    error = np.abs(decoded.astype(np.float64) - vectors)
    assert (error <= codec.error_bound(vectors, dtype)).all()
    if dtype == "int8":
        # The docstring's consequences for unit vectors: 1/254 per component, sqrt(D) * s / 2 in L2.
        assert error.max() <= 1 / 254 * (1 + 2 * codec.INT8_SLACK)
        scales = np.abs(vectors).max(axis=1) / 127
        assert (np.linalg.norm(error, axis=1) <= math.sqrt(128) * scales * (0.5 + codec.INT8_SLACK)).all()


def test_bytes_per_vector():
    assert [codec.bytes_per_vector(d, 1024) for d in codec.DTYPES] == [4096, 2048, 1028]


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="bf16"):
        codec.check_dtype("bf16")


finite_floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=True, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 40)), elements=finite_floats))
def test_int8_error_bound_holds_for_any_finite_input(vectors):
    codes, scales = codec.encode(vectors, "int8")
    assert codes.dtype == np.int8 and np.abs(codes.astype(np.int16)).max() <= 127
    error = np.abs(codec.decode(codes, scales).astype(np.float64) - vectors.astype(np.float64))
    assert (error <= codec.error_bound(vectors, "int8")).all()


@settings(max_examples=100, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 30)),
        elements=st.floats(-65504, 65504, allow_nan=False, allow_subnormal=True, width=32),
    )
)
def test_fp16_error_bound_holds_in_range(vectors):
    error = np.abs(
        codec.decode(*codec.encode(vectors, "fp16")).astype(np.float64) - vectors.astype(np.float64)
    )
    assert (error <= codec.error_bound(vectors, "fp16")).all()
