"""Checkpoint save/load round trips, fingerprints and clear errors."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from teran_es.config import PipelineConfig
from teran_es.model.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    model_fingerprint,
    read_meta,
    save_checkpoint,
)


def outputs(model, images, sentences):
    features, boxes, mask = images(3, 5, 20, seed=7)
    with torch.no_grad():
        image_out = model.encode_images(features, boxes, mask)
        text_out = model.encode_sentences(sentences)
    return image_out, text_out, model.score(image_out, text_out)


def test_round_trip_gives_identical_outputs(tmp_path, make_model, images, sentences):
    model = make_model(seed=3, shared_reasoning=False, exclude_last_word=True)
    pipeline = PipelineConfig(name="tiny")
    pipeline.train.epochs = 3
    save_checkpoint(model, tmp_path / "ckpt", pipeline, extra={"epoch": 2, "rsum": 123.4})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {
        "config.toml",
        "model.safetensors",
        "text_backbone.json",
        "tokenizer",
        "meta.json",
    }

    loaded, config, meta = load_checkpoint(tmp_path / "ckpt")
    assert not loaded.training
    assert config.name == "tiny" and config.train.epochs == 3 and config.model == model.config
    assert meta["format_version"] == FORMAT_VERSION and meta["extra"] == {"epoch": 2, "rsum": 123.4}
    assert set(meta["versions"]) >= {"torch", "transformers", "teran_es"}
    assert meta["fingerprint"] == model_fingerprint(model) == model_fingerprint(loaded)
    assert model_fingerprint(tmp_path / "ckpt") == meta["fingerprint"]

    want, got = outputs(model, images, sentences), outputs(loaded, images, sentences)
    assert torch.equal(want[0].regions, got[0].regions) and torch.equal(want[1].words, got[1].words)
    assert torch.equal(want[1].mask, got[1].mask) and torch.equal(want[2], got[2])


def test_model_config_alone_is_accepted(tmp_path, make_model):
    model = make_model()
    save_checkpoint(model, tmp_path, model.config)
    _, config, _ = load_checkpoint(tmp_path, verify=False)
    assert config.model == model.config


def test_fingerprint_follows_the_weights(make_model):
    model = make_model(seed=1)
    before = model_fingerprint(model)
    assert model_fingerprint(make_model(seed=1)) == before
    with torch.no_grad():
        model.visual.projection.bias[0] += 1e-3
    assert model_fingerprint(model) != before


def test_missing_and_incomplete_checkpoints(tmp_path, make_model):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent")
    save_checkpoint(make_model(), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"meta\.json: missing"):
        load_checkpoint(tmp_path / "ckpt")


def test_newer_format_is_refused(tmp_path, make_model):
    save_checkpoint(make_model(), tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"meta\.json: checkpoint format .* newer"):
        read_meta(tmp_path)


def test_weights_that_do_not_fit_the_config_name_the_file(tmp_path, make_model):
    save_checkpoint(make_model(), tmp_path)
    config_text = (tmp_path / "config.toml").read_text().replace("embed_dim = 24", "embed_dim = 12")
    (tmp_path / "config.toml").write_text(config_text)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not fit .* other shapes"):
        load_checkpoint(tmp_path)


def test_changed_weights_are_noticed(tmp_path, make_model):
    save_checkpoint(make_model(), tmp_path)
    state = safetensors.torch.load_file(str(tmp_path / "model.safetensors"))
    state["visual.projection.bias"] += 1
    safetensors.torch.save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="fingerprint differs"):
        load_checkpoint(tmp_path)


def test_truncated_weights_file(tmp_path, make_model):
    save_checkpoint(make_model(), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable"):
        load_checkpoint(tmp_path)


def test_model_without_tokenizer_round_trips(tmp_path, make_model):
    model = make_model()
    model.tokenizer = None
    save_checkpoint(model, tmp_path)
    loaded, _, meta = load_checkpoint(tmp_path)
    assert loaded.tokenizer is None and meta["has_tokenizer"] is False
