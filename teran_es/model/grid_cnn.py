"""A small CNN that turns raw pixels into a grid of regions, trained together with TERAN.

It stands in for the bottom-up detector where no pretrained weights can be had: each
cell of a G x G grid is one region, its box is the cell, its feature is the CNN's
pooled activation over the cell.
"""

from __future__ import annotations

import torch
from torch import nn


def grid_boxes(grid: int) -> torch.Tensor:
    """Normalised (x1, y1, x2, y2) boxes of a ``grid`` x ``grid`` partition, row-major: [grid*grid, 4]."""
    edges = torch.linspace(0.0, 1.0, grid + 1)
    y1, x1 = torch.meshgrid(edges[:-1], edges[:-1], indexing="ij")
    y2, x2 = torch.meshgrid(edges[1:], edges[1:], indexing="ij")
    return torch.stack([x1, y1, x2, y2], dim=-1).reshape(grid * grid, 4)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class GridRegionEncoder(nn.Module):
    """Pixels [B, 3, S, S] (uint8 or float in [0, 1]) -> (features [B, G*G, F], boxes [B, G*G, 4])."""

    def __init__(self, feature_dim: int, grid: int = 4, width: int = 32):
        super().__init__()
        self.grid = grid
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _block(3, width, 2),
            _block(width, width, 1),
            _block(width, 2 * width, 2),
            _block(2 * width, 2 * width, 1),
            _block(2 * width, 4 * width, 2),
            nn.Conv2d(4 * width, feature_dim, kernel_size=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(grid)
        # ImageNet-like statistics are a fair default for drawings and photos alike.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("boxes", grid_boxes(grid), persistent=False)

    def region_boxes(self, regions: int) -> torch.Tensor | None:
        """The boxes [regions, 4] of an image's regions, in the order forward gives them; None
        when ``regions`` is not this grid's count."""
        return self.boxes.cpu() if regions == self.grid * self.grid else None

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.float()
        if pixels.dtype == torch.uint8:
            x = x / 255.0
        x = (x - self.mean) / self.std
        cells = self.pool(self.body(x))  # [B, F, G, G]
        features = cells.flatten(2).transpose(1, 2)  # [B, G*G, F] row-major like the boxes
        boxes = self.boxes.unsqueeze(0).expand(features.shape[0], -1, -1)
        return features, boxes
