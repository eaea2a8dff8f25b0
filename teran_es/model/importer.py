"""Import the authors' released TERAN checkpoints (``torch.save`` dicts) into our model.

Their state-dict names (under ``img_txt_enc.``) are mapped onto ours one by one; sizes are
read from tensor shapes. Known-unused tensors (the global text map, ``img_enc.fc``, the BERT
pooler, the word-embedding alias, ``position_ids``) are dropped and listed; anything else
left over is an error unless ``strict=False``. Imported models use the reference padding
and drop the last word piece, as the authors' code scores.

Assumptions the spec does not settle (see ``ImportReport.notes``): a region's feature
comes before its 5 box numbers in the box MLP input; when the reasoning layers are not
shared, ``transformer_encoder_1`` is the text side and ``transformer_encoder_2`` the image side;
attention heads cannot be read from shapes (4 and 4 unless told).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from teran_es.config import ModelConfig
from teran_es.model.checkpoint import CheckpointError
from teran_es.model.teran import TERAN
from teran_es.model.textual import backbone_from_config

THEIR_PREFIX = "img_txt_enc."
_BERT = "txt_enc.bert_model."

# Their tensors that our model has no use for (names after THEIR_PREFIX).
_IGNORED = [
    re.compile(r"txt_enc\.map\..*"),  # 768 -> 1024 map of the (untrained) global text vector
    re.compile(r"img_enc\.fc\..*"),
    re.compile(r"txt_enc\.word_embeddings\.weight"),  # alias of BERT's word embeddings
    re.compile(r"txt_enc\.bert_model\.pooler\..*"),
    re.compile(r".*\.position_ids"),  # constant buffers that only some BertModel versions save
    re.compile(r".*\.embeddings\.token_type_ids"),
]


@dataclass
class ImportReport:
    """What an import did: counts, dropped and unmatched names, inferred sizes, caveats."""

    source: str
    source_sha256: str = ""
    mapped: int = 0
    ignored: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    inferred: dict[str, Any] = field(default_factory=dict)
    epoch: Any = None
    source_config: str = ""  # their training config, as text, to check what shapes cannot tell (heads, score)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_their_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load their ``torch.save`` dict on the CPU.

    Tried first with ``weights_only=True`` (``argparse.Namespace`` allowed); their files can
    hold other pickled objects, and then the file is unpickled fully after a warning, since
    unpickling can run code stored in the file: import only files you trust.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(str(source), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a disallowed class, just not a pickle we can read
            raise CheckpointError(f"{source}: not a readable torch checkpoint ({exc})") from None
        warnings.warn(
            f"{source}: holds pickled objects beyond tensors; loading it with weights_only=False, "
            "which can execute code stored in the file. Only import checkpoints you trust.",
            stacklevel=2,
        )
        try:
            content = torch.load(str(source), map_location="cpu", weights_only=False)
        except Exception as exc:  # any unpickling failure means: not a file we can import
            raise CheckpointError(f"{source}: not a readable torch checkpoint ({exc})") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{source}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{source}: expected a dict saved by torch.save, got {type(content).__name__}")
    return content


def their_state_dict(content: dict[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Their state dict with the ``img_txt_enc.`` prefix (and any ``module.``) removed."""
    state = content.get("model", content)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: key 'model' does not hold a state dict")
    out = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.")
        if not name.startswith(THEIR_PREFIX):
            raise CheckpointError(
                f"{source}: tensor {name!r} is not under {THEIR_PREFIX!r}; not a TERAN checkpoint?"
            )
        out[name[len(THEIR_PREFIX) :]] = tensor
    return out


def _layer_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for name in state if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


def _need(state: dict[str, torch.Tensor], name: str, source: str) -> torch.Tensor:
    if name not in state:
        raise CheckpointError(
            f"{source}: tensor {THEIR_PREFIX}{name} is missing; not a TERAN checkpoint of a known layout"
        )
    return state[name]


