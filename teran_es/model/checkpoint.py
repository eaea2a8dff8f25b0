"""Self-describing TERAN checkpoints and model fingerprints.

A checkpoint is a directory:

- ``config.toml``: the pipeline config (its ``model`` section is the model's own config);
- ``model.safetensors``: every weight, text backbone included, unless the checkpoint was
  saved with ``exclude_frozen_backbone``: then the frozen backbone weights are left out and
  ``meta.json`` references them instead (the package or directory they come from, their
  names and a fingerprint); the loader takes them from there and refuses any that differ.
  Weights may be stored in fp16 (``weights_dtype``) and come back as fp32;
- ``text_backbone.json``: the backbone's transformers config (architecture, sizes), so the
  checkpoint loads without the directory the backbone came from;
- ``tokenizer/``: the tokenizer files (absent when the model has no tokenizer);
- ``query_bank.json``: the model's query bank (``model/bank.py``), when it has one;
- ``meta.json``: format version, fingerprint, library versions, creation time, extras.
  Written last: a directory without it is not a complete checkpoint.

The format in full, with the import of the authors' files: docs/checkpoint-format.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
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
from teran_es.errors import TeranError
from teran_es.model.bank import BANK_FILE, read_query_bank, write_query_bank
from teran_es.model.pretrained_frontend import (
    PretrainedRegions,
    frontend_package,
    load_package_state,
    package_version,
    weights_fingerprint,
)
from teran_es.model.teran import TERAN
from teran_es.model.textual import (
    DEFAULT_BACKBONE_PACKAGE,
    backbone_from_config,
    default_text_backbone_path,
    load_text_backbone,
)

FORMAT_VERSION = 1
CONFIG_FILE = "config.toml"
WEIGHTS_FILE = "model.safetensors"
TEXT_CONFIG_FILE = "text_backbone.json"
TOKENIZER_DIR = "tokenizer"
META_FILE = "meta.json"
BACKBONE_PREFIX = "textual.backbone."
FRONTEND_PREFIX = "frontend.network."
WEIGHTS_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class CheckpointError(TeranError, RuntimeError):
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


def frozen_backbone_keys(model: TERAN) -> list[str]:
    """State-dict names of the text backbone's frozen weights and buffers (sorted)."""
    trainable = {
        BACKBONE_PREFIX + name for name, p in model.textual.backbone.named_parameters() if p.requires_grad
    }
    return sorted(
        name for name in model.state_dict() if name.startswith(BACKBONE_PREFIX) and name not in trainable
    )


def backbone_source(model_config: ModelConfig) -> dict[str, str]:
    """Where a model's text backbone comes from: the default package (name and version) or a directory."""
    if not model_config.text_backbone:
        try:
            version = importlib.metadata.version(DEFAULT_BACKBONE_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return {"package": DEFAULT_BACKBONE_PACKAGE, "version": version}
    return {"path": str(Path(model_config.text_backbone).expanduser().resolve())}


def _describe_source(source: dict[str, str]) -> str:
    if "package" in source:
        return f"the package {source['package']} {source.get('version', '')}".rstrip()
    return f"the directory {source.get('path')}"


def _source_directory(source: dict[str, str]) -> Path:
    if "package" in source:
        if source["package"] != DEFAULT_BACKBONE_PACKAGE:
            raise CheckpointError(f"unknown text backbone package {source['package']!r}")
        try:
            return default_text_backbone_path()
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"this checkpoint takes its frozen text backbone from {_describe_source(source)}, "
                f"which is not installed: {exc}"
            ) from None
    return Path(source["path"])


@functools.lru_cache(maxsize=4)
def _source_backbone_fingerprint(directory: str, layers: int, keys: tuple[str, ...]) -> str:
    """Fingerprint of ``keys`` of the backbone in ``directory`` truncated to ``layers`` (cached:
    training saves a checkpoint every epoch)."""
    from teran_es.model.textual import prepare_backbone

    backbone, _ = load_text_backbone(directory)
    state = prepare_backbone(backbone, layers).state_dict()
    return state_fingerprint({key: state[key[len(BACKBONE_PREFIX) :]] for key in keys})


def frozen_frontend_keys(model: TERAN) -> list[str]:
    """State-dict names of a pretrained front end's frozen weights and buffers (sorted); [] for
    a model without one. The weights of fine-tuned blocks are stored, not referenced."""
    if not isinstance(model.frontend, PretrainedRegions):
        return []
    tuned = tuple(FRONTEND_PREFIX + name + "." for name in model.frontend.tuned_modules)
    return sorted(
        name for name in model.state_dict() if name.startswith(FRONTEND_PREFIX) and not name.startswith(tuned)
    )


def _frontend_reference(model: TERAN, state: dict[str, torch.Tensor], keys: list[str]) -> dict[str, Any]:
    name = model.config.frontend
    return {
        "frontend": name,
        "package": frontend_package(name),
        "version": package_version(name),
        "keys": keys,
        "fingerprint": weights_fingerprint({key[len(FRONTEND_PREFIX) :]: state[key] for key in keys}),
    }


