"""Self-describing TERAN checkpoints and model fingerprints.

A checkpoint is a directory:

- ``config.toml``: the pipeline config (its ``model`` section is the model's own config);
- ``model.safetensors``: every weight, text backbone included;
- ``text_backbone.json``: the backbone's transformers config (architecture, sizes), so the
  checkpoint loads without the directory the backbone came from;
- ``tokenizer/``: the tokenizer files (absent when the model has no tokenizer);
- ``meta.json``: format version, fingerprint, library versions, creation time, extras.
  Written last: a directory without it is not a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import transformers

import teran_es
from teran_es.config import ConfigError, ModelConfig, PipelineConfig, load_config, save_config
from teran_es.model.teran import TERAN
from teran_es.model.textual import backbone_from_config

FORMAT_VERSION = 1
CONFIG_FILE = "config.toml"
WEIGHTS_FILE = "model.safetensors"
TEXT_CONFIG_FILE = "text_backbone.json"
TOKENIZER_DIR = "tokenizer"
META_FILE = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt or made by an incompatible version."""


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted names, dtypes, shapes and bytes of a state dict."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def model_fingerprint(model_or_dir: torch.nn.Module | str | os.PathLike[str]) -> str:
    """Stable identity of a model's weights: from a module, or from a checkpoint directory
    (computed from its weights file, so a modified file is noticed)."""
    if isinstance(model_or_dir, torch.nn.Module):
        return state_fingerprint(model_or_dir.state_dict())
    weights = Path(model_or_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; {model_or_dir} is not a teran-es checkpoint")
    return state_fingerprint(safetensors.torch.load_file(str(weights)))


def library_versions() -> dict[str, str]:
    return {
        "teran_es": teran_es.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": getattr(safetensors, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def save_checkpoint(
    model: TERAN,
    directory: str | os.PathLike[str],
    config: PipelineConfig | ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory (see the module docstring); returns its path.

    ``config``: the pipeline that produced the model (its model section is replaced by the
    model's own config), a ModelConfig, or None. ``extra``: JSON-serialisable notes kept
    in meta.json (epoch, metrics, provenance...).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # the directory is incomplete until meta.json is back

    pipeline = config if isinstance(config, PipelineConfig) else PipelineConfig()
    pipeline = dataclasses.replace(pipeline, model=dataclasses.replace(model.config))
    save_config(pipeline, out / CONFIG_FILE)

    backbone_config = model.textual.backbone.config
    (out / TEXT_CONFIG_FILE).write_text(backbone_config.to_json_string(use_diff=False))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    elif (out / TOKENIZER_DIR).is_dir():
        shutil.rmtree(out / TOKENIZER_DIR)  # a stale tokenizer from an earlier save would be loaded

    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    safetensors.torch.save_file(
        state, str(tmp), metadata={"format": "pt", "teran_es_format": str(FORMAT_VERSION)}
    )
    tmp.replace(out / WEIGHTS_FILE)

    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": state_fingerprint(state),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "parameters": sum(t.numel() for t in state.values()),
        "has_tokenizer": model.tokenizer is not None,
        "extra": extra or {},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return out


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """meta.json of a checkpoint, checked for a format this version can read."""
    path = Path(directory) / META_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {directory} is not a complete teran-es checkpoint")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: no format_version; not a teran-es checkpoint")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this teran-es reads ({FORMAT_VERSION}); upgrade teran-es"
        )
    return meta


def _load_backbone_config(path: Path) -> transformers.PretrainedConfig:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the text backbone's architecture)")
    try:
        values = json.loads(path.read_text())
        return transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a usable transformers config ({exc})") from None


def _check_state(model: TERAN, state: dict[str, torch.Tensor], weights: Path) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{n}: file {found[n]} vs model {expected[n]}"
        for n in sorted(set(expected) & set(found))
        if found[n] != expected[n]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} with other shapes (e.g. {'; '.join(mismatched[:3])})")
    if problems:
        raise CheckpointError(
            f"{weights}: weights do not fit the model described by its config: " + "; ".join(problems)
        )


def load_checkpoint(
    directory: str | os.PathLike[str], device: torch.device | str = "cpu", verify: bool = True
) -> tuple[TERAN, PipelineConfig, dict[str, Any]]:
    """(model in eval mode on ``device``, pipeline config, meta) from a checkpoint directory.

    ``verify``: recompute the weights' fingerprint and refuse a file that does not match meta.json.
    """
    root = Path(directory)
    meta = read_meta(root)
    try:
        pipeline = load_config(root / CONFIG_FILE)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    backbone_config = _load_backbone_config(root / TEXT_CONFIG_FILE)
    tokenizer = None
    if (root / TOKENIZER_DIR).is_dir():
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(root / TOKENIZER_DIR), local_files_only=True
        )

    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        state = safetensors.torch.load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{weights}: unreadable ({exc})") from None
    if verify and meta.get("fingerprint") and state_fingerprint(state) != meta["fingerprint"]:
        raise CheckpointError(
            f"{weights}: fingerprint differs from {root / META_FILE}; the weights were changed or damaged"
        )

    model = TERAN(pipeline.model, text_backbone=backbone_from_config(backbone_config), tokenizer=tokenizer)
    _check_state(model, state, weights)
    model.load_state_dict(state)
    return model.to(device).eval(), pipeline, meta