def infer_bert_config(state: dict[str, torch.Tensor], source: str = "checkpoint") -> transformers.BertConfig:
    """A BertConfig whose shapes match their ``txt_enc.bert_model.*`` tensors (heads = hidden / 64)."""
    vocab, hidden = _need(state, _BERT + "embeddings.word_embeddings.weight", source).shape
    return transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=_layer_count(state, _BERT + "encoder.layer."),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=_need(state, _BERT + "encoder.layer.0.intermediate.dense.weight", source).shape[0],
        max_position_embeddings=_need(state, _BERT + "embeddings.position_embeddings.weight", source).shape[
            0
        ],
        type_vocab_size=_need(state, _BERT + "embeddings.token_type_embeddings.weight", source).shape[0],
    )


def infer_model_config(
    state: dict[str, torch.Tensor],
    visual_heads: int = 4,
    reasoning_heads: int = 4,
    source: str = "checkpoint",
) -> ModelConfig:
    """Our ModelConfig for their state dict: sizes from shapes, reference scoring behaviour."""
    if "img_enc.pos_encoding_image.map.0.weight" in state:
        box_encoding = "concat-and-process"
    elif "img_enc.pos_encoding_image.map.weight" in state:
        box_encoding = "project-and-sum"
    else:
        raise CheckpointError(f"{source}: no box encoding tensors (img_enc.pos_encoding_image.map.*)")
    visual_layer0 = "img_enc.transformer_encoder.layers.0."
    reasoning_layer0 = "transformer_encoder_1.layers.0."
    return ModelConfig(
        region_feature_dim=_need(state, visual_layer0 + "self_attn.in_proj_weight", source).shape[1],
        box_encoding=box_encoding,
        visual_layers=_layer_count(state, "img_enc.transformer_encoder.layers."),
        visual_heads=visual_heads,
        visual_ff_dim=_need(state, visual_layer0 + "linear1.weight", source).shape[0],
        text_layers=_layer_count(state, _BERT + "encoder.layer."),
        text_extra_layers=0,
        embed_dim=_need(state, "img_proj.weight", source).shape[0],
        reasoning_layers=_layer_count(state, "transformer_encoder_1.layers."),
        reasoning_heads=reasoning_heads,
        reasoning_ff_dim=_need(state, reasoning_layer0 + "linear1.weight", source).shape[0],
        shared_reasoning=not any(name.startswith("transformer_encoder_2.") for name in state),
        score="MrSw",
        padding="reference",
        exclude_last_word=True,
    )


