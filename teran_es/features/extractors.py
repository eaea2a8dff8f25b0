"""Region features from images with torchvision networks whose weights the user supplies.

Nothing is downloaded: a model is built with ``weights=None`` and its state dict is read
from a local file (``torch.save(model.state_dict(), path)``). Two kinds:

- :class:`GridFeatureExtractor`: a classification backbone (e.g. ResNet-50); its last
  feature map is pooled into a G x G grid, each cell one region, its box the cell.
- :class:`DetectorFeatureExtractor`: a torchvision detector (e.g. Faster R-CNN) gives the
  boxes; each box's feature is RoIAlign over the last feature map of the detector's own
  backbone trunk, averaged (as bottom-up attention pools its regions).

Both take RGB uint8 images [S, S, 3] (``images.load_image(path, extractor.image_size)``) and
return :class:`ImageRecord` objects, ready for ``TERAN.encode_images``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from teran_es.config import ExtractorConfig
from teran_es.errors import TeranError
from teran_es.features.records import ImageRecord

EXTRACTOR_KINDS = ("none", "grid", "detector")
# ImageNet statistics: torchvision's classification backbones are trained on them
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ExtractorError(TeranError, ValueError):
    """An extractor that cannot be built: unknown architecture, missing or unfitting weights."""


def _torchvision():
    try:
        import torchvision
    except ImportError:
        raise ExtractorError(
            "region features from images with a torchvision network need the package torchvision "
            "(pip install torchvision)"
        ) from None
    return torchvision


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` (tensors only: ``weights_only=True``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ExtractorError(f"weights file not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        raise ExtractorError(f"{p}: not a torch state-dict file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # training scripts often wrap the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExtractorError(f"{p}: holds no state dict of tensors")
    return state


def _load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str, arch: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ExtractorError(f"{path} does not hold weights of {arch}: {' '.join(first)}") from None


def _normalise(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 [S, S, 3] images -> float [B, 3, S, S] with ImageNet statistics."""
    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std


def _grid_boxes(grid: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, grid + 1, dtype=np.float32)
    rows = [(edges[c], edges[r], edges[c + 1], edges[r + 1]) for r in range(grid) for c in range(grid)]
    return np.asarray(rows, dtype=np.float32)


class GridFeatureExtractor:
    """A torchvision classification backbone's last feature map pooled into a grid of regions."""

    def __init__(
        self,
        arch: str,
        weights: str | os.PathLike[str],
        grid: int = 6,
        image_size: int = 448,
        device: torch.device | str = "cpu",
    ) -> None:
        tv = _torchvision()
        try:
            model = tv.models.get_model(arch, weights=None)
        except ValueError as exc:
            raise ExtractorError(f"unknown torchvision model {arch!r}: {exc}") from None
        _load_weights(model, load_state_dict_file(weights), str(weights), arch)
        self.trunk = _classification_trunk(model, arch).to(device).eval()
        self.device = torch.device(device)
        self.grid = grid
        self.image_size = image_size
        self.boxes = _grid_boxes(grid)
        with torch.inference_mode():
            probe = self.trunk(torch.zeros(1, 3, 64, 64, device=self.device))
        self.feature_dim = int(probe.shape[1])

    def extract(self, images: Sequence[np.ndarray], image_ids: Sequence[str]) -> list[ImageRecord]:
        """RGB uint8 images [S, S, 3] -> one record per image (grid*grid regions, row-major)."""
        with torch.inference_mode():
            maps = self.trunk(_normalise(images, self.device))
            cells = torch.nn.functional.adaptive_avg_pool2d(maps, self.grid)  # [B, F, G, G]
            features = cells.flatten(2).transpose(1, 2).float().cpu().numpy()
        return [
            ImageRecord(image_id=i, features=np.ascontiguousarray(f), boxes=self.boxes.copy())
            for i, f in zip(image_ids, features, strict=True)
        ]


def _classification_trunk(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """The part of a classification model that maps pixels to its last feature map."""
    if hasattr(model, "layer4") and hasattr(model, "conv1"):  # ResNet, ResNeXt, Wide ResNet
        return torch.nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4
        )
    if hasattr(model, "features") and isinstance(model.features, torch.nn.Module):  # VGG, MobileNet, EfficientNet, ...
        return model.features
    raise ExtractorError(f"{arch}: no known feature trunk (ResNet-like or with a `features` module)")


