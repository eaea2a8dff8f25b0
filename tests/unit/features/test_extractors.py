"""torchvision extractors with randomly initialised weights saved to a file (never downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.config import ExtractorConfig
from teran_es.features.extractors import (
    DetectorFeatureExtractor,
    ExtractorError,
    GridFeatureExtractor,
    build_extractor,
)

torchvision = pytest.importorskip("torchvision")


def images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.get_model("resnet18", weights=None).state_dict(), path)
    return path


def test_grid_features_from_a_weights_file(resnet18_weights):
    extractor = GridFeatureExtractor("resnet18", resnet18_weights, grid=3, image_size=96)
    assert extractor.feature_dim == 512
    records = extractor.extract(images(2, 96), ["a.png", "b.png"])
    assert [r.image_id for r in records] == ["a.png", "b.png"]
    assert records[0].features.shape == (9, 512) and records[0].boxes.shape == (9, 4)
    np.testing.assert_allclose(records[0].boxes[0], [0, 0, 1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(records[0].boxes[-1], [2 / 3, 2 / 3, 1, 1], atol=1e-6)
    assert not np.allclose(records[0].features, records[1].features)


def test_build_extractor_from_config_and_clear_errors(resnet18_weights, tmp_path):
    assert build_extractor(ExtractorConfig()) is None
    built = build_extractor(ExtractorConfig(kind="grid", arch="resnet18", weights=str(resnet18_weights), grid=2))
    assert isinstance(built, GridFeatureExtractor) and built.grid == 2
    with pytest.raises(ExtractorError, match="needs extractor.weights"):
        build_extractor(ExtractorConfig(kind="grid"))
    with pytest.raises(ExtractorError, match="unknown extractor kind"):
        build_extractor(ExtractorConfig(kind="clip"))
    with pytest.raises(ExtractorError, match="not found"):
        GridFeatureExtractor("resnet18", tmp_path / "missing.pt")
    with pytest.raises(ExtractorError, match="does not hold weights of resnet34"):
        GridFeatureExtractor("resnet34", resnet18_weights)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ExtractorError, match="not a torch state-dict file"):
        GridFeatureExtractor("resnet18", junk)


def test_detector_boxes_and_roi_features(tmp_path):
    torch.manual_seed(0)
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    detector = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=5)
    path = tmp_path / "detector.pt"
    torch.save(detector.state_dict(), path)
    # min_score 0: random weights score low, and every box is wanted for the test
    extractor = DetectorFeatureExtractor(arch, path, max_regions=7, min_score=0.0, image_size=128)
    records = extractor.extract(images(2, 128, seed=1), ["x", "y"])
    for record in records:
        assert 1 <= record.n_regions <= 7 and record.feature_dim == extractor.feature_dim
        assert record.boxes.min() >= 0.0 and record.boxes.max() <= 1.0
        assert np.isfinite(record.features).all()
