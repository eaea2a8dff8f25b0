"""The hinge triplet loss against a brute-force loop."""

from __future__ import annotations

import pytest
import torch

from teran_es.model.loss import contrastive_loss, global_contrastive_loss


def brute_force_loss(scores: torch.Tensor, margin: float, max_violation: bool) -> float:
    size = scores.shape[0]
    total = 0.0
    for i in range(size):
        positive = float(scores[i, i])
        negative_sentences = [
            max(0.0, margin + float(scores[i, j]) - positive) for j in range(size) if j != i
        ]
        negative_images = [max(0.0, margin + float(scores[j, i]) - positive) for j in range(size) if j != i]
        if max_violation:
            total += max(negative_sentences, default=0.0) + max(negative_images, default=0.0)
        else:
            total += sum(negative_sentences) + sum(negative_images)
    return total


@pytest.mark.parametrize("max_violation", [True, False])
@pytest.mark.parametrize("size", [1, 2, 5, 16])
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.5])
def test_matches_brute_force(size, margin, max_violation):
    scores = torch.randn(size, size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    got = contrastive_loss(scores, margin=margin, max_violation=max_violation)
    assert got.dim() == 0
    assert got.item() == pytest.approx(brute_force_loss(scores, margin, max_violation), abs=1e-12)


def test_hardest_negative_gets_all_the_gradient():
    scores = torch.tensor([[1.0, 0.9, 0.5], [0.0, 1.0, 0.1], [0.95, 0.3, 1.0]], requires_grad=True)
    contrastive_loss(scores, margin=0.2).backward()
    # row 0: hardest negative sentence is (0, 1); column 0: hardest negative image is (2, 0)
    assert scores.grad[0, 1] > 0 and scores.grad[0, 2] == 0
    assert scores.grad[2, 0] > 0 and scores.grad[1, 0] == 0
    assert scores.grad.diagonal().le(0).all()


def test_no_loss_when_positives_win_by_the_margin():
    scores = torch.eye(4) * 10
    assert contrastive_loss(scores, margin=0.2).item() == 0.0


def test_duplicate_captions_count_as_negatives():
    # two captions of one image scored identically: each is the other's violating negative
    scores = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert contrastive_loss(scores, margin=0.2).item() == pytest.approx(4 * 0.2)


def test_global_loss_is_the_loss_of_cosines():
    gen = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    want = contrastive_loss(image @ text.T, margin=0.3, max_violation=False)
    assert global_contrastive_loss(image, text, margin=0.3, max_violation=False).item() == pytest.approx(
        want.item()
    )


def test_refuses_non_square_scores():
    with pytest.raises(ValueError, match="square"):
        contrastive_loss(torch.zeros(2, 3))
