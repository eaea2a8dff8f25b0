"""TERAN's visual pipeline: region features + boxes -> contextual region vectors.

An image-level token (all-zero feature, all-zero box) is put before the regions; box
geometry is merged into every feature; a transformer encoder runs over the sequence; a
linear map projects to the common space. Output keeps the image-level token at index 0.
"""

from __future__ import annotations

import torch
from torch import nn

from teran_es.config import ModelConfig
from teran_es.errors import ConfigError

BOX_ENCODINGS = ("concat-and-process", "project-and-sum")


def transformer_encoder(
    d_model: int, heads: int, ff_dim: int, layers: int, dropout: float
) -> nn.TransformerEncoder:
    """A stack of post-norm, ReLU ``nn.TransformerEncoderLayer`` (batch-first), as TERAN uses."""
    layer = nn.TransformerEncoderLayer(
        d_model,
        heads,
        dim_feedforward=ff_dim,
        dropout=dropout,
        activation="relu",
        batch_first=True,
        norm_first=False,
    )
    # Nested tensors would drop padded positions to zeros in eval only; keep train and eval alike.
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [B, R, 4] (x1, y1, x2, y2 in [0, 1]) -> [B, R, 5]: the box and its area."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return torch.cat([boxes, area.unsqueeze(-1)], dim=-1)


class VisualEncoder(nn.Module):
    """Regions -> projected (not yet reasoned, not normalised) vectors [B, 1 + R, embed_dim]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.box_encoding not in BOX_ENCODINGS:
            raise ConfigError(
                f"unknown box_encoding {config.box_encoding!r} (known: {', '.join(BOX_ENCODINGS)})"
            )
        feature_dim = config.region_feature_dim
        self.box_encoding = config.box_encoding
        if config.box_encoding == "concat-and-process":
            # The MLP replaces the feature (no residual); on the zero image-level token its
            # output is a learned constant.
            self.box_mlp = nn.Sequential(
                nn.Linear(feature_dim + 5, feature_dim), nn.ReLU(), nn.Linear(feature_dim, feature_dim)
            )
        else:
            self.box_proj = nn.Linear(5, feature_dim)
        self.transformer = transformer_encoder(
            feature_dim, config.visual_heads, config.visual_ff_dim, config.visual_layers, config.dropout
        )
        self.projection = nn.Linear(feature_dim, config.embed_dim)

    def forward(
        self, features: torch.Tensor, boxes: torch.Tensor, region_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features [B, R, F], boxes [B, R, 4], region_mask bool [B, R] ->
        (vectors [B, 1 + R, embed_dim], sequence mask bool [B, 1 + R] with the image token True)."""
        batch, _, feature_dim = features.shape
        boxes = boxes.to(features.dtype)
        first_feature = features.new_zeros(batch, 1, feature_dim)
        first_box = boxes.new_zeros(batch, 1, 4)
        features = torch.cat([first_feature, features], dim=1)
        geometry = box_geometry(torch.cat([first_box, boxes], dim=1))
        sequence_mask = torch.cat([region_mask.new_ones(batch, 1), region_mask], dim=1)
        if self.box_encoding == "concat-and-process":
            merged = self.box_mlp(torch.cat([features, geometry], dim=-1))
        else:
            merged = features + self.box_proj(geometry)
        contextual = self.transformer(merged, src_key_padding_mask=~sequence_mask)
        return self.projection(contextual), sequence_mask