def _check_frontend_reference(model: TERAN, reference: dict[str, Any], root: Path) -> None:
    """Refuse a pretrained front end whose installed weights differ from the checkpoint's."""
    package_state = load_package_state(model.config.frontend)
    names = [key[len(FRONTEND_PREFIX) :] for key in reference["keys"]]
    missing = [name for name in names if name not in package_state]
    found = None if missing else weights_fingerprint({name: package_state[name] for name in names})
    if found != reference.get("fingerprint"):
        raise CheckpointError(
            f"{root}: the image front end weights of the installed {reference['package']} "
            f"{package_version(model.config.frontend)} are not the ones this checkpoint was trained with "
            f"({reference['package']} {reference.get('version')}; fingerprint "
            f"{(found or 'missing keys')[:12]}, expected {str(reference.get('fingerprint'))[:12]}). "
            f"Install {reference['package']}=={reference.get('version')}, or retrain."
        )


def save_checkpoint(
    model: TERAN,
    directory: str | os.PathLike[str],
    config: PipelineConfig | ModelConfig | None = None,
    extra: dict[str, Any] | None = None,
    *,
    exclude_frozen_backbone: bool = False,
    weights_dtype: str = "fp32",
) -> Path:
    """Write ``model`` as a checkpoint directory (see the module docstring); returns its path.

    ``config``: the pipeline that produced the model (its model section is replaced by the
    model's own config), a ModelConfig, or None. ``extra``: JSON-serialisable notes kept
    in meta.json (epoch, metrics, provenance...).
    ``exclude_frozen_backbone``: leave the frozen text-backbone weights out and reference
    their source instead; refused when they differ from that source (they could never load).
    ``weights_dtype``: "fp32" or "fp16" for the floating-point tensors written.
    """
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ConfigError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
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
    reference = None
    excluded = frozen_backbone_keys(model) if exclude_frozen_backbone else []
    if excluded:
        source = backbone_source(model.config)
        fingerprint = state_fingerprint({key: state[key] for key in excluded})
        expected = _source_backbone_fingerprint(
            str(_source_directory(source)), model.config.text_layers, tuple(excluded)
        )
        if fingerprint != expected:
            raise CheckpointError(
                f"the model's frozen text-backbone weights differ from {_describe_source(source)}; "
                "save them in the checkpoint (exclude_frozen_backbone=False)"
            )
        reference = {"source": source, "keys": excluded, "fingerprint": fingerprint}
        state = {name: tensor for name, tensor in state.items() if name not in set(excluded)}
    frontend_keys = frozen_frontend_keys(model)
    frontend_reference = _frontend_reference(model, state, frontend_keys) if frontend_keys else None
    state = {name: tensor for name, tensor in state.items() if name not in set(frontend_keys)}
    dtype = WEIGHTS_DTYPES[weights_dtype]
    state = {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}
    tmp = out / (WEIGHTS_FILE + ".tmp")
    safetensors.torch.save_file(
        state, str(tmp), metadata={"format": "pt", "teran_es_format": str(FORMAT_VERSION)}
    )
    tmp.replace(out / WEIGHTS_FILE)
    if model.query_bank is not None:
        write_query_bank(out, model.query_bank)
    else:
        (out / BANK_FILE).unlink(missing_ok=True)  # a stale bank of an earlier save would be loaded

    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": state_fingerprint(state),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "parameters": sum(t.numel() for t in state.values()),
        "has_tokenizer": model.tokenizer is not None,
        "weights_dtype": weights_dtype,
        "text_backbone_reference": reference,
        "frontend_reference": frontend_reference,
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

    reference = meta.get("text_backbone_reference")
    if reference:
        model = _model_with_referenced_backbone(pipeline.model, reference, tokenizer, root)
        own = model.state_dict()
        state = {**{key: own[key] for key in reference["keys"]}, **state}
    else:
        model = TERAN(
            pipeline.model, text_backbone=backbone_from_config(backbone_config), tokenizer=tokenizer
        )
    frontend_reference = meta.get("frontend_reference")
    if frontend_reference:
        _check_frontend_reference(model, frontend_reference, root)
        own = model.state_dict()
        state = {**{key: own[key] for key in frontend_reference["keys"]}, **state}
    _check_state(model, state, weights)
    # fp16 files come back as fp32: load_state_dict copies into the model's own dtype
    model.load_state_dict(state)
    model.query_bank = read_query_bank(root)
    return model.to(device).eval(), pipeline, meta


def _model_with_referenced_backbone(
    model_config: ModelConfig, reference: dict[str, Any], tokenizer, root: Path
) -> TERAN:
    """A TERAN whose text backbone comes from the referenced source, checked against the fingerprint."""
    source = reference.get("source") or {}
    directory = _source_directory(source)
    try:
        backbone, _ = load_text_backbone(directory)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{root}: cannot load its text backbone from {_describe_source(source)}: {exc}"
        ) from None
    model = TERAN(model_config, text_backbone=backbone, tokenizer=tokenizer)
    own = model.state_dict()
    missing = [key for key in reference["keys"] if key not in own]
    if missing:
        raise CheckpointError(
            f"{root}: the text backbone from {_describe_source(source)} lacks {len(missing)} referenced "
            f"weights (e.g. {', '.join(missing[:3])})"
        )
    found = state_fingerprint({key: own[key] for key in reference["keys"]})
    if found != reference.get("fingerprint"):
        installed = backbone_source(model_config)
        raise CheckpointError(
            f"{root}: the text backbone found at {directory} ({_describe_source(installed)}) is not the one "
            f"this checkpoint was trained with ({_describe_source(source)}): its frozen weights differ "
            f"(fingerprint {found[:12]}, expected {str(reference.get('fingerprint'))[:12]}). "
            "Install the backbone the checkpoint names, or retrain."
        )
    return model
