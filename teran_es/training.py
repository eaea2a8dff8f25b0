"""The TERAN training loop (see docs/teran.md, "Loss and training").

Batches are drawn per caption: every (image, caption) pair of the training split is one
sample, shuffled each epoch, and a batch of B pairs gives a B x B score matrix whose
diagonal holds the positives (another caption of the same image is never a negative).
The loss is the hinge triplet loss over the hardest negatives or all of them
(``train.max_violation``), summed over the batch, or InfoNCE (``train.loss``). A wholly frozen text backbone runs once per caption, not per step.

Optimiser: Adam or AdamW with one learning rate for the text backbone and one for the
rest, a linear warm-up over the first iterations, step decay every ``lr_step_epochs``
epochs, gradient clipping by global norm, and mixed precision on CUDA only.

Output directory layout::

    config.toml       the resolved pipeline config of the run
    metrics.jsonl     one JSON object per log line: {"event": "train" | "val", ...}
    last/             checkpoint after the latest finished epoch, plus training_state.pt
                      (optimizer, scheduler, AMP scaler, epoch, iteration, best RSUM)
    best/             checkpoint with the highest validation RSUM so far

Running again with the same output directory continues after the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.config import PipelineConfig, TrainConfig, save_config
from teran_es.device import resolve_device
from teran_es.encoding import frontend_size, image_inputs
from teran_es.errors import TeranError
from teran_es.evaluation import evaluate_model
from teran_es.features import ImageCaptionSet, open_image_set
from teran_es.model.text_cache import TextStateCache, tokenize_in_batches

log = logging.getLogger(__name__)

TRAINING_STATE_FILE = "training_state.pt"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"


class TrainingError(TeranError, RuntimeError):
    """A run that cannot start or continue (incompatible resume, diverged loss, ...)."""


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    output_dir: Path
    epochs_completed: int
    iterations: int
    best_rsum: float
    best_epoch: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from_epoch: int = 0
    seconds: float = 0.0
    stopped_early: str = ""  # why training stopped before train.epochs (patience, time budget); "" = it did not

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["output_dir"] = str(self.output_dir)
        return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Adam/AdamW with two parameter groups: ``text_backbone`` (lr_backbone) and ``rest`` (lr)."""
    backbone = model.textual.backbone
    backbone_ids = {id(p) for p in backbone.parameters()}
    backbone_params = [p for p in backbone.parameters() if p.requires_grad]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups = [
        {"params": backbone_params, "lr": train.lr_backbone, "name": "text_backbone"},
        {"params": rest, "lr": train.lr, "name": "rest"},
    ]
    groups = [g for g in groups if g["params"]]
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=train.weight_decay)
    raise TrainingError(f"unknown optimizer {train.optimizer!r} (adam | adamw)")


def caption_pairs(image_set: ImageCaptionSet) -> np.ndarray:
    """Every (image index, caption index) of the set: int64 [P, 2]."""
    pairs = [(i, c) for i, caps in enumerate(image_set.captions) for c in range(len(caps))]
    if not pairs:
        raise TrainingError(f"split {image_set.name!r} has no captions to train on")
    return np.asarray(pairs, dtype=np.int64)


