"""One optimisation step and what it needs: the optimiser with its two learning rates, the
warm-up-then-step schedule, mixed precision, and the step itself (see training.py)."""

from __future__ import annotations

import math

import torch

from teran_es.config import TrainConfig
from teran_es.errors import ConfigError
from teran_es.model.loss import BatchLoss, global_contrastive_loss, same_group_mask, same_image_mask
from teran_es.model.pretrained_frontend import PretrainedRegions


class StepWarmupSchedule:
    """Learning-rate factor at iteration ``it``: linear warm-up over ``warmup_iters``, then
    x ``gamma`` every ``step_epochs`` epochs (no decay when ``step_epochs`` is 0).

    An object rather than a lambda so that LambdaLR's state_dict can save it.
    """

    def __init__(self, iters_per_epoch: int, warmup_iters: int, step_epochs: int, gamma: float) -> None:
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.warmup_iters = warmup_iters
        self.step_epochs = step_epochs
        self.gamma = gamma

    def __call__(self, it: int) -> float:
        warm = min(1.0, (it + 1) / self.warmup_iters) if self.warmup_iters > 0 else 1.0
        if self.step_epochs <= 0:
            return warm
        return warm * self.gamma ** ((it // self.iters_per_epoch) // self.step_epochs)


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam/AdamW with parameter groups ``text_backbone`` (lr_backbone), ``rest`` (lr) and, when
    ``lr_frontend_scale`` is not 1, ``frontend``: a pretrained front end's fine-tuned blocks at
    lr x that scale (at 1 they stay in ``rest``, so the optimiser state of earlier runs loads)."""
    backbone_params = [p for p in model.textual.backbone.parameters() if p.requires_grad]
    frontend_params: list[torch.nn.Parameter] = []
    frontend = getattr(model, "frontend", None)
    if isinstance(frontend, PretrainedRegions) and train.lr_frontend_scale != 1.0:
        frontend_params = [p for p in frontend.parameters() if p.requires_grad]
    grouped = {id(p) for p in [*backbone_params, *frontend_params]}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in grouped]
    groups = [
        {"params": backbone_params, "lr": train.lr_backbone, "name": "text_backbone"},
        {"params": frontend_params, "lr": train.lr * train.lr_frontend_scale, "name": "frontend"},
        {"params": rest, "lr": train.lr, "name": "rest"},
    ]
    groups = [g for g in groups if g["params"]]
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=train.weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer {train.optimizer!r} (adam | adamw)")


def amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype, bool]:
    """(autocast on?, its dtype, gradient scaler needed?) — bf16 where the GPU has it, else fp16."""
    if not enabled or device.type != "cuda":
        return False, torch.float32, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def positives_mask(
    image_index: torch.Tensor | None, group_index: torch.Tensor | None, cfg: TrainConfig
) -> torch.Tensor | None:
    """bool [B, B] of the batch's pairs that are not negatives of each other, or None (all are).

    ``train.positive_groups = "concept"``: pairs of the same image or group (``group_index``
    [B], which the batch must then carry); otherwise pairs of the same image (``image_index``
    [B]), unless ``train.same_image_negatives`` as the reference code."""
    if cfg.positive_groups != "image":
        if image_index is None or group_index is None:
            raise ConfigError(
                f"train.positive_groups = {cfg.positive_groups!r}, but the batch carries no group of its images"
            )
        return same_group_mask(image_index, group_index)
    # the reference code counts other captions of the same image as negatives: then no mask
    if image_index is None or cfg.same_image_negatives:
        return None
    return same_image_mask(image_index)


def train_step(
    model,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    loss_fn: BatchLoss,
    amp_dtype: torch.dtype | None,
    max_violation: bool | None = None,
) -> float:
    """One optimisation step on one batch; returns the loss (the step is skipped if it is
    not finite, and the caller stops the run). ``max_violation``: None = ``cfg.max_violation``."""
    hardest = cfg.max_violation if max_violation is None else max_violation
    inputs = dict(batch)
    image_index = inputs.pop("image_index", None)
    group_index = inputs.pop("group_index", None)
    same_image = positives_mask(image_index, group_index, cfg)
    device_type = inputs["input_ids"].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        scores, images, texts = model(**inputs, return_embeddings=True)
    # the loss is a sum over the batch: computed in float32 whatever the autocast dtype
    loss = loss_fn(scores.float(), same_image, hardest)
    if cfg.global_loss_weight > 0:
        loss = loss + cfg.global_loss_weight * global_contrastive_loss(
            images.global_vec.float(), texts.global_vec.float(), cfg.margin, hardest
        )
    value = loss.item()
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return value
