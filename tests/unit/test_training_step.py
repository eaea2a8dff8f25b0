"""training_step.train_step: which entries of the batch's score matrix count as negatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from teran_es.config import TrainConfig
from teran_es.model.loss import HingeLoss, contrastive_loss, same_image_mask
from teran_es.training_step import train_step

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