def collate(
    image_set: ImageCaptionSet,
    pairs: np.ndarray,
    tokenize: Callable[[list[str]], dict],
    image_size: int | None = None,
    text_cache: TextStateCache | None = None,
    positions: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """One training batch from (image, caption) pairs [B, 2]: the images as the model takes
    them (padded regions with their mask, or pixels at ``image_size`` for a model with a
    front end) and tokenized captions (row b of each is a positive pair).

    ``text_cache``: the backbone states of every caption of ``image_set`` in
    :func:`caption_pairs` order, and ``positions`` [B]: where ``pairs`` stand in that order;
    the batch then carries ``text_states`` as well."""
    images = [image_set.load(int(i)) for i in pairs[:, 0]]
    if text_cache is not None:
        if positions is None or len(positions) != len(pairs):
            raise ValueError("a text cache needs the positions of the pairs in caption_pairs order")
        tokens = text_cache.batch(positions)
    else:
        tokens = tokenize([image_set.captions[int(i)][int(c)] for i, c in pairs])
    return {
        **image_inputs(images, image_size),
        **tokens,
        "image_index": torch.as_tensor(pairs[:, 0], dtype=torch.long),
    }


def build_text_cache(
    model, image_set: ImageCaptionSet, max_mb: float, device: torch.device, progress: bool
) -> TextStateCache | None:
    """The frozen text backbone's states of every training caption, or None when the backbone
    is trained, the cache is off (``max_mb`` 0) or it would not fit in ``max_mb``."""
    if max_mb <= 0 or not model.text_backbone_frozen:
        return None
    captions = [image_set.captions[int(i)][int(c)] for i, c in caption_pairs(image_set)]
    batches = tokenize_in_batches(captions, model.tokenize)
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    megabytes = tokens * model.textual.backbone.config.hidden_size * 4 / 2**20
    if megabytes > max_mb:
        log.info("text backbone states not cached: %.0f MB > train.text_cache_max_mb = %g", megabytes, max_mb)
        return None
    with tqdm(total=len(captions), desc="text states", unit="caption", disable=not progress) as bar:
        cache = TextStateCache.build(
            batches,
            model.textual.backbone_states,
            pad_id=model.tokenizer.pad_token_id or 0,
            device=device,
            progress=bar.update,
        )
    log.info("cached the frozen text backbone's states of %d captions (%.0f MB)", len(cache), cache.nbytes / 2**20)
    return cache


def _amp_settings(device: torch.device, enabled: bool) -> tuple[bool, torch.dtype, bool]:
    """(autocast on?, its dtype, gradient scaler needed?) — bf16 where the GPU has it, else fp16."""
    if not enabled or device.type != "cuda":
        return False, torch.float32, False
    if torch.cuda.is_bf16_supported():
        return True, torch.bfloat16, False
    return True, torch.float16, True


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=False, default=float) + "\n")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place so a crash never leaves a half-written one."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _save(
    model,
    directory: Path,
    config: PipelineConfig,
    extra: dict[str, Any],
    state: dict[str, Any] | None,
    weights_dtype: str = "fp32",
) -> None:
    from teran_es.model.checkpoint import save_checkpoint

    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_checkpoint(
        model,
        tmp,
        config,
        extra,
        exclude_frozen_backbone=not config.train.save_frozen_backbone,
        weights_dtype=weights_dtype,
    )
    if state is not None:
        torch.save(state, tmp / TRAINING_STATE_FILE)
    _replace_dir(tmp, directory)


def _build_model(config: PipelineConfig, device: torch.device):
    from teran_es.model.teran import TERAN

    return TERAN(config.model).to(device)


def _resume(last: Path, config: PipelineConfig, device: torch.device):
    """(model, training state) from ``last/``; refuses a run whose model differs from ``config``."""
    from teran_es.model.checkpoint import load_checkpoint

    model, saved, _meta = load_checkpoint(last, device)
    if dataclasses.asdict(saved.model) != dataclasses.asdict(config.model):
        changed = [
            k for k, v in dataclasses.asdict(config.model).items() if dataclasses.asdict(saved.model)[k] != v
        ]
        raise TrainingError(
            f"{last} was trained with another model config (differs in {changed}); "
            "use another train.output_dir or restart"
        )
    state_path = last / TRAINING_STATE_FILE
    if not state_path.is_file():
        raise TrainingError(f"{state_path}: missing, cannot resume (restart instead)")
    # our own file, written by _save: optimizer tensors and plain numbers only
    state = torch.load(state_path, map_location=device, weights_only=True)
    return model, state


def _train_step(
    model,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    amp_dtype: torch.dtype | None,
    max_violation: bool | None = None,
) -> float:
    """One optimisation step on one batch; returns the loss (the step is skipped if it is
    not finite, and the caller stops the run). ``max_violation``: None = ``cfg.max_violation``."""
    from teran_es.model.loss import contrastive_loss, global_contrastive_loss, infonce_loss, same_image_mask

    hardest = cfg.max_violation if max_violation is None else max_violation
    inputs = dict(batch)
    image_index = inputs.pop("image_index", None)
    same_image = same_image_mask(image_index) if image_index is not None else None
    device_type = inputs["input_ids"].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        scores, images, texts = model(**inputs, return_embeddings=True)
    # the loss is a sum over the batch: computed in float32 whatever the autocast dtype
    if cfg.loss == "infonce":
        loss = infonce_loss(scores.float(), cfg.temperature, same_image)
    elif cfg.loss == "hinge":
        loss = contrastive_loss(scores.float(), margin=cfg.margin, max_violation=hardest, same_image=same_image)
    else:
        raise TrainingError(f"unknown loss {cfg.loss!r} (hinge | infonce)")
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


