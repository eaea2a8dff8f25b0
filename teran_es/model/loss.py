"""Hinge triplet loss on a batch's score matrix (VSE++ style), as TERAN trains with."""

from __future__ import annotations

import torch


def contrastive_loss(scores: torch.Tensor, margin: float = 0.2, max_violation: bool = True) -> torch.Tensor:
    """Triplet hinge loss in both directions, summed over the batch.

    scores: [B, B], scores[i, j] = score(image i, sentence j); the diagonal holds the
    positive pairs and every off-diagonal entry is a negative (two captions of one image
    in a batch count as negatives). For each positive pair (i, i):
    sentence direction: max(0, margin + scores[i, j] - scores[i, i]) over sentences j != i;
    image direction: max(0, margin + scores[j, i] - scores[i, i]) over images j != i.
    ``max_violation``: only the hardest negative of each direction counts; otherwise all
    negatives are summed. Returns a scalar.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square [B, B] matrix, got {tuple(scores.shape)}")
    positives = scores.diagonal()
    cost_sentence = (margin + scores - positives[:, None]).clamp(min=0)  # row i: image i vs sentences
    cost_image = (margin + scores - positives[None, :]).clamp(min=0)  # column j: sentence j vs images
    off_diagonal = ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    cost_sentence = cost_sentence * off_diagonal
    cost_image = cost_image * off_diagonal
    if max_violation:
        return cost_sentence.amax(dim=1).sum() + cost_image.amax(dim=0).sum()
    return cost_sentence.sum() + cost_image.sum()


def global_contrastive_loss(
    image_global: torch.Tensor,
    text_global: torch.Tensor,
    margin: float = 0.2,
    max_violation: bool = True,
) -> torch.Tensor:
    """The auxiliary "matching" loss on global vectors: :func:`contrastive_loss` on cosine scores.

    image_global [B, D], text_global [B, D] (L2-normalised; row i of each is a positive pair).
    """
    return contrastive_loss(image_global @ text_global.T, margin=margin, max_violation=max_violation)
