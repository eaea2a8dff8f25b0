"""Alignment scores against a plain Python restatement of the definitions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from teran_es.model.alignment import (
    PADDINGS,
    SCORE_KINDS,
    _block_sizes,
    alignment_matrix,
    chunked_scores,
    pairwise_scores,
)


def naive_score(regions, region_mask, words, word_mask, kind, padding) -> float:
    """One image x one sentence, straight from the definitions (Python floats, no vector tricks)."""
    num_words, num_regions = words.shape[0], regions.shape[0]
    dots = [[float(torch.dot(words[i], regions[j])) for j in range(num_regions)] for i in range(num_words)]
    valid_words = [i for i in range(num_words) if word_mask[i]]
    valid_regions = [j for j in range(num_regions) if region_mask[j]]
    if padding == "reference":
        # padded entries of A are 0 and take part in every reduction
        entry = [
            [dots[i][j] if (word_mask[i] and region_mask[j]) else 0.0 for j in range(num_regions)]
            for i in range(num_words)
        ]
        mr_sw = sum(max(row) for row in entry)
        mw_sr = sum(max(entry[i][j] for i in range(num_words)) for j in range(num_regions))
        total = sum(sum(row) for row in entry)
        mean = total / (num_words * num_regions)
    else:
        mr_sw = sum(max((dots[i][j] for j in valid_regions), default=0.0) for i in valid_words)
        mw_sr = sum(max((dots[i][j] for i in valid_words), default=0.0) for j in valid_regions)
        total = sum(dots[i][j] for i in valid_words for j in valid_regions)
        mean = total / (len(valid_words) * len(valid_regions)) if valid_words and valid_regions else 0.0
    return {
        "MrSw": mr_sw,
        "MwSr": mw_sr,
        "symm": mr_sw + mw_sr,
        "sum": total,
        "mean": mean,
        "MrAVGw": mr_sw / max(1, len(valid_words)),
    }[kind]


def naive_scores(regions, region_mask, words, word_mask, kind, padding) -> torch.Tensor:
    out = torch.zeros(regions.shape[0], words.shape[0], dtype=torch.float64)
    for n in range(regions.shape[0]):
        for m in range(words.shape[0]):
            out[n, m] = naive_score(regions[n], region_mask[n], words[m], word_mask[m], kind, padding)
    return out


def random_inputs(n, m, num_regions, num_words, dim, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    regions = torch.nn.functional.normalize(
        torch.randn(n, num_regions, dim, generator=gen, dtype=dtype), dim=-1
    )
    words = torch.nn.functional.normalize(torch.randn(m, num_words, dim, generator=gen, dtype=dtype), dim=-1)
    region_mask = torch.rand(n, num_regions, generator=gen) < 0.7
    word_mask = torch.rand(m, num_words, generator=gen) < 0.7
    region_mask[0] = True  # one full image and one with no valid region, when there are two
    if n > 1:
        region_mask[1] = False
    if m > 1:
        word_mask[-1] = False
    # garbage in padded slots must not leak into any score
    regions = torch.where(region_mask[..., None], regions, torch.full_like(regions, 7.0))
    words = torch.where(word_mask[..., None], words, torch.full_like(words, -5.0))
    return regions, region_mask, words, word_mask


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_pairwise_matches_naive(kind, padding):
    inputs = random_inputs(5, 4, 6, 7, 8, seed=hash((kind, padding)) % 1000)
    got = pairwise_scores(*inputs, kind=kind, padding=padding)
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, naive_scores(*inputs, kind, padding), rtol=0, atol=1e-10)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_pairwise_with_nothing_padded_matches_naive(kind, padding):
    # every mask full: the padding fill is skipped, the scores must not change
    regions, region_mask, words, word_mask = random_inputs(4, 3, 5, 6, 8, seed=7)
    inputs = (regions, torch.ones_like(region_mask), words, torch.ones_like(word_mask))
    got = pairwise_scores(*inputs, kind=kind, padding=padding)
    torch.testing.assert_close(got, naive_scores(*inputs, kind, padding), rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    m=st.integers(1, 4),
    num_regions=st.integers(1, 5),
    num_words=st.integers(1, 5),
    dim=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(SCORE_KINDS),
    padding=st.sampled_from(PADDINGS),
)
def test_pairwise_matches_naive_any_shape(n, m, num_regions, num_words, dim, seed, kind, padding):
    inputs = random_inputs(n, m, num_regions, num_words, dim, seed)
    got = pairwise_scores(*inputs, kind=kind, padding=padding)
    torch.testing.assert_close(got, naive_scores(*inputs, kind, padding), rtol=0, atol=1e-10)


@pytest.mark.parametrize("max_bytes", [1, 200, 3000, 2**30])
@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_chunked_equals_pairwise(kind, max_bytes):
    inputs = random_inputs(9, 11, 5, 6, 8, seed=3)
    for padding in PADDINGS:
        whole = pairwise_scores(*inputs, kind=kind, padding=padding)
        chunked = chunked_scores(*inputs, kind=kind, padding=padding, max_bytes=max_bytes, device="cpu")
        assert chunked.device.type == "cpu" and chunked.dtype == torch.float32
        torch.testing.assert_close(chunked, whole.float(), rtol=0, atol=1e-6)


def test_chunked_float32_blocks_agree_with_one_block():
    inputs = random_inputs(13, 7, 4, 5, 16, seed=5, dtype=torch.float32)
    one_block = chunked_scores(*inputs, max_bytes=2**30)
    tiny_blocks = chunked_scores(*inputs, max_bytes=64)
    torch.testing.assert_close(tiny_blocks, one_block, rtol=0, atol=1e-6)


def test_chunked_mixed_precision_inputs_are_promoted():
    regions, region_mask, words, word_mask = random_inputs(4, 3, 5, 6, 8, seed=9, dtype=torch.float32)
    got = chunked_scores(regions.half(), region_mask, words, word_mask)
    want = pairwise_scores(regions.half().float(), region_mask, words, word_mask)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_chunked_empty_inputs():
    regions, region_mask, words, word_mask = random_inputs(3, 2, 4, 4, 8, seed=1)
    assert chunked_scores(regions[:0], region_mask[:0], words, word_mask).shape == (0, 2)
    assert chunked_scores(regions, region_mask, words[:0], word_mask[:0]).shape == (3, 0)
    for kind in SCORE_KINDS:  # sentences or images with no positions at all score 0
        assert not pairwise_scores(regions, region_mask, words[:, :0], word_mask[:, :0], kind).any()
        assert not pairwise_scores(
            regions[:, :0], region_mask[:, :0], words, word_mask, kind, "reference"
        ).any()


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 10_000),
    m=st.integers(1, 10_000),
    pair_bytes=st.integers(1, 10_000),
    max_bytes=st.integers(1, 10**7),
)
def test_block_sizes_respect_the_memory_bound(n, m, pair_bytes, max_bytes):
    n_block, m_block = _block_sizes(n, m, pair_bytes, max_bytes)
    assert 1 <= n_block <= n and 1 <= m_block <= m
    assert n_block * m_block * pair_bytes <= max_bytes or (n_block, m_block) == (1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_chunked_on_cuda_matches_cpu():
    inputs = random_inputs(20, 30, 6, 7, 32, seed=2, dtype=torch.float32)
    for kind in SCORE_KINDS:
        cpu = chunked_scores(*inputs, kind=kind, max_bytes=4096)
        cuda = chunked_scores(*inputs, kind=kind, max_bytes=4096, device="cuda")
        assert cuda.device.type == "cpu"
        torch.testing.assert_close(cuda, cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kind", ["MrSw", "MwSr", "symm", "mean"])
def test_gradients_match_a_direct_implementation(kind, padding):
    """The padding stand-ins must route gradients exactly like explicit masking would."""
    regions, region_mask, words, word_mask = random_inputs(3, 4, 5, 6, 8, seed=11)
    regions.requires_grad_(True)
    words.requires_grad_(True)
    weights = torch.randn(3, 4, dtype=torch.float64)
    (pairwise_scores(regions, region_mask, words, word_mask, kind, padding) * weights).sum().backward()
    got_regions, got_words = regions.grad.clone(), words.grad.clone()
    regions.grad = words.grad = None

    fill = 0.0 if padding == "reference" else float("-inf")
    matrix = alignment_matrix(words, regions, word_mask, region_mask, fill=fill)  # [N, M, W, R]
    by_words, by_regions = matrix.amax(dim=3), matrix.amax(dim=2)  # -inf where nothing is valid
    by_words = torch.where(torch.isfinite(by_words), by_words, 0.0)
    by_regions = torch.where(torch.isfinite(by_regions), by_regions, 0.0)
    mr_sw = (torch.where(word_mask[None], by_words, 0.0)).sum(-1)
    mw_sr = (torch.where(region_mask[:, None], by_regions, 0.0)).sum(-1)
    if kind == "mean":
        zeroed = alignment_matrix(words, regions, word_mask, region_mask, fill=0.0)
        if padding == "reference":
            direct = zeroed.sum(dim=(2, 3)) / (words.shape[1] * regions.shape[1])
        else:
            counts = region_mask.sum(1)[:, None] * word_mask.sum(1)[None, :]
            direct = zeroed.sum(dim=(2, 3)) / counts.clamp(min=1)
    else:
        direct = {"MrSw": mr_sw, "MwSr": mw_sr, "symm": mr_sw + mw_sr}[kind]
    (direct * weights).sum().backward()
    torch.testing.assert_close(got_regions, regions.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_words, words.grad, rtol=0, atol=1e-10)


def test_alignment_matrix_values_and_fill():
    regions, region_mask, words, word_mask = random_inputs(2, 3, 4, 5, 6, seed=4)
    plain = alignment_matrix(words, regions)
    assert plain.shape == (2, 3, 5, 4)
    torch.testing.assert_close(plain[1, 2, 3, 0], torch.dot(words[2, 3], regions[1, 0]))
    filled = alignment_matrix(words, regions, word_mask, region_mask, fill=-1.0)
    valid = region_mask[:, None, None, :] & word_mask[None, :, :, None]
    assert torch.equal(filled[~valid], torch.full_like(filled[~valid], -1.0))
    assert torch.equal(filled[valid], plain[valid])


def test_bad_arguments_are_refused():
    regions, region_mask, words, word_mask = random_inputs(2, 2, 3, 3, 4, seed=0)
    with pytest.raises(ValueError, match="score kind"):
        pairwise_scores(regions, region_mask, words, word_mask, kind="best")
    with pytest.raises(ValueError, match="padding"):
        chunked_scores(regions, region_mask, words, word_mask, padding="zeros")
    with pytest.raises(ValueError, match="bool"):
        pairwise_scores(regions, region_mask.float(), words, word_mask)
    with pytest.raises(ValueError, match="embedding sizes"):
        pairwise_scores(regions, region_mask, words[..., :2], word_mask)
    with pytest.raises(ValueError, match="mask shapes"):
        pairwise_scores(regions, region_mask[:, :2], words, word_mask)
