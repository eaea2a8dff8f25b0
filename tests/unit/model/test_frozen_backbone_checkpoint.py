"""Checkpoints that reference a frozen text backbone instead of storing it, fp16 weights,
and the pixel front end of the model."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
import transformers

from teran_es.model.checkpoint import (
    CheckpointError,
    frozen_backbone_keys,
    load_checkpoint,
    save_checkpoint,
)
from teran_es.model.teran import TERAN


@pytest.fixture
def backbone_dir(tmp_path, tiny_bert_config, tiny_tokenizer):
    """A tiny BERT with its tokenizer saved as a local model directory (a backbone 'source')."""
    torch.manual_seed(11)
    directory = tmp_path / "backbone"
    transformers.BertModel(tiny_bert_config).save_pretrained(directory)
    tiny_tokenizer.save_pretrained(str(directory))
    return directory


def frozen_model(config_factory, backbone_dir, trainable_layers=0, **overrides):
    torch.manual_seed(5)
    config = config_factory(text_backbone=str(backbone_dir), text_trainable_layers=trainable_layers, **overrides)
    return TERAN(config).eval()


def outputs(model, images, sentences):
    features, boxes, mask = images(3, 5, 20, seed=7)
    with torch.no_grad():
        image_out = model.encode_images(features, boxes, mask)
        text_out = model.encode_sentences(sentences)
    return image_out.regions, text_out.words, model.score(image_out, text_out)


def test_freezing_follows_the_config(config_factory, backbone_dir):
    frozen = frozen_model(config_factory, backbone_dir, trainable_layers=0)
    assert frozen.text_backbone_frozen
    frozen.train()
    assert not frozen.textual.backbone.training and frozen.visual.training  # no dropout in a frozen backbone
    last_only = frozen_model(config_factory, backbone_dir, trainable_layers=1)
    trainable = {n for n, p in last_only.textual.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)  # text_layers = 2
    assert not any(k.startswith("textual.backbone.encoder.layer.1.") for k in frozen_backbone_keys(last_only))


@pytest.mark.parametrize("trainable_layers", [0, 1])
def test_round_trip_without_the_frozen_backbone(tmp_path, config_factory, backbone_dir, images, sentences, trainable_layers):
    model = frozen_model(config_factory, backbone_dir, trainable_layers)
    save_checkpoint(model, tmp_path / "full", model.config)
    save_checkpoint(model, tmp_path / "lean", model.config, exclude_frozen_backbone=True)
    stored = safetensors.torch.load_file(str(tmp_path / "lean" / "model.safetensors"))
    assert not any(k.startswith("textual.backbone.embeddings.") for k in stored)
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert (tmp_path / "lean" / "model.safetensors").stat().st_size < full_size

    meta = json.loads((tmp_path / "lean" / "meta.json").read_text())
    reference = meta["text_backbone_reference"]
    assert reference["source"] == {"path": str(backbone_dir.resolve())}
    assert reference["keys"] == frozen_backbone_keys(model)

    loaded, _, _ = load_checkpoint(tmp_path / "lean")
    for want, got in zip(outputs(model, images, sentences), outputs(loaded, images, sentences), strict=True):
        assert torch.equal(want, got)


def test_a_changed_backbone_is_refused(tmp_path, config_factory, backbone_dir):
    model = frozen_model(config_factory, backbone_dir)
    save_checkpoint(model, tmp_path / "ckpt", model.config, exclude_frozen_backbone=True)
    changed = transformers.BertModel.from_pretrained(str(backbone_dir))
    with torch.no_grad():
        changed.embeddings.word_embeddings.weight[3] += 0.01
    changed.save_pretrained(backbone_dir)
    with pytest.raises(CheckpointError, match="not the one this checkpoint was trained with"):
        load_checkpoint(tmp_path / "ckpt")


def test_a_missing_backbone_is_refused(tmp_path, config_factory, backbone_dir):
    model = frozen_model(config_factory, backbone_dir)
    save_checkpoint(model, tmp_path / "ckpt", model.config, exclude_frozen_backbone=True)
    (backbone_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match="cannot load its text backbone"):
        load_checkpoint(tmp_path / "ckpt")


def test_weights_that_differ_from_their_source_are_not_referenced(tmp_path, config_factory, backbone_dir):
    model = frozen_model(config_factory, backbone_dir)
    with torch.no_grad():
        model.textual.backbone.embeddings.word_embeddings.weight[0] += 1.0
    with pytest.raises(CheckpointError, match="differ from"):
        save_checkpoint(model, tmp_path / "ckpt", model.config, exclude_frozen_backbone=True)


def test_fp16_weights_load_back_close(tmp_path, make_model, images, sentences):
    model = make_model(seed=2)
    save_checkpoint(model, tmp_path / "half", model.config, weights_dtype="fp16")
    stored = safetensors.torch.load_file(str(tmp_path / "half" / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in stored.values() if t.is_floating_point())
    loaded, _, meta = load_checkpoint(tmp_path / "half")
    assert meta["weights_dtype"] == "fp16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    want, got = outputs(model, images, sentences), outputs(loaded, images, sentences)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="weights_dtype"):
        save_checkpoint(model, tmp_path / "bad", model.config, weights_dtype="int4")


def test_pixel_front_end(tmp_path, make_model, sentences):
    model = make_model(frontend="grid-cnn", frontend_grid=3, frontend_width=8, image_size=24)
    pixels = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
    with torch.no_grad():
        out = model.encode_pixels(pixels)
        scores = model(pixels=pixels, **model.tokenize(sentences[:2]))
    assert out.regions.shape == (2, 9, model.config.embed_dim) and bool(out.mask.all())
    assert torch.allclose(out.regions.norm(dim=-1), torch.ones(2, 9), atol=1e-5)
    assert scores.shape == (2, 2)
    save_checkpoint(model, tmp_path / "ckpt", model.config)
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(loaded.encode_pixels(pixels).regions, out.regions)
    with pytest.raises(ValueError, match="no image front end"):
        make_model().encode_pixels(pixels)
    with pytest.raises(ValueError, match="unknown frontend"):
        make_model(frontend="vit")