class DetectorFeatureExtractor:
    """Boxes from a torchvision detector, features by RoIAlign over its backbone trunk's last map."""

    def __init__(
        self,
        arch: str,
        weights: str | os.PathLike[str],
        max_regions: int = 36,
        min_score: float = 0.2,
        image_size: int = 448,
        device: torch.device | str = "cpu",
    ) -> None:
        tv = _torchvision()
        state = load_state_dict_file(weights)
        # the number of classes is whatever the weights were trained with (91 for COCO)
        classes = state.get("roi_heads.box_predictor.cls_score.weight")
        options = {"num_classes": int(classes.shape[0])} if classes is not None else {}
        try:
            model = tv.models.get_model(
                arch,
                weights=None,
                weights_backbone=None,
                box_score_thresh=min_score,
                box_detections_per_img=max_regions,
                **options,
            )
        except (ValueError, TypeError) as exc:
            raise ExtractorError(f"cannot build the torchvision detector {arch!r}: {exc}") from None
        _load_weights(model, state, str(weights), arch)
        self.detector = model.to(device).eval()
        body = getattr(getattr(model, "backbone", None), "body", None)
        if body is None:
            raise ExtractorError(f"{arch}: the detector has no backbone trunk (backbone.body) to pool features from")
        self.body = body
        self.device = torch.device(device)
        self.image_size = image_size
        self.max_regions = max_regions
        with torch.inference_mode():
            probe = list(self.body(torch.zeros(1, 3, 64, 64, device=self.device)).values())[-1]
        self.feature_dim = int(probe.shape[1])

    def extract(self, images: Sequence[np.ndarray], image_ids: Sequence[str]) -> list[ImageRecord]:
        """RGB uint8 images [S, S, 3] -> one record per image: its detected boxes (the whole
        image when nothing is detected) and their RoIAlign features."""
        from torchvision.ops import roi_align

        records = []
        with torch.inference_mode():
            raw = [torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).float() / 255.0 for im in images]
            detections = self.detector(raw)  # the detector normalises and resizes by itself
            maps = list(self.body(_normalise(images, self.device)).values())[-1]  # [B, F, h, w]
            for index, (image, found) in enumerate(zip(images, detections, strict=True)):
                height, width = image.shape[:2]
                boxes = found["boxes"][: self.max_regions]
                if boxes.shape[0] == 0:
                    boxes = torch.tensor([[0.0, 0.0, width, height]], device=self.device)
                pooled = roi_align(
                    maps[index : index + 1],
                    [boxes.float()],
                    output_size=2,
                    spatial_scale=maps.shape[-1] / width,
                    sampling_ratio=2,
                    aligned=True,
                )
                features = pooled.mean(dim=(2, 3)).float().cpu().numpy()
                scale = torch.tensor([width, height, width, height], device=self.device, dtype=torch.float32)
                normalised = (boxes.float() / scale).clamp(0.0, 1.0).cpu().numpy()
                records.append(
                    ImageRecord(image_id=image_ids[index], features=np.ascontiguousarray(features), boxes=normalised)
                )
        return records


def build_extractor(config: ExtractorConfig, device: torch.device | str = "cpu"):
    """The extractor a pipeline names, or None for ``kind = "none"``."""
    if config.kind not in EXTRACTOR_KINDS:
        raise ExtractorError(f"unknown extractor kind {config.kind!r} (known: {', '.join(EXTRACTOR_KINDS)})")
    if config.kind == "none":
        return None
    if not config.weights:
        raise ExtractorError(
            f"extractor.kind = {config.kind!r} needs extractor.weights: a state-dict file of the network "
            "(teran-es never downloads weights)"
        )
    if config.kind == "grid":
        return GridFeatureExtractor(
            config.arch, config.weights, grid=config.grid, image_size=config.image_size, device=device
        )
    return DetectorFeatureExtractor(
        config.detector,
        config.weights,
        max_regions=config.max_regions,
        min_score=config.min_score,
        image_size=config.image_size,
        device=device,
    )
