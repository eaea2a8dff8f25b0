"""TERAN alignment scores between images (sets of region vectors) and sentences (sets of
word vectors).

For an image with regions r_1..r_R and a sentence with words w_1..w_W the alignment matrix
is A[i, j] = <w_i, r_j>. The score kinds reduce it:

- ``MrSw``: sum over words of the max over regions (the paper's best);
- ``MwSr``: sum over regions of the max over words;
- ``symm``: MrSw + MwSr;
- ``sum`` / ``mean``: sum / mean of all of A;
- ``MrAVGw``: MrSw divided by the number of words.

Padding (entries whose word or region mask is False):

- ``"masked"`` (clean default): padded entries take no part; a max over an axis with no
  valid entry, a sum over none, and a mean over none are all 0;
- ``"reference"``: padded entries of A are 0, as in the authors' code, so a max over a
  padded axis is max(0, ...), and ``mean`` divides by the padded size W x R of the tensors
  given. ``MrAVGw`` divides by the number of valid words in both modes.

Scores are returned as [N, M] (images x sentences). Masks are bool, True = valid.
"""

from __future__ import annotations

import math

import torch

SCORE_KINDS = ("MrSw", "MwSr", "symm", "sum", "mean", "MrAVGw")
PADDINGS = ("masked", "reference")

_USES_MAX_OVER_REGIONS = ("MrSw", "symm", "MrAVGw")
_USES_MAX_OVER_WORDS = ("MwSr", "symm")


def alignment_matrix(
    words: torch.Tensor,
    regions: torch.Tensor,
    word_mask: torch.Tensor | None = None,
    region_mask: torch.Tensor | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """All-pairs alignment matrices, for inspection and visualisation.

    words [M, W, D], regions [N, R, D] -> A [N, M, W, R] with A[n, m, i, j] = <w_mi, r_nj>;
    entries whose word or region is masked out are set to ``fill``.
    """
    matrix = torch.einsum("mwd,nrd->nmwr", words, regions)
    if word_mask is None and region_mask is None:
        return matrix
    if word_mask is None:
        word_mask = torch.ones(words.shape[:2], dtype=torch.bool, device=words.device)
    if region_mask is None:
        region_mask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
    valid = region_mask[:, None, None, :] & word_mask[None, :, :, None]
    return matrix.masked_fill(~valid, fill)


def _check_inputs(
    regions: torch.Tensor,
    region_mask: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    kind: str,
    padding: str,
) -> None:
    if kind not in SCORE_KINDS:
        raise ValueError(f"unknown score kind {kind!r} (known: {', '.join(SCORE_KINDS)})")
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r} (known: {', '.join(PADDINGS)})")
    if regions.dim() != 3 or words.dim() != 3:
        raise ValueError(
            f"regions and words must be [N,R,D] and [M,W,D]; got {tuple(regions.shape)} and {tuple(words.shape)}"
        )
    if regions.shape[2] != words.shape[2]:
        raise ValueError(f"embedding sizes differ: regions D={regions.shape[2]}, words D={words.shape[2]}")
    if region_mask.shape != regions.shape[:2] or word_mask.shape != words.shape[:2]:
        raise ValueError(
            f"mask shapes {tuple(region_mask.shape)} / {tuple(word_mask.shape)} do not match "
            f"regions {tuple(regions.shape[:2])} / words {tuple(words.shape[:2])}"
        )
    if region_mask.dtype != torch.bool or word_mask.dtype != torch.bool:
        raise ValueError("region_mask and word_mask must be bool tensors (True = valid)")


def _fill_padding(vectors: torch.Tensor, mask: torch.Tensor, zero: bool) -> torch.Tensor:
    """Replace the padded vectors of [B, L, D] so that no mask is needed inside the big product.

    ``zero``: padded vectors become 0, so their entries of A are 0 (reference padding, and
    sums). Otherwise they become a copy of the item's first valid vector: a duplicate never
    changes a max, so the max over that axis equals the max over the valid entries only.
    Items with no valid entry get zeros either way. With nothing padded (a grid front end,
    or a store of equal region counts) the vectors are returned as they are: no copy.
    """
    if bool(mask.all()):
        return vectors
    if zero:
        return torch.where(
            mask.unsqueeze(-1), vectors, torch.zeros((), dtype=vectors.dtype, device=vectors.device)
        )
    first_valid = mask.to(torch.int8).argmax(dim=1)
    stand_in = vectors[torch.arange(vectors.shape[0], device=vectors.device), first_valid]
    stand_in = torch.where(
        mask.any(dim=1, keepdim=True), stand_in, torch.zeros((), dtype=vectors.dtype, device=vectors.device)
    )
    return torch.where(mask.unsqueeze(-1), vectors, stand_in.unsqueeze(1))