def map_their_names(
    state: dict[str, torch.Tensor], shared_reasoning: bool
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(our state dict, their ignored names, their unmatched names) for their (prefix-less) state."""
    text_reasoning = "reasoning" if shared_reasoning else "text_reasoning"
    rules = [
        (r"txt_enc\.bert_model\.(.+)", "textual.backbone.{}"),
        (r"img_enc\.transformer_encoder\.(layers\..+)", "visual.transformer.{}"),
        (r"img_enc\.pos_encoding_image\.map\.(\d+\..+)", "visual.box_mlp.{}"),
        (r"img_enc\.pos_encoding_image\.map\.(weight|bias)", "visual.box_proj.{}"),
        (r"img_proj\.(.+)", "visual.projection.{}"),
        (r"cap_proj\.(.+)", "textual.projection.{}"),
        (r"transformer_encoder_1\.(layers\..+)", text_reasoning + ".{}"),
        (r"transformer_encoder_2\.(layers\..+)", "image_reasoning.{}"),
    ]
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    ours, ignored, unmatched = {}, [], []
    for name, tensor in state.items():
        if any(p.fullmatch(name) for p in _IGNORED):
            ignored.append(THEIR_PREFIX + name)
            continue
        for pattern, target in compiled:
            match = pattern.fullmatch(name)
            if match:
                ours[target.format(match.group(1))] = tensor
                break
        else:
            unmatched.append(THEIR_PREFIX + name)
    return ours, sorted(ignored), sorted(unmatched)


def _check_fit(model: TERAN, ours: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    surplus = sorted(set(ours) - set(expected))
    wrong = [
        f"{n}: {tuple(ours[n].shape)} vs {tuple(expected[n].shape)}"
        for n in ours
        if n in expected and ours[n].shape != expected[n].shape
    ]
    if missing or surplus or wrong:
        raise CheckpointError(
            f"{source}: does not fit the inferred model; ours missing {missing[:5]}; "
            f"no place for {surplus[:5]}; other shapes {wrong[:5]}"
        )


def import_their_checkpoint(
    path: str | os.PathLike[str],
    text_backbone: str | os.PathLike[str] | None = None,
    tokenizer_path: str | os.PathLike[str] | None = None,
    visual_heads: int = 4,
    reasoning_heads: int = 4,
    strict: bool = True,
) -> tuple[TERAN, ImportReport]:
    """Build our TERAN (eval mode, CPU) holding the weights of their checkpoint file.

    ``text_backbone``: a local model directory whose config (heads, activation, ...) and
    tokenizer describe their BERT (its weights are not used); without it the BERT config
    is inferred from shapes and the model has no tokenizer unless ``tokenizer_path`` gives one.
    ``strict``: refuse tensors that are neither mapped nor known to be unused.
    """
    source = str(path)
    content = read_their_file(path)
    state = their_state_dict(content, source)
    report = ImportReport(
        source=source,
        source_sha256=_sha256_file(Path(path)),
        epoch=content.get("epoch"),
        source_config=repr(content.get("config", content.get("opt")))[:4000],
    )
    config = infer_model_config(state, visual_heads, reasoning_heads, source)
    bert_config = infer_bert_config(state, source)
    tokenizer = None
    if text_backbone is not None:
        if not (Path(text_backbone) / "config.json").is_file():
            raise CheckpointError(f"{text_backbone}: not a local model directory (no config.json there)")
        named = transformers.AutoConfig.from_pretrained(str(text_backbone), local_files_only=True)
        for attr in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            if getattr(named, attr, None) != getattr(bert_config, attr):
                raise CheckpointError(
                    f"{text_backbone}: {attr}={getattr(named, attr, None)} but {source} has {getattr(bert_config, attr)}"
                )
        named.num_hidden_layers = bert_config.num_hidden_layers
        bert_config = named
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(text_backbone), local_files_only=True)
        config.text_backbone = str(text_backbone)
    else:
        report.notes.append(
            f"BERT config inferred from shapes (heads = hidden / 64 = {bert_config.num_attention_heads})"
        )
    if tokenizer_path is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
    if tokenizer is None:
        report.notes.append(
            "no tokenizer: pass --text-backbone (or --tokenizer) to be able to encode sentences"
        )
    if tokenizer is not None and len(tokenizer) != bert_config.vocab_size:
        report.notes.append(f"tokenizer has {len(tokenizer)} tokens, their BERT {bert_config.vocab_size}")

    ours, report.ignored, report.unexpected = map_their_names(state, config.shared_reasoning)
    if report.unexpected and strict:
        raise CheckpointError(
            f"{source}: tensors with no counterpart in our model: {', '.join(report.unexpected[:10])}"
        )
    model = TERAN(config, text_backbone=backbone_from_config(bert_config), tokenizer=tokenizer)
    _check_fit(model, ours, source)
    model.load_state_dict(ours, strict=True)
    report.mapped = len(ours)
    report.inferred = {k: v for k, v in dataclasses.asdict(config).items() if k != "text_backbone"}
    report.notes.append(f"attention heads assumed: visual {visual_heads}, reasoning {reasoning_heads}")
    if not config.shared_reasoning:
        report.notes.append(
            "separate reasoning: transformer_encoder_1 taken as text, transformer_encoder_2 as image"
        )
    return model.eval(), report
