"""Reproduce the paper's table: a model (the authors' checkpoint imported, one of ours, or one
trained here), the test split of COCO or Flickr30k in the authors' layout, the paper's
protocols, and our figures next to the paper's (``[expected_metrics]`` of the pipeline).

:func:`compare` and :func:`split_expected` are pure; :func:`reproduce` does the I/O.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import teran_es
from teran_es.config import PipelineConfig, load_config, reproduce_protocols
from teran_es.errors import TeranError

log = logging.getLogger(__name__)

# dataset -> its pipeline file (pipelines/, shipped as teran_es.pipelines)
PAPER_PIPELINES = {"coco": "coco-teran.toml", "f30k": "f30k-teran.toml"}
METRIC_ORDER = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
# the pipeline settings an imported checkpoint's shapes must agree with to be "the paper's model"
_COMPARED_MODEL_FIELDS = (
    "region_feature_dim",
    "visual_layers",
    "text_layers",
    "embed_dim",
    "reasoning_layers",
    "shared_reasoning",
    "box_encoding",
)


class ReproduceError(TeranError, ValueError):
    """A reproduction that cannot run as asked (no text backbone, an unknown dataset)."""


def paper_pipeline_path(dataset: str) -> Path:
    """The pipeline file of ``dataset`` (coco | f30k): the checkout's first, else the installed one."""
    if dataset not in PAPER_PIPELINES:
        raise ReproduceError(f"unknown dataset {dataset!r} (known: {', '.join(PAPER_PIPELINES)})")
    name = PAPER_PIPELINES[dataset]
    checkout = Path(teran_es.__file__).resolve().parent.parent / "pipelines" / name
    if checkout.is_file():
        return checkout
    resource = importlib.resources.files("teran_es.pipelines") / name
    if isinstance(resource, Path) and resource.is_file():
        return resource
    raise ReproduceError(f"pipeline file {name} not found in the checkout nor in the installed package")


