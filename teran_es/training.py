"""The TERAN training loop (see docs/teran.md, "Loss and training").

Batches are drawn per caption: every (image, caption) pair of the training split is one
sample, shuffled each epoch, and a batch of B pairs gives a B x B score matrix whose
diagonal holds the positives (another caption of the same image is never a negative).
The loss is the hinge triplet loss over the hardest negatives or all of them
(``train.max_violation``), summed over the batch, or InfoNCE: ``train.loss`` names one of the
registry ``model.loss.LOSSES``. A wholly frozen text backbone runs once per caption, not per
step (training_batches.py).

Optimiser (training_step.py): Adam or AdamW with one learning rate for the text backbone and
one for the rest, a linear warm-up over the first iterations, step decay every
``lr_step_epochs`` epochs, gradient clipping by global norm, and mixed precision on CUDA only.

A run is a :class:`TrainingRun`: its set-up, then per epoch ``train_epoch``, ``validate``
(which writes ``best/``) and ``save_last``; :func:`train` builds and runs one.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.bank_builder import bank_from_rows, bank_source
from teran_es.collections.defaults import with_default_collection
from teran_es.config import DataConfig, PipelineConfig, check_positive_groups, save_config
from teran_es.device import resolve_device
from teran_es.encoding import frontend_size
from teran_es.errors import TeranError
from teran_es.evaluation import evaluate_model
from teran_es.features import open_image_set
from teran_es.features.image_table import read_image_groups
from teran_es.model.bank import QueryBank
from teran_es.model.checkpoint import load_checkpoint, save_checkpoint
from teran_es.model.loss import build_loss
from teran_es.model.pretrained_frontend import PRETRAINED_FRONTENDS
from teran_es.model.teran import TERAN
from teran_es.region_cache import cached_frontend_set
from teran_es.training_batches import build_text_cache, caption_pairs, collate, group_indices
from teran_es.training_step import StepWarmupSchedule, amp_settings, build_optimizer, train_step

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
    # why training stopped before train.epochs (patience, time budget); "" = it did not
    stopped_early: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["output_dir"] = str(self.output_dir)
        return out


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation draws from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class TrainingRun:
    """One run of :func:`train`: its data, model, optimiser and bookkeeping, and its steps.

    The constructor sets the run up, continuing the one in ``train.output_dir/last`` unless
    ``restart``; :meth:`run` trains until ``train.epochs``, the patience or the time budget
    is spent. ``on_error``: what the data readers do with bad images ("raise" or "skip").
    """

    def __init__(
        self, config: PipelineConfig, *, restart: bool = False, progress: bool = True, on_error: str = "raise"
    ) -> None:
        self.started = time.perf_counter()
        self.config = config
        self.cfg = cfg = config.train
        self.progress = progress
        self.loss_fn = build_loss(cfg)
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out / METRICS_FILE
        self.last_dir, self.best_dir = self.out / "last", self.out / "best"
        self.device = resolve_device(cfg.device)
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        seed_everything(cfg.seed)
        self._open_data(on_error)
        state = self._open_model(restart)
        self._cache_regions()
        self._build_optimisation()
        self.start_epoch, self.iteration = 0, 0
        self.best_rsum, self.best_epoch, self.best_metrics = -math.inf, -1, {}
        if state is not None:
            self._restore(state)
        self.completed = self.start_epoch
        self.last_metrics: dict[str, Any] = {}
        self.stale_validations = 0  # validations since the best one (for train.patience)
        self.stopped = ""  # why the run stopped before train.epochs

    # -- setup -------------------------------------------------------------------------------

    def _open_data(self, on_error: str) -> None:
        config, cfg = self.config, self.cfg
        feature_dim = config.model.region_feature_dim
        # a model with a front end trains on pixels at its input size; one without, on region features
        image_size = config.model.image_size if config.model.frontend != "none" else None
        # a pretrained front end trains on what it caches of each image (_cache_regions), which
        # reads the image once more at most: holding every image's pixels meanwhile is not needed
        keep_pixels = config.model.frontend not in PRETRAINED_FRONTENDS
        reading = {"on_error": on_error, "feature_dim": feature_dim, "image_size": image_size,
                   "keep_pixels": keep_pixels}
        # an openmoji pipeline with no data.path reads the collection built in the cache
        data = with_default_collection(config.data)
        self.train_set = open_image_set(data, config.data.train_split, **reading)
        self.val_set = open_image_set(data, config.data.val_split, limit=cfg.val_images, **reading)
        self.pairs = caption_pairs(self.train_set)
        self.groups = self._image_groups(data)
        self.batch_size = min(cfg.batch_size, len(self.pairs))
        # the ragged tail is dropped: too few negatives
        self.iters_per_epoch = len(self.pairs) // self.batch_size

    def _image_groups(self, data: DataConfig) -> np.ndarray | None:
        """The group (concept) number of each training image when ``train.positive_groups`` asks
        for one (:func:`group_indices`), read from the collection's table; None otherwise."""
        groups = self.cfg.positive_groups
        if groups == "image":
            return None
        check_positive_groups(self.cfg, self.config.data)
        return group_indices(self.train_set.image_ids, read_image_groups(data.path, groups))

    def _open_model(self, restart: bool) -> dict[str, Any] | None:
        """The model, resumed from ``last/`` (returning its training state) or built anew."""
        state: dict[str, Any] | None = None
        if self.last_dir.exists() and not restart:
            self.model, state = self._resume()
            log.info("resuming from %s (epoch %d done)", self.last_dir, state["epoch"])
        else:
            if restart and self.metrics_path.exists():
                self.metrics_path.unlink()
            self.model = TERAN(self.config.model).to(self.device)
        self.model.query_bank = self._query_bank()
        self.model.train()
        save_config(self.config, self.out / CONFIG_FILE)
        return state

    def _query_bank(self) -> QueryBank | None:
        """The bank the run's checkpoints carry (``train.query_bank_beta`` > 0): a seeded sample of
        ``train.query_bank_size`` distinct captions of the training images (0 = all)."""
        cfg = self.cfg
        if cfg.query_bank_beta <= 0:
            return None
        rows = [{"split": "train", "captions": list(captions)} for captions in self.train_set.captions]
        collection = Path(with_default_collection(self.config.data).path).name or "the training data"
        source = bank_source(cfg.query_bank_size, self.config.data.train_split, collection, seed=0)
        return bank_from_rows(rows, cfg.query_bank_beta, cfg.query_bank_size, seed=0, source=source)

    def _cache_regions(self) -> None:
        """With a pretrained front end, train and validate on what its frozen part computes,
        once per image and cached (region_cache.py): the regions of a wholly frozen one, the
        trunk maps of one with fine-tuned blocks (which then run every step); not pixels."""
        size = self.config.model.image_size
        self.train_set = cached_frontend_set(self.model, self.train_set, size, progress=self.progress)
        self.val_set = cached_frontend_set(self.model, self.val_set, size, progress=self.progress)

    def _resume(self) -> tuple[Any, dict[str, Any]]:
        """(model, training state) from ``last/``; refuses a run whose model differs from the config."""
        model, saved, _meta = load_checkpoint(self.last_dir, self.device)
        wanted, had = dataclasses.asdict(self.config.model), dataclasses.asdict(saved.model)
        if had != wanted:
            changed = [k for k, v in wanted.items() if had[k] != v]
            raise TrainingError(
                f"{self.last_dir} was trained with another model config (differs in {changed}); "
                "use another train.output_dir or restart"
            )
        state_path = self.last_dir / TRAINING_STATE_FILE
        if not state_path.is_file():
            raise TrainingError(f"{state_path}: missing, cannot resume (restart instead)")
        # our own file, written by _save: optimizer tensors and plain numbers only
        return model, torch.load(state_path, map_location=self.device, weights_only=True)

    def _build_optimisation(self) -> None:
        cfg = self.cfg
        self.text_cache = build_text_cache(
            self.model, self.train_set, cfg.text_cache_max_mb, self.device, self.progress
        )
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = StepWarmupSchedule(
            self.iters_per_epoch, cfg.warmup_iters, cfg.lr_step_epochs, cfg.lr_gamma
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        use_amp, amp_dtype, self.use_scaler = amp_settings(self.device, cfg.amp)
        self.amp_dtype = amp_dtype if use_amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` (from ``last/``) left off."""
        self.optimizer.load_state_dict(state["optimizer"])
        configured = dict(vars(self.schedule))
        self.scheduler.load_state_dict(state["scheduler"])
        # the saved state carries the schedule it ran with; the config's wins, so a resumed
        # run can be extended or re-timed (train.epochs, lr_step_epochs, lr_gamma)
        vars(self.schedule).update(configured)
        if self.use_scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.best_rsum, self.best_epoch = float(state["best_rsum"]), int(state["best_epoch"])
        self.best_metrics = dict(state.get("best_metrics", {}))

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train the remaining epochs (validating and checkpointing after each); the summary."""
        for epoch in range(self.start_epoch, self.cfg.epochs):
            self.train_epoch(epoch)
            record = self.validate(epoch + 1)
            best = f"best {self.best_rsum:.2f} at epoch {self.best_epoch}"
            log.info("epoch %d: val rsum %.2f (%s)", epoch + 1, record["rsum"], best)
            self.save_last(epoch + 1, record)
            self.completed = epoch + 1
            self.stopped = self._stop_reason()
            if self.stopped:
                log.info("stopping after epoch %d: %s", self.completed, self.stopped)
                stop = {"event": "stop", "epoch": self.completed, "reason": self.stopped}
                _append_jsonl(self.metrics_path, stop)
                break
        return TrainResult(
            output_dir=self.out,
            epochs_completed=self.completed,
            iterations=self.iteration,
            best_rsum=self.best_rsum if self.best_epoch >= 0 else float("nan"),
            best_epoch=self.best_epoch,
            best_metrics=self.best_metrics,
            last_metrics=self.last_metrics,
            resumed_from_epoch=self.start_epoch,
            seconds=round(time.perf_counter() - self.started, 3),
            stopped_early=self.stopped,
        )

    def train_epoch(self, epoch: int) -> None:
        """One pass over the training pairs (0-based ``epoch``), validating every ``val_every`` iterations."""
        cfg, batch_size, steps = self.cfg, self.batch_size, self.iters_per_epoch
        # shuffling and dropout depend on (seed, epoch) only, so a resumed run repeats a fresh one
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.pairs))
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it", disable=not self.progress)
        self._window_loss, self._window_pairs, self._window_start = 0.0, 0, time.perf_counter()
        for step in range(steps):
            picked = order[step * batch_size : (step + 1) * batch_size]
            pairs = self.pairs[picked]
            batch = collate(
                self.train_set,
                pairs,
                self.model.tokenize,
                frontend_size(self.model),
                self.text_cache,
                picked,
                groups=self.groups,
            )
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss = train_step(
                self.model,
                batch,
                self.optimizer,
                self.scaler,
                cfg,
                self.loss_fn,
                self.amp_dtype,
                max_violation=cfg.max_violation and epoch >= cfg.all_negatives_epochs,
            )
            if not math.isfinite(loss):
                raise TrainingError(f"loss is {loss} at epoch {epoch + 1}, iteration {self.iteration + 1}")
            self.scheduler.step()
            self.iteration += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            self._log_step(epoch, loss, len(batch["input_ids"]), last=step == steps - 1)
            if cfg.val_every and self.iteration % cfg.val_every == 0 and step != steps - 1:
                self.validate(epoch + 1)
                bar.set_postfix(loss=f"{loss:.3f}", rsum=f"{self.best_rsum:.1f}")
        bar.close()

    def _log_step(self, epoch: int, loss: float, pairs: int, last: bool) -> None:
        """Count a step in the logged window (loss sum, pairs, start); write it every ``log_every``
        iterations and at an epoch's end."""
        self._window_loss += loss
        self._window_pairs += pairs
        if not ((self.cfg.log_every and self.iteration % self.cfg.log_every == 0) or last):
            return
        steps = max(1, self._window_pairs // self.batch_size)
        seconds = time.perf_counter() - self._window_start
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        self.last_metrics = {
            "event": "train",
            "epoch": epoch + 1,
            "iteration": self.iteration,
            "loss": self._window_loss / steps,
            "lr": lrs.get("rest"),
            "lr_backbone": lrs.get("text_backbone"),
            "lr_frontend": lrs.get("frontend"),
            "pairs_per_s": round(self._window_pairs / max(seconds, 1e-9), 2),
            "elapsed": round(time.perf_counter() - self.started, 3),
        }
        _append_jsonl(self.metrics_path, self.last_metrics)
        self._window_loss, self._window_pairs, self._window_start = 0.0, 0, time.perf_counter()

    def validate(self, epoch: int) -> dict[str, Any]:
        """Score the validation split (1-based ``epoch``), log it, and write ``best/`` when it is the best."""
        metrics = evaluate_model(
            self.model, self.val_set, protocol="all", batch_size=max(self.batch_size, 64)
        )
        is_best = metrics["rsum"] > self.best_rsum
        record = {
            "event": "val",
            "epoch": epoch,
            "iteration": self.iteration,
            **{k: v for k, v in metrics.items() if k not in ("seconds", "protocol", "folds")},
            "best": is_best,
            "elapsed": round(time.perf_counter() - self.started, 3),
        }
        _append_jsonl(self.metrics_path, record)
        if is_best:
            self.best_rsum, self.best_epoch, self.best_metrics = metrics["rsum"], epoch, record
            extra = {"epoch": epoch, "iteration": self.iteration, "val": record}
            self._save(self.best_dir, extra, None, weights_dtype=self.cfg.best_dtype)
        self.stale_validations = 0 if is_best else self.stale_validations + 1
        return record

    def save_last(self, epoch: int, record: dict[str, Any]) -> None:
        """Write ``last/``: the model after ``epoch`` (1-based) and all a resume needs."""
        training_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_scaler else None,
            "epoch": epoch,
            "iteration": self.iteration,
            "best_rsum": self.best_rsum,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
        }
        extra = {"epoch": epoch, "iteration": self.iteration, "val": record}
        self._save(self.last_dir, extra, training_state)

    def _save(
        self,
        directory: Path,
        extra: dict[str, Any],
        state: dict[str, Any] | None,
        weights_dtype: str = "fp32",
    ) -> None:
        """A checkpoint (plus the training state, if any) written aside, then moved into place."""
        tmp = directory.with_name(directory.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        save_checkpoint(
            self.model,
            tmp,
            self.config,
            extra,
            exclude_frozen_backbone=not self.cfg.save_frozen_backbone,
            weights_dtype=weights_dtype,
        )
        if state is not None:
            torch.save(state, tmp / TRAINING_STATE_FILE)
        _replace_dir(tmp, directory)

    def _stop_reason(self) -> str:
        """Why to stop after the epoch just finished ("" = go on): patience or the time budget."""
        cfg = self.cfg
        elapsed = time.perf_counter() - self.started
        epoch_seconds = elapsed / max(1, self.completed - self.start_epoch)
        if cfg.patience and self.stale_validations >= cfg.patience:
            return f"validation RSUM did not improve for {self.stale_validations} validations"
        if cfg.max_minutes and self.completed < cfg.epochs and elapsed + epoch_seconds > cfg.max_minutes * 60:
            # stop before an epoch that would end past the budget, not after it
            return f"another epoch would not end within the time budget of {cfg.max_minutes:g} minutes"
        return ""


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
    return TrainingRun(config, restart=restart, progress=progress, on_error=on_error).run()
