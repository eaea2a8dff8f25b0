"""training_step: which entries of the batch's score matrix count as negatives (train_step),
and which parameters learn at which rate (build_optimizer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from teran_es.config import PipelineConfig, TrainConfig, validate_config
from teran_es.errors import ConfigError
from teran_es.model.efficientnet import EfficientNetLite
from teran_es.model.loss import HingeLoss, contrastive_loss, same_image_mask
from teran_es.model.pretrained_frontend import PretrainedRegions
from teran_es.training_step import build_optimizer, positives_mask, train_step

# rows: images of the pairs, columns: their captions; pairs 0 and 1 show the same image
SCORES = [[1.0, 0.95, 0.1], [0.9, 1.0, 0.2], [0.3, 0.1, 1.0]]


class FixedScores(nn.Module):
    """A stand-in model whose score matrix is a parameter."""

    def __init__(self):
        super().__init__()
        self.scores = nn.Parameter(torch.tensor(SCORES))

    def forward(self, input_ids, return_embeddings=False, **_):
        return self.scores, None, None


@pytest.mark.parametrize("reference", [False, True])
def test_same_image_captions_are_negatives_only_as_the_reference_counts_them(reference):
    model = FixedScores()
    batch = {"input_ids": torch.zeros(3, 2, dtype=torch.long), "image_index": torch.tensor([7, 7, 2])}
    cfg = TrainConfig(same_image_negatives=reference, grad_clip=0.0, amp=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_step(model, batch, optimizer, scaler, cfg, HingeLoss(0.2), None)
    scores = torch.tensor(SCORES)
    mask = None if reference else same_image_mask(batch["image_index"])
    assert loss == pytest.approx(float(contrastive_loss(scores, 0.2, True, same_image=mask)))
    # the two differ on this batch: 0.95 vs 1.0 violates the margin only as a negative
    other = contrastive_loss(scores, 0.2, True, same_image=same_image_mask(batch["image_index"]) if reference else None)
    assert loss != pytest.approx(float(other))


def test_concept_groups_leave_another_drawing_of_the_same_concept_out_of_the_negatives():
    # three images: 0 and 2 share a concept (group 4); scores[0, 2] = 0.9 and scores[2, 0] = 0.85
    # violate the margin only as negatives; scores[1, 2] = 0.9 violates it either way
    scores = [[1.0, 0.1, 0.9], [0.2, 1.0, 0.9], [0.85, 0.1, 1.0]]
    model = FixedScores()
    model.scores.data = torch.tensor(scores)
    batch = {
        "input_ids": torch.zeros(3, 2, dtype=torch.long),
        "image_index": torch.tensor([0, 1, 2]),
        "group_index": torch.tensor([4, 9, 4]),
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    concept = TrainConfig(positive_groups="concept", grad_clip=0.0, amp=False)
    image = TrainConfig(positive_groups="image", grad_clip=0.0, amp=False)
    # by hand, hardest negatives, with (0, 2) and (2, 0) left out: row 1 (sentence 2: 0.2 + 0.9 - 1.0)
    # and column 2 (image 1: the same entry); every other cost is 0
    got = train_step(model, dict(batch), optimizer, scaler, concept, HingeLoss(0.2), None)
    assert got == pytest.approx(0.1 + 0.1, abs=1e-6)
    # with them: rows 0, 1, 2 cost 0.1, 0.1, 0.05; columns 0, 1, 2 cost 0.05, 0, 0.1
    plain = train_step(model, dict(batch), optimizer, scaler, image, HingeLoss(0.2), None)
    assert plain == pytest.approx(0.1 + 0.1 + 0.05 + 0.05 + 0.0 + 0.1, abs=1e-6)
    assert positives_mask(batch["image_index"], batch["group_index"], concept).tolist() == [
        [True, False, True], [False, True, False], [True, False, True]
    ]
    assert positives_mask(batch["image_index"], batch["group_index"], image).tolist() == [
        [True, False, False], [False, True, False], [False, False, True]
    ]
    del batch["group_index"]
    with pytest.raises(ConfigError, match="carries no group"):
        train_step(model, batch, optimizer, scaler, concept, HingeLoss(0.2), None)


class TunedFrontEndModel(nn.Module):
    """A stand-in TERAN: a text backbone, a pretrained front end with one tuned block, a head."""

    def __init__(self):
        super().__init__()
        self.textual = nn.Module()
        self.textual.backbone = nn.Linear(3, 3)
        network = EfficientNetLite(((1, 3, 1, 1, 8, 4), (2, 3, 2, 2, 4, 6)), 8, 3).eval()
        self.frontend = PretrainedRegions(network, block=2, grid=2, trainable_blocks=1)
        self.head = nn.Linear(6, 4)


def test_the_tuned_front_end_learns_at_its_own_rate_only_when_scaled():
    model = TunedFrontEndModel()
    tuned = {id(p) for p in model.frontend.parameters() if p.requires_grad}
    assert tuned and len(tuned) < len(list(model.frontend.parameters()))  # the trunk stays frozen
    train = TrainConfig(lr=1e-3, lr_backbone=1e-5, lr_frontend_scale=0.2)
    groups = {g["name"]: g for g in build_optimizer(model, train).param_groups}
    assert set(groups) == {"text_backbone", "frontend", "rest"}
    assert groups["frontend"]["lr"] == pytest.approx(2e-4) and groups["rest"]["lr"] == 1e-3
    assert {id(p) for p in groups["frontend"]["params"]} == tuned
    assert {id(p) for p in groups["rest"]["params"]} == {id(p) for p in model.head.parameters()}
    # at 1 the tuned blocks stay with the rest: the groups of runs from before the setting
    shared = {g["name"]: g for g in build_optimizer(model, TrainConfig(lr=1e-3)).param_groups}
    assert set(shared) == {"text_backbone", "rest"}
    assert {id(p) for p in shared["rest"]["params"]} == tuned | {id(p) for p in model.head.parameters()}


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_a_scale_that_is_not_positive_is_refused_when_the_pipeline_loads(scale):
    config = PipelineConfig()
    config.train.lr_frontend_scale = scale
    with pytest.raises(ConfigError, match="frontend_trainable_blocks = 0"):
        validate_config(config)