def _block_scores(
    regions: torch.Tensor,
    region_mask: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    kind: str,
    padding: str,
) -> torch.Tensor:
    """Scores [n, m] of one block; the one big temporary is A as [m*W, n*R]."""
    n, num_regions, dim = regions.shape
    m, num_words, _ = words.shape
    if num_regions == 0 or num_words == 0:  # nothing to align: every reduction is over no entry
        return torch.zeros(n, m, dtype=regions.dtype, device=regions.device)
    zero_fill = padding == "reference" or kind in ("sum", "mean")
    regions = _fill_padding(regions, region_mask, zero_fill)
    words = _fill_padding(words, word_mask, zero_fill)

    if kind in ("sum", "mean"):
        # sum_ij <w_i, r_j> = <sum_i w_i, sum_j r_j> (padded vectors are zero): no A needed.
        total = regions.sum(dim=1) @ words.sum(dim=1).T
        if kind == "sum":
            return total
        if padding == "reference":
            return total / float(num_regions * num_words)
        counts = (
            region_mask.sum(dim=1, dtype=total.dtype)[:, None]
            * word_mask.sum(dim=1, dtype=total.dtype)[None, :]
        )
        return total / counts.clamp(min=1)

    # A[mi, w, ni, r] = <word w of sentence mi, region r of image ni>, one GEMM per block.
    matrix = (words.reshape(m * num_words, dim) @ regions.reshape(n * num_regions, dim).T).view(
        m, num_words, n, num_regions
    )
    scores = torch.zeros(m, n, dtype=matrix.dtype, device=matrix.device)
    if kind in _USES_MAX_OVER_REGIONS:
        best_region = matrix.amax(dim=3)  # [m, W, n]
        word_sum = (best_region * word_mask.to(matrix.dtype).unsqueeze(-1)).sum(dim=1)
        if kind == "MrAVGw":
            word_sum = word_sum / word_mask.sum(dim=1, dtype=matrix.dtype).clamp(min=1).unsqueeze(-1)
        scores = scores + word_sum
    if kind in _USES_MAX_OVER_WORDS:
        best_word = matrix.amax(dim=1)  # [m, n, R]
        scores = scores + (best_word * region_mask.to(matrix.dtype).unsqueeze(0)).sum(dim=2)
    return scores.T


def pairwise_scores(
    regions: torch.Tensor,
    region_mask: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    kind: str = "MrSw",
    padding: str = "masked",
) -> torch.Tensor:
    """Scores [N, M] of every image against every sentence, in one block (differentiable).

    regions [N, R, D], region_mask bool [N, R], words [M, W, D], word_mask bool [M, W].
    Memory: one [M*W, N*R] matrix; use :func:`chunked_scores` for large N x M.
    """
    _check_inputs(regions, region_mask, words, word_mask, kind, padding)
    dtype = torch.promote_types(regions.dtype, words.dtype)
    return _block_scores(regions.to(dtype), region_mask, words.to(dtype), word_mask, kind, padding)


def _block_sizes(n: int, m: int, pair_bytes: int, max_bytes: int) -> tuple[int, int]:
    """Images and sentences per block so that a block's A stays within max_bytes (at least 1 x 1)."""
    pairs = max(1, max_bytes // max(1, pair_bytes))
    if n * m <= pairs:
        return max(1, n), max(1, m)
    m_block = min(m, max(1, math.isqrt(pairs)))
    n_block = min(n, max(1, pairs // m_block))
    m_block = min(m, max(1, pairs // n_block))
    return n_block, m_block


@torch.no_grad()
def chunked_scores(
    regions: torch.Tensor,
    region_mask: torch.Tensor,
    words: torch.Tensor,
    word_mask: torch.Tensor,
    kind: str = "MrSw",
    padding: str = "masked",
    max_bytes: int = 256 * 2**20,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Scores [N, M] (float32, on the CPU) computed block by block, without gradients.

    Same inputs and results as :func:`pairwise_scores`. Blocks cover N and M so that the
    largest temporary (a block's alignment matrix) never exceeds ``max_bytes`` (a single
    pair larger than that is still computed). Work runs on ``device`` (default: where
    ``regions`` are): the sentences are moved there once and stay, the images stream
    through it one block at a time, so each input crosses to the device exactly once.
    """
    _check_inputs(regions, region_mask, words, word_mask, kind, padding)
    target = torch.device(device) if device is not None else regions.device
    dtype = torch.promote_types(regions.dtype, words.dtype)
    n, num_regions, _ = regions.shape
    m, num_words, _ = words.shape
    out = torch.zeros(n, m, dtype=torch.float32)
    if n == 0 or m == 0:
        return out
    pair_bytes = num_regions * num_words * torch.empty((), dtype=dtype).element_size()
    n_block, m_block = _block_sizes(n, m, pair_bytes, max_bytes)

    words_dev = words.to(target, dtype)
    word_mask_dev = word_mask.to(target)
    for n0 in range(0, n, n_block):
        region_block = regions[n0 : n0 + n_block].to(target, dtype)
        region_mask_block = region_mask[n0 : n0 + n_block].to(target)
        row = torch.empty(region_block.shape[0], m, dtype=torch.float32, device=target)
        for m0 in range(0, m, m_block):
            row[:, m0 : m0 + m_block] = _block_scores(
                region_block,
                region_mask_block,
                words_dev[m0 : m0 + m_block],
                word_mask_dev[m0 : m0 + m_block],
                kind,
                padding,
            )
        out[n0 : n0 + n_block] = row.cpu()
    return out