def split_expected(expected: dict[str, float], protocols: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{"1k_i2t_r1": 77.7, ...}`` -> ``{"1k": {"i2t_r1": 77.7}, ...}`` for the given protocols
    (other entries, e.g. ``val_rsum``, are left out)."""
    out: dict[str, dict[str, float]] = {p: {} for p in protocols}
    for name, value in expected.items():
        protocol, _, metric = name.partition("_")
        if protocol in out and metric:
            out[protocol][metric] = value
    return out


def compare(
    ours: dict[str, dict[str, Any]], expected: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Rows ``{protocol, metric, ours, paper, difference}`` (difference = ours - paper, in
    points) for each protocol of ``expected``, one per metric that was measured or that the
    paper gives. ``ours`` is None when the protocol was not run, ``paper`` when the pipeline
    gives no figure for the metric; the difference is None when either is. The paper's RSUM is
    the sum of its six recalls when it gives all six and no RSUM of its own."""
    rows = []
    recalls = [m for m in METRIC_ORDER if m != "rsum"]
    for protocol, figures in expected.items():
        figures = dict(figures)
        if "rsum" not in figures and all(m in figures for m in recalls):
            figures["rsum"] = round(sum(figures[m] for m in recalls), 6)
        measured = {
            m: float(v) for m, v in (ours.get(protocol) or {}).items() if m in METRIC_ORDER and isinstance(v, (int, float))
        }
        metrics = [m for m in METRIC_ORDER if m in figures or m in measured]
        metrics += sorted(m for m in figures if m not in METRIC_ORDER)
        for metric in metrics:
            ours_value, paper = measured.get(metric), figures.get(metric)
            both = ours_value is not None and paper is not None
            rows.append(
                {
                    "protocol": protocol,
                    "metric": metric,
                    "ours": ours_value,
                    "paper": paper,
                    "difference": round(ours_value - paper, 4) if both else None,
                }
            )
    return rows


def check_text_backbone(path: str) -> None:
    """The text backbone must be a local model directory: nothing is ever downloaded."""
    if not path or not (Path(path) / "config.json").is_file():
        raise ReproduceError(
            f"model.text_backbone {path!r} is not a local model directory (no config.json there): "
            "put a copy of bert-base-uncased (config.json, weights, vocab.txt) there, or pass "
            "--text-backbone DIR; nothing is downloaded"
        )


def _model_notes(config: PipelineConfig, model_config) -> list[str]:
    notes = []
    for name in _COMPARED_MODEL_FIELDS:
        ours, theirs = getattr(config.model, name), getattr(model_config, name)
        if ours != theirs:
            notes.append(f"model.{name}: the checkpoint has {theirs!r}, the paper's pipeline {ours!r}")
    return notes


def obtain_model(config: PipelineConfig, checkpoint: str | None, device, *, progress: bool, on_error: str):
    """(model on ``device``, how it was obtained): the authors' file imported, our checkpoint
    directory loaded, or, without ``checkpoint``, a model trained as ``config`` says."""
    from teran_es.model.checkpoint import load_checkpoint

    if checkpoint and Path(checkpoint).is_dir():
        model, _, meta = load_checkpoint(checkpoint, device)
        return model, {"how": "loaded", "checkpoint": checkpoint, "fingerprint": meta.get("fingerprint", "")}
    check_text_backbone(config.model.text_backbone)
    if checkpoint:
        from teran_es.model.importer import import_their_checkpoint

        model, report = import_their_checkpoint(
            checkpoint,
            text_backbone=config.model.text_backbone,
            visual_heads=config.model.visual_heads,
            reasoning_heads=config.model.reasoning_heads,
        )
        notes = report.notes + _model_notes(config, model.config)
        how = {"how": "imported", "checkpoint": checkpoint, "tensors": report.mapped, "notes": notes}
        return model.to(device), how
    from teran_es.training import train

    result = train(config, progress=progress, on_error=on_error)
    best = result.output_dir / "best"
    model, _, meta = load_checkpoint(best, device)
    how = {
        "how": "trained",
        "checkpoint": str(best),
        "epochs": result.epochs_completed,
        "best_val_rsum": result.best_rsum,
        "seconds": round(result.seconds, 1),
    }
    return model, how


def reproduce(
    config: PipelineConfig,
    checkpoint: str | None = None,
    *,
    device: str = "auto",
    candidates: Sequence[int] = (),
    workdir: str | Path | None = None,
    backend: str = "embedded",
    batch_size: int = 128,
    limit: int = 0,
    progress: bool = False,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Evaluate a model of the paper on ``config.data``'s test split under the pipeline's
    protocols (those the split's size fits; "all", the whole split, always) and compare with
    ``config.expected_metrics``. With ``candidates``, image retrieval through the search
    pipeline too (index recall + exact rerank, against the exact scan)."""
    from teran_es.config import default_cache_dir
    from teran_es.device import resolve_device
    from teran_es.evaluation import evaluate_scores, protocol_misfit, score_image_set
    from teran_es.features import open_image_set

    started = time.perf_counter()
    data = dataclasses.replace(config.data, format="bottom-up")
    split = data.test_split

    def test_images(feature_dim: int):
        return open_image_set(data, split, limit=limit, on_error=on_error, feature_dim=feature_dim)

    # opened before the model is imported or trained: a bad layout fails in seconds, not days
    image_set = test_images(config.model.region_feature_dim)
    model, how = obtain_model(config, checkpoint, resolve_device(device), progress=progress, on_error=on_error)
    if model.config.region_feature_dim != config.model.region_feature_dim:
        image_set = test_images(model.config.region_feature_dim)
    scores, owners, seconds = score_image_set(model, image_set, batch_size=batch_size, progress=progress)
    n_images, n_captions = scores.shape
    protocols = reproduce_protocols(config.reproduce)
    measured: dict[str, dict[str, Any]] = {}
    for protocol in dict.fromkeys([*protocols, "all"]):
        misfit = protocol_misfit(protocol, n_images)
        measured[protocol] = {"skipped": misfit} if misfit else evaluate_scores(scores, owners, protocol)
    expected = split_expected(config.expected_metrics, list(measured))
    result: dict[str, Any] = {
        "dataset": config.reproduce.dataset,
        "pipeline": config.name,
        "data": data.path,
        "split": split,
        "n_images": n_images,
        "n_captions": n_captions,
        "model": how,
        "protocols": measured,
        "comparison": compare(measured, {p: f for p, f in expected.items() if f}),
        "paper_source": config.reproduce.metrics_source,
        "seconds": {**seconds},
    }
    if candidates:
        from teran_es.search_evaluation import evaluate_search_pipeline

        searched_config = dataclasses.replace(
            config,
            model=model.config,
            index=dataclasses.replace(config.index, backend=backend),
            ingest=dataclasses.replace(config.ingest, device=device),
            search=dataclasses.replace(config.search, device=device),
        )
        name = re.sub(r"[^a-z0-9_\-]+", "-", f"{config.name}-{split}-{backend}".lower())
        result["search_pipeline"] = evaluate_search_pipeline(
            model,
            image_set,
            searched_config,
            Path(workdir) if workdir else default_cache_dir() / "reproduce" / name,
            candidates=sorted(set(candidates)),
            progress=progress,
        )
    result["seconds"]["total"] = round(time.perf_counter() - started, 3)
    return result


def load_paper_pipeline(dataset: str, pipeline: str | None, overrides: Sequence[str]) -> PipelineConfig:
    """The dataset's paper pipeline (or ``pipeline``), with ``--set`` overrides applied."""
    path = Path(pipeline) if pipeline else paper_pipeline_path(dataset)
    config = load_config(path, list(overrides))
    if config.reproduce.dataset and config.reproduce.dataset != dataset:
        raise ReproduceError(f"{path} is the pipeline of {config.reproduce.dataset!r}, not of {dataset!r}")
    return config
