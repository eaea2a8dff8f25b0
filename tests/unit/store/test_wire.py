"""Codes as text (``wire``) and the region source over fetched codes (``fetched``): a round trip
is bit-exact, and fetched codes decode to exactly what the feature store gives for those images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.store import FeatureStore
from teran_es.store.fetched import FetchedRegions
from teran_es.store.wire import pack, unpack


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_pack_unpack_round_trip_keeps_the_first_count_regions(dtype):
    rng = np.random.default_rng(0)
    storage = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8}[dtype]
    if dtype == "int8":
        codes = rng.integers(-127, 128, size=(7, 12)).astype(np.int8)
        scales = rng.random(7).astype(np.float32)
    else:
        codes, scales = rng.standard_normal((7, 12)).astype(storage), None
    text = pack(codes, scales, 5, dtype)
    got_codes, got_scales = unpack(text, 12, dtype)
    assert got_codes.dtype == storage and np.array_equal(got_codes, codes[:5])
    if dtype == "int8":
        assert np.array_equal(got_scales, scales[:5])
    else:
        assert got_scales is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="need"):
        pack(np.zeros((2, 4), np.int8), None, 2, "int8")
    with pytest.raises(ValueError, match="whole"):
        unpack(pack(np.zeros((2, 4), np.float16), None, 2, "fp16"), 3, "fp16")


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_fetched_regions_decode_exactly_like_the_store(tmp_path, dtype):
    rng = np.random.default_rng(1)
    n, r, d = 20, 6, 16
    regions = rng.standard_normal((n, r, d)).astype(np.float32)
    mask = np.arange(r)[None, :] < rng.integers(1, r + 1, size=n)[:, None]  # ragged region counts
    ids = [f"img{i:02d}" for i in range(n)]
    store = FeatureStore.open(tmp_path / "store", create=True, dim=d, dtype=dtype, model_fingerprint="m")
    try:
        store.add(ids, regions, mask)
        store.flush()
        codes, scales, got_mask = store.get_codes(ids)
        counts = got_mask.sum(dim=1).tolist()
        packed = {i: pack(codes[j].numpy(), None if scales is None else scales[j].numpy(), counts[j], dtype)
                  for j, i in enumerate(ids)}
        fetched = FetchedRegions(packed, d, dtype)
        batch = ["img07", "img03", "img19"]
        want_regions, want_mask = store.get_many(batch)
    finally:
        store.close()
    got_regions, got_mask = fetched.get_many(batch)
    assert torch.equal(got_mask, want_mask) and torch.equal(got_regions, want_regions)
    assert fetched.positions(batch) == [7, 3, 19] and len(fetched) == n
    with pytest.raises(KeyError, match="no codes were fetched"):
        fetched.get_many(["nope"])
