"""The hinge triplet loss and InfoNCE against brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch

from teran_es.model.loss import (
    contrastive_loss,
    global_contrastive_loss,
    infonce_loss,
    same_group_mask,
    same_image_mask,
)


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


def test_duplicate_captions_count_as_negatives_unless_marked():
    # two captions of one image scored identically: each is the other's violating negative
    scores = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    assert contrastive_loss(scores, margin=0.2).item() == pytest.approx(4 * 0.2)
    same = same_image_mask(torch.tensor([7, 7]))
    assert contrastive_loss(scores, margin=0.2, same_image=same).item() == 0.0


def test_same_image_pairs_are_left_out_of_the_hinge():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    image_index = torch.tensor([0, 1, 0, 2, 1, 3])
    same = same_image_mask(image_index)
    # the reference: push same-image entries far below every positive, so they never violate
    masked = scores.clone()
    masked[same & ~torch.eye(6, dtype=torch.bool)] = -1e9
    for hardest in (True, False):
        want = brute_force_loss(masked, 0.2, hardest)
        got = contrastive_loss(scores, margin=0.2, max_violation=hardest, same_image=same).item()
        assert got == pytest.approx(want, abs=1e-9)


def brute_force_infonce(scores: torch.Tensor, temperature: float, same: torch.Tensor | None) -> float:
    size = scores.shape[0]
    total = 0.0
    for i in range(size):
        for direction in ("row", "column"):
            terms = []
            for j in range(size):
                if j != i and same is not None and bool(same[i, j]):
                    continue
                value = scores[i, j] if direction == "row" else scores[j, i]
                terms.append(float(value) / temperature)
            top = max(terms)
            log_sum = top + math.log(sum(math.exp(t - top) for t in terms))
            total += log_sum - float(scores[i, i]) / temperature
    return total


@pytest.mark.parametrize("size", [1, 2, 5, 9])
@pytest.mark.parametrize("temperature", [0.05, 1.0])
@pytest.mark.parametrize("with_same", [False, True])
def test_infonce_matches_brute_force(size, temperature, with_same):
    gen = torch.Generator().manual_seed(size)
    scores = torch.randn(size, size, generator=gen, dtype=torch.float64)
    same = same_image_mask(torch.arange(size) // 2) if with_same else None
    got = infonce_loss(scores, temperature, same)
    assert got.dim() == 0
    assert got.item() == pytest.approx(brute_force_infonce(scores, temperature, same), rel=1e-9)


def test_infonce_gradient_lowers_negatives_and_raises_positives():
    scores = torch.tensor([[0.5, 0.4, -0.2], [0.1, 0.3, 0.0], [0.45, -0.1, 0.2]], requires_grad=True)
    infonce_loss(scores, 0.1).backward()
    off = ~torch.eye(3, dtype=torch.bool)
    assert scores.grad.diagonal().lt(0).all()
    assert scores.grad[off].gt(0).all()


def test_infonce_refuses_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        infonce_loss(torch.eye(2), 0.0)


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


def test_the_registry_builds_each_loss_from_the_train_settings():
    from teran_es.config import TrainConfig
    from teran_es.errors import ConfigError
    from teran_es.model.loss import LOSSES, HingeLoss, InfoNCELoss, build_loss

    scores = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    hinge = build_loss(TrainConfig(loss="hinge", margin=0.3))
    assert hinge == HingeLoss(0.3) and set(LOSSES) == {"hinge", "infonce"}
    assert float(hinge(scores, None, False)) == pytest.approx(float(contrastive_loss(scores, 0.3, False)))
    infonce = build_loss(TrainConfig(loss="infonce", temperature=0.1))
    assert infonce == InfoNCELoss(0.1)
    assert float(infonce(scores, None, True)) == pytest.approx(float(infonce_loss(scores, 0.1)))
    with pytest.raises(ConfigError, match=r"unknown loss 'focal' \(known: hinge, infonce\)"):
        build_loss(TrainConfig(loss="focal"))
    with pytest.raises(ConfigError, match="train.temperature must be positive"):
        build_loss(TrainConfig(loss="infonce", temperature=0.0))


def brute_force_group_mask(image_index: list[int], group_index: list[int]) -> list[list[bool]]:
    size = len(image_index)
    return [
        [image_index[i] == image_index[j] or group_index[i] == group_index[j] for j in range(size)]
        for i in range(size)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_same_group_mask_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    size = 3 + seed * 4
    image_index = torch.randint(0, size, (size,), generator=gen)
    group_index = torch.randint(0, max(1, size // 3), (size,), generator=gen)
    got = same_group_mask(image_index, group_index)
    assert got.dtype == torch.bool and got.shape == (size, size)
    assert got.tolist() == brute_force_group_mask(image_index.tolist(), group_index.tolist())


def test_same_group_mask_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        same_group_mask(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))


@pytest.mark.parametrize("hardest", [True, False])
def test_same_concept_pairs_are_left_out_of_the_hinge(hardest):
    # pairs 0 and 2 are two artists' drawings of one concept (groups [5, 6, 5]): scores[0, 2]
    # and scores[2, 0] violate the margin, and must not count
    scores = torch.tensor([[1.0, 0.5, 0.95], [0.1, 1.0, 0.3], [0.9, 0.7, 1.0]], dtype=torch.float64)
    mask = same_group_mask(torch.tensor([0, 1, 2]), torch.tensor([5, 6, 5]))
    margin = 0.2
    # by hand, with only the negatives (0, 1), (1, 0), (1, 2), (2, 1) left
    cost = {(i, j): max(0.0, margin + float(scores[i, j]) - float(scores[i, i])) for i in range(3) for j in range(3)}
    cost_image = {(j, i): max(0.0, margin + float(scores[j, i]) - float(scores[i, i])) for i in range(3) for j in range(3)}
    rows = {0: [cost[0, 1]], 1: [cost[1, 0], cost[1, 2]], 2: [cost[2, 1]]}
    cols = {0: [cost_image[1, 0]], 1: [cost_image[0, 1], cost_image[2, 1]], 2: [cost_image[1, 2]]}
    pick = max if hardest else sum
    want = sum(pick(v) for v in rows.values()) + sum(pick(v) for v in cols.values())
    got = contrastive_loss(scores, margin=margin, max_violation=hardest, same_image=mask).item()
    assert got == pytest.approx(want, abs=1e-12)
    unmasked = contrastive_loss(scores, margin=margin, max_violation=hardest).item()
    assert unmasked > got + 0.1  # the same-concept pairs would have counted
