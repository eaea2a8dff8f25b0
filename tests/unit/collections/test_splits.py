"""Splits and samples of the collection by stable hashes: seeded, and kind to skin tones."""

from __future__ import annotations

from collections import Counter

import pytest

from teran_es.collections.splits import assign_split, stable_sample


def test_split_is_deterministic_and_seeded():
    codes = [f"{0x1F300 + i:04X}" for i in range(3000)]
    first = [assign_split(c, seed=0) for c in codes]
    assert first == [assign_split(c, seed=0) for c in codes]
    assert first != [assign_split(c, seed=1) for c in codes]
    counts = Counter(first)
    assert set(counts) == {"train", "val", "test"}
    assert 0.75 < counts["train"] / len(codes) < 0.85
    assert 0.07 < counts["test"] / len(codes) < 0.13


@pytest.mark.parametrize("seed", range(20))
def test_skin_tone_variants_share_their_base_split(seed: int):
    base = assign_split("1F44B", seed)
    assert all(assign_split(f"1F44B-{tone:04X}", seed) == base for tone in range(0x1F3FB, 0x1F400))
    couple = assign_split("1F9D1-200D-1F91D-200D-1F9D1", seed)
    assert assign_split("1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FE", seed) == couple
    fully_qualified = assign_split("26F9-FE0F-200D-2640-FE0F", seed)
    assert assign_split("26F9-1F3FB-200D-2640-FE0F", seed) == fully_qualified


def test_a_stable_sample_is_the_same_every_time_and_keeps_code_order():
    codes = [f"{0x1F300 + i:04X}" for i in range(200)]
    sample = stable_sample(codes, 30)
    assert sample == stable_sample(list(reversed(codes)), 30) == sorted(sample)
    assert len(sample) == 30 and set(sample) <= set(codes)
    assert sample != codes[:30]  # varied, not the first 30
    assert stable_sample(codes, None) is codes and stable_sample(codes, 500) is codes