def train(
    config: PipelineConfig,
    *,
    restart: bool = False,
    progress: bool = True,
    on_error: str = "raise",
) -> TrainResult:
    """Train (or continue training) TERAN as ``config`` says; returns a summary.

    ``restart``: ignore an existing ``last/`` checkpoint and start from scratch.
    ``on_error``: what the data readers do with bad images ("raise" or "skip").
    """
    started = time.perf_counter()
    cfg = config.train
    if cfg.loss not in ("hinge", "infonce"):
        raise TrainingError(f"unknown loss {cfg.loss!r} (hinge | infonce)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    seed_everything(cfg.seed)

    feature_dim = config.model.region_feature_dim
    # a model with a front end trains on pixels at its input size; one without, on region features
    image_size = config.model.image_size if config.model.frontend != "none" else None
    train_set = open_image_set(
        config.data, config.data.train_split, on_error=on_error, feature_dim=feature_dim, image_size=image_size
    )
    val_set = open_image_set(
        config.data,
        config.data.val_split,
        limit=cfg.val_images,
        on_error=on_error,
        feature_dim=feature_dim,
        image_size=image_size,
    )
    pairs = caption_pairs(train_set)
    batch_size = min(cfg.batch_size, len(pairs))
    iters_per_epoch = len(pairs) // batch_size  # the ragged tail is dropped: too few negatives

    last_dir, best_dir = out / "last", out / "best"
    state: dict[str, Any] | None = None
    if last_dir.exists() and not restart:
        model, state = _resume(last_dir, config, device)
        log.info("resuming from %s (epoch %d done)", last_dir, state["epoch"])
    else:
        if restart and (out / METRICS_FILE).exists():
            (out / METRICS_FILE).unlink()
        model = _build_model(config, device)
    model.train()
    save_config(config, out / CONFIG_FILE)

    text_cache = build_text_cache(model, train_set, cfg.text_cache_max_mb, device, progress)
    optimizer = build_optimizer(model, cfg)
    schedule = StepWarmupSchedule(iters_per_epoch, cfg.warmup_iters, cfg.lr_step_epochs, cfg.lr_gamma)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp, amp_dtype, use_scaler = _amp_settings(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    start_epoch, iteration = 0, 0
    best_rsum, best_epoch, best_metrics = -math.inf, -1, {}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        configured = dict(vars(schedule))
        scheduler.load_state_dict(state["scheduler"])
        # the saved state carries the schedule it ran with; the config's wins, so a resumed
        # run can be extended or re-timed (train.epochs, lr_step_epochs, lr_gamma)
        vars(schedule).update(configured)
        if use_scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, iteration = int(state["epoch"]), int(state["iteration"])
        best_rsum, best_epoch = float(state["best_rsum"]), int(state["best_epoch"])
        best_metrics = dict(state.get("best_metrics", {}))
    resumed_from = start_epoch
    completed = start_epoch

    metrics_path = out / METRICS_FILE
    last_metrics: dict[str, Any] = {}

    stale_validations = 0  # validations since the best one (for train.patience)
    stopped = ""

    def validate(epoch: int) -> dict[str, Any]:
        nonlocal best_rsum, best_epoch, best_metrics, stale_validations
        metrics = evaluate_model(model, val_set, protocol="all", batch_size=max(batch_size, 64))
        is_best = metrics["rsum"] > best_rsum
        record = {
            "event": "val",
            "epoch": epoch,
            "iteration": iteration,
            **{k: v for k, v in metrics.items() if k not in ("seconds", "protocol", "folds")},
            "best": is_best,
            "elapsed": round(time.perf_counter() - started, 3),
        }
        _append_jsonl(metrics_path, record)
        if is_best:
            best_rsum, best_epoch, best_metrics = metrics["rsum"], epoch, record
            _save(
                model,
                best_dir,
                config,
                {"epoch": epoch, "iteration": iteration, "val": record},
                None,
                weights_dtype=cfg.best_dtype,
            )
        stale_validations = 0 if is_best else stale_validations + 1
        return record

    for epoch in range(start_epoch, cfg.epochs):
        # shuffling and dropout depend on (seed, epoch) only, so a resumed run repeats a fresh one
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(pairs))
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        bar = tqdm(
            total=iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it", disable=not progress
        )
        window_loss, window_pairs, window_start = 0.0, 0, time.perf_counter()
        for step in range(iters_per_epoch):
            picked = order[step * batch_size : (step + 1) * batch_size]
            batch = collate(train_set, pairs[picked], model.tokenize, frontend_size(model), text_cache, picked)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss = _train_step(
                model,
                batch,
                optimizer,
                scaler,
                cfg,
                amp_dtype if use_amp else None,
                max_violation=cfg.max_violation and epoch >= cfg.all_negatives_epochs,
            )
            if not math.isfinite(loss):
                raise TrainingError(f"loss is {loss} at epoch {epoch + 1}, iteration {iteration + 1}")
            scheduler.step()
            iteration += 1

            window_loss += loss
            window_pairs += len(batch["input_ids"])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            if (cfg.log_every and iteration % cfg.log_every == 0) or step == iters_per_epoch - 1:
                steps = max(1, window_pairs // batch_size)
                seconds = time.perf_counter() - window_start
                lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
                last_metrics = {
                    "event": "train",
                    "epoch": epoch + 1,
                    "iteration": iteration,
                    "loss": window_loss / steps,
                    "lr": lrs.get("rest"),
                    "lr_backbone": lrs.get("text_backbone"),
                    "pairs_per_s": round(window_pairs / max(seconds, 1e-9), 2),
                    "elapsed": round(time.perf_counter() - started, 3),
                }
                _append_jsonl(metrics_path, last_metrics)
                window_loss, window_pairs, window_start = 0.0, 0, time.perf_counter()
            if cfg.val_every and iteration % cfg.val_every == 0 and step != iters_per_epoch - 1:
                validate(epoch + 1)
                bar.set_postfix(loss=f"{loss:.3f}", rsum=f"{best_rsum:.1f}")
        bar.close()
        record = validate(epoch + 1)
        log.info(
            "epoch %d: val rsum %.2f (best %.2f at epoch %d)",
            epoch + 1,
            record["rsum"],
            best_rsum,
            best_epoch,
        )
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_scaler else None,
            "epoch": epoch + 1,
            "iteration": iteration,
            "best_rsum": best_rsum,
            "best_epoch": best_epoch,
            "best_metrics": best_metrics,
        }
        _save(
            model,
            last_dir,
            config,
            {"epoch": epoch + 1, "iteration": iteration, "val": record},
            training_state,
        )
        completed = epoch + 1
        elapsed = time.perf_counter() - started
        epoch_seconds = elapsed / max(1, completed - start_epoch)
        if cfg.patience and stale_validations >= cfg.patience:
            stopped = f"validation RSUM did not improve for {stale_validations} validations"
        elif cfg.max_minutes and completed < cfg.epochs and elapsed + epoch_seconds > cfg.max_minutes * 60:
            # stop before an epoch that would end past the budget, not after it
            stopped = f"another epoch would not end within the time budget of {cfg.max_minutes:g} minutes"
        if stopped:
            log.info("stopping after epoch %d: %s", completed, stopped)
            _append_jsonl(metrics_path, {"event": "stop", "epoch": completed, "reason": stopped})
            break

    return TrainResult(
        output_dir=out,
        epochs_completed=completed,
        iterations=iteration,
        best_rsum=best_rsum if best_epoch >= 0 else float("nan"),
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        last_metrics=last_metrics,
        resumed_from_epoch=resumed_from,
        seconds=round(time.perf_counter() - started, 3),
        stopped_early=stopped,
    )
