"""Losses on a batch's score matrix: the hinge triplet loss (VSE++ style) TERAN trains with,
and a symmetric InfoNCE alternative; ``LOSSES`` is the registry ``train.loss`` chooses from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from teran_es.errors import ConfigError

if TYPE_CHECKING:  # the type only: config imports this registry to check train.loss
    from teran_es.config import TrainConfig


def _negatives(scores: torch.Tensor, same_image: torch.Tensor | None) -> torch.Tensor:
    """bool [B, B]: which entries are negatives (off the diagonal, and not another caption of
    the same image when ``same_image`` [B, B] says so)."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square [B, B] matrix, got {tuple(scores.shape)}")
    negatives = ~torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    if same_image is not None:
        if same_image.shape != scores.shape:
            raise ValueError(f"same_image must be {tuple(scores.shape)}, got {tuple(same_image.shape)}")
        negatives = negatives & ~same_image.to(device=scores.device, dtype=torch.bool)
    return negatives


def same_image_mask(image_index: torch.Tensor) -> torch.Tensor:
    """image_index int [B] (which image each pair of the batch comes from) -> bool [B, B],
    True where rows i and j show the same image: its other captions are not negatives."""
    return image_index[:, None] == image_index[None, :]


def same_group_mask(image_index: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """image_index int [B] and group_index int [B] (the group, e.g. the concept, of each pair's
    image) -> bool [B, B], True where rows i and j show the same image or images of the same
    group: such pairs are left out of the negatives, as same-image pairs are."""
    if image_index.shape != group_index.shape or image_index.dim() != 1:
        raise ValueError(
            f"image_index and group_index must both be [B], got {tuple(image_index.shape)} and {tuple(group_index.shape)}"
        )
    return same_image_mask(image_index) | (group_index[:, None] == group_index[None, :])


def contrastive_loss(
    scores: torch.Tensor,
    margin: float = 0.2,
    max_violation: bool = True,
    same_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triplet hinge loss in both directions, summed over the batch.

    scores: [B, B], scores[i, j] = score(image i, sentence j); the diagonal holds the
    positive pairs and every off-diagonal entry is a negative, except where ``same_image``
    [B, B] is True (another caption of the same image). For each positive pair (i, i):
    sentence direction: max(0, margin + scores[i, j] - scores[i, i]) over sentences j != i;
    image direction: max(0, margin + scores[j, i] - scores[i, i]) over images j != i.
    ``max_violation``: only the hardest negative of each direction counts; otherwise all
    negatives are summed. Returns a scalar.
    """
    negatives = _negatives(scores, same_image)
    positives = scores.diagonal()
    cost_sentence = (margin + scores - positives[:, None]).clamp(min=0)  # row i: image i vs sentences
    cost_image = (margin + scores - positives[None, :]).clamp(min=0)  # column j: sentence j vs images
    cost_sentence = cost_sentence * negatives
    cost_image = cost_image * negatives
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


def infonce_loss(
    scores: torch.Tensor, temperature: float = 0.05, same_image: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE (cross-entropy over each row and each column), summed over the batch.

    scores [B, B] as for :func:`contrastive_loss`; ``temperature`` divides the scores; entries
    where ``same_image`` is True (off the diagonal) are left out of the softmax. Every negative
    pulls with a weight that grows with its score, so a model trained from scratch learns from
    all of them at once, yet the hardest ones count most. Returns a scalar.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    negatives = _negatives(scores, same_image)
    keep = negatives | torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    logits = (scores / temperature).masked_fill(~keep, float("-inf"))
    target = torch.arange(scores.shape[0], device=scores.device)
    return torch.nn.functional.cross_entropy(logits, target, reduction="sum") + torch.nn.functional.cross_entropy(
        logits.T, target, reduction="sum"
    )


# -- the registry of training losses (train.loss) ---------------------------------------------


class BatchLoss(Protocol):
    """A training loss on a batch's score matrix: ``loss(scores, same_image, max_violation)``.

    scores [B, B] float32 as for :func:`contrastive_loss`; ``same_image`` [B, B] or None;
    ``max_violation``: hardest negatives only, for the losses that have the choice. Returns a scalar.
    """

    def __call__(
        self, scores: torch.Tensor, same_image: torch.Tensor | None, max_violation: bool
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class HingeLoss:
    """The hinge triplet loss TERAN trains with (``train.margin``)."""

    margin: float

    @classmethod
    def from_config(cls, train: TrainConfig) -> HingeLoss:
        """The hinge loss with ``train.margin``."""
        return cls(train.margin)

    def __call__(self, scores: torch.Tensor, same_image: torch.Tensor | None, max_violation: bool) -> torch.Tensor:
        return contrastive_loss(scores, margin=self.margin, max_violation=max_violation, same_image=same_image)


@dataclass(frozen=True)
class InfoNCELoss:
    """Symmetric InfoNCE (``train.temperature``); it weighs every negative, so it ignores
    ``max_violation``."""

    temperature: float

    @classmethod
    def from_config(cls, train: TrainConfig) -> InfoNCELoss:
        """InfoNCE at ``train.temperature`` (refused unless positive: it divides the scores)."""
        if not train.temperature > 0:
            raise ConfigError(f"train.temperature must be positive for the infonce loss, got {train.temperature}")
        return cls(train.temperature)

    def __call__(self, scores: torch.Tensor, same_image: torch.Tensor | None, max_violation: bool) -> torch.Tensor:
        return infonce_loss(scores, self.temperature, same_image)


# train.loss -> constructor from the train settings. Add a line here to add a loss: the config
# check (config.validate_config) and the training loop read the names from this table.
LOSSES: dict[str, Callable[[TrainConfig], BatchLoss]] = {
    "hinge": HingeLoss.from_config,
    "infonce": InfoNCELoss.from_config,
}


def unknown_loss_message(name: str) -> str:
    """What a ConfigError says about a ``train.loss`` the registry does not hold."""
    return f"train.loss: unknown loss {name!r} (known: {', '.join(LOSSES)})"


def build_loss(train: TrainConfig) -> BatchLoss:
    """The loss ``train.loss`` names, built from the train settings; an unknown name is a ConfigError."""
    try:
        make = LOSSES[train.loss]
    except KeyError:
        raise ConfigError(unknown_loss_message(train.loss)) from None
    return make(train)
