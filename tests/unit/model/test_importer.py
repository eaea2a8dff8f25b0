"""Import of the authors' checkpoints, checked against a restatement of their forward pass.

The restatement below is written from the spec, independently of teran_es.model: raw
sequence-first ``nn.TransformerEncoderLayer`` stacks, the box MLP as plain matrix products,
the projections, the (shared) reasoning layers, normalisation, and their scoring: zero
padding of A and captions without [CLS], their last word piece and [SEP].
"""

from __future__ import annotations

import argparse
import json
import pathlib

import pytest
import torch
import transformers
from click.testing import CliRunner
from torch import nn

from teran_es.cli import cli
from teran_es.model.checkpoint import CheckpointError, load_checkpoint
from teran_es.model.importer import import_their_checkpoint

FEATURES, EMBED, HIDDEN, HEADS = 24, 16, 32, 4
VISUAL_FF, REASONING_FF = 36, 40


def bert_config(heads: int) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=20,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=heads,
        intermediate_size=44,
        max_position_embeddings=64,
    )


def their_state(
    config: transformers.BertConfig, shared: bool = True, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A state dict in their layout (names after ``img_txt_enc.``), every value random."""
    torch.manual_seed(seed)
    state = {"txt_enc.bert_model." + k: v for k, v in transformers.BertModel(config).state_dict().items()}
    state["txt_enc.bert_model.embeddings.position_ids"] = torch.arange(64)[None]  # saved by some versions
    state["txt_enc.map.weight"], state["txt_enc.map.bias"] = torch.randn(EMBED, HIDDEN), torch.randn(EMBED)
    state["img_enc.fc.weight"], state["img_enc.fc.bias"] = torch.randn(EMBED, FEATURES), torch.randn(EMBED)
    state["img_enc.pos_encoding_image.map.0.weight"] = torch.randn(FEATURES, FEATURES + 5) * 0.2
    state["img_enc.pos_encoding_image.map.0.bias"] = torch.randn(FEATURES) * 0.2
    state["img_enc.pos_encoding_image.map.2.weight"] = torch.randn(FEATURES, FEATURES) * 0.2
    state["img_enc.pos_encoding_image.map.2.bias"] = torch.randn(FEATURES) * 0.2
    state["img_proj.weight"], state["img_proj.bias"] = torch.randn(EMBED, FEATURES) * 0.2, torch.randn(EMBED)
    state["cap_proj.weight"], state["cap_proj.bias"] = torch.randn(EMBED, HIDDEN) * 0.2, torch.randn(EMBED)
    stacks = [
        ("img_enc.transformer_encoder", FEATURES, VISUAL_FF),
        ("transformer_encoder_1", EMBED, REASONING_FF),
    ]
    if not shared:
        stacks.append(("transformer_encoder_2", EMBED, REASONING_FF))
    for prefix, width, ff in stacks:
        for n in range(2):
            layer = nn.TransformerEncoderLayer(width, HEADS, dim_feedforward=ff)
            state.update({f"{prefix}.layers.{n}.{k}": v for k, v in layer.state_dict().items()})
    for name, value in state.items():  # no two norms or layers alike, so a swapped name shows
        if value.is_floating_point():
            state[name] = value + 0.05 * torch.randn_like(value)
    state["txt_enc.word_embeddings.weight"] = state[
        "txt_enc.bert_model.embeddings.word_embeddings.weight"
    ].clone()
    return state


def save_theirs(path: pathlib.Path, state: dict[str, torch.Tensor], **more) -> pathlib.Path:
    content = {
        "model": {"img_txt_enc." + k: v for k, v in state.items()},
        "optimizer": {},
        "scheduler": None,
        "epoch": 17,
        "config": {"model": {"name": "teran"}},
        "opt": argparse.Namespace(batch_size=40, lr=1e-5),
        **more,
    }
    torch.save(content, path)
    return path


def their_stack(state, prefix: str, width: int) -> list[nn.TransformerEncoderLayer]:
    layers = []
    for n in range(2):
        ff = state[f"{prefix}.layers.{n}.linear1.weight"].shape[0]
        layer = nn.TransformerEncoderLayer(width, HEADS, dim_feedforward=ff, dropout=0.0)  # sequence-first
        head = f"{prefix}.layers.{n}."
        layer.load_state_dict({k[len(head) :]: v for k, v in state.items() if k.startswith(head)})
        layers.append(layer.eval())
    return layers


@torch.no_grad()
def their_scores(state, config, features, boxes, n_regions, input_ids, lengths, shared=True) -> torch.Tensor:
    """Their model's MrSw scores [images, captions], restated from the spec."""
    batch, regions, _ = features.shape
    # image: zero first token, box + area concatenated after the feature, 2-layer MLP
    x = torch.cat([torch.zeros(batch, 1, FEATURES), features], dim=1)
    b = torch.cat([torch.zeros(batch, 1, 4), boxes], dim=1)
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    x = torch.cat([x, b, area[..., None]], dim=-1)
    p = "img_enc.pos_encoding_image.map."
    x = (
        torch.relu(x @ state[p + "0.weight"].T + state[p + "0.bias"]) @ state[p + "2.weight"].T
        + state[p + "2.bias"]
    )
    image_pad = torch.arange(regions + 1)[None] > n_regions[:, None]  # index 0 is the image token
    h = x.transpose(0, 1)
    for layer in their_stack(state, "img_enc.transformer_encoder", FEATURES):
        h = layer(h, src_key_padding_mask=image_pad)
    h = h @ state["img_proj.weight"].T + state["img_proj.bias"]
    for layer in their_stack(state, "transformer_encoder_1" if shared else "transformer_encoder_2", EMBED):
        h = layer(h, src_key_padding_mask=image_pad)
    image_vectors = nn.functional.normalize(h.transpose(0, 1), dim=-1)

    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    prefix = "txt_enc.bert_model."
    bert.load_state_dict(
        {
            k[len(prefix) :]: v
            for k, v in state.items()
            if k.startswith(prefix) and "pooler" not in k and "position_ids" not in k
        }
    )
    length = input_ids.shape[1]
    attention = (torch.arange(length)[None] < lengths[:, None]).long()
    t = bert(input_ids=input_ids, attention_mask=attention).last_hidden_state
    t = (t @ state["cap_proj.weight"].T + state["cap_proj.bias"]).transpose(0, 1)
    for layer in their_stack(state, "transformer_encoder_1", EMBED):
        t = layer(t, src_key_padding_mask=attention == 0)
    text_vectors = nn.functional.normalize(t.transpose(0, 1), dim=-1)

    scores = torch.zeros(batch, input_ids.shape[0])
    for i in range(batch):
        kept_regions = image_vectors[i, 1 : 1 + n_regions[i]]
        for j in range(input_ids.shape[0]):
            kept_words = text_vectors[j, 1 : lengths[j] - 2]  # no [CLS], last word piece, [SEP]
            matrix = torch.zeros(length, regions)  # zero padding, as their code
            matrix[: len(kept_words), : len(kept_regions)] = kept_words @ kept_regions.T
            scores[i, j] = matrix.max(dim=1).values.sum()
    return scores


def inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 5, FEATURES, generator=gen).relu()
    low = torch.rand(3, 5, 2, generator=gen) * 0.5
    boxes = torch.cat([low, low + torch.rand(3, 5, 2, generator=gen) * 0.5], dim=-1)
    n_regions = torch.tensor([5, 3, 1])
    lengths = torch.tensor([9, 6, 3, 4])
    input_ids = torch.randint(5, 20, (4, 9), generator=gen)
    input_ids[:, 0] = 2
    for row, n in enumerate(lengths):
        input_ids[row, n - 1] = 3
        input_ids[row, n:] = 0
    return features, boxes, n_regions, input_ids, lengths


@torch.no_grad()
def our_scores(model, features, boxes, n_regions, input_ids, lengths) -> torch.Tensor:
    region_mask = torch.arange(features.shape[1])[None] < n_regions[:, None]
    attention = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
    return model.score(
        model.encode_images(features, boxes, region_mask), model.encode_texts(input_ids, attention)
    )


def test_import_scores_like_their_forward(tmp_path):
    config = bert_config(heads=1)  # inferred from shapes: hidden 32 / 64 -> 1 head
    state = their_state(config)
    model, report = import_their_checkpoint(save_theirs(tmp_path / "theirs.pth", state))
    assert (
        model.config.padding == "reference"
        and model.config.exclude_last_word
        and model.config.shared_reasoning
    )
    assert report.unexpected == [] and report.epoch == 17
    assert report.mapped == len(model.state_dict())
    ignored = set(report.ignored)
    assert "img_txt_enc.txt_enc.word_embeddings.weight" in ignored
    assert "img_txt_enc.txt_enc.bert_model.embeddings.position_ids" in ignored
    assert {"img_txt_enc.txt_enc.map.weight", "img_txt_enc.img_enc.fc.bias"} <= ignored
    assert any("pooler" in name for name in ignored)
    assert report.inferred["region_feature_dim"] == FEATURES and report.inferred["visual_ff_dim"] == VISUAL_FF

    data = inputs()
    want = their_scores(state, config, *data)
    torch.testing.assert_close(our_scores(model, *data), want, atol=1e-5, rtol=1e-5)
    assert want.std() > 0.1  # the comparison is not between constants


def test_import_separate_reasoning_with_a_text_backbone_directory(tmp_path, tiny_tokenizer):
    config = bert_config(heads=2)
    backbone_dir = tmp_path / "bert"
    transformers.BertModel(config).save_pretrained(backbone_dir)
    tiny_tokenizer.save_pretrained(backbone_dir)
    state = their_state(config, shared=False, seed=1)
    model, report = import_their_checkpoint(
        save_theirs(tmp_path / "theirs.pth", state), text_backbone=backbone_dir
    )
    assert not model.config.shared_reasoning and model.tokenizer is not None
    assert model.textual.backbone.config.num_attention_heads == 2
    data = inputs(seed=1)
    torch.testing.assert_close(
        our_scores(model, *data), their_scores(state, config, *data, shared=False), atol=1e-5, rtol=1e-5
    )


def test_leftover_tensors_are_refused_unless_lenient(tmp_path):
    state = their_state(bert_config(heads=1))
    state["aggregator.weight"] = torch.ones(3)
    path = save_theirs(tmp_path / "theirs.pth", state)
    with pytest.raises(CheckpointError, match="no counterpart.*img_txt_enc.aggregator.weight"):
        import_their_checkpoint(path)
    _, report = import_their_checkpoint(path, strict=False)
    assert report.unexpected == ["img_txt_enc.aggregator.weight"]


def test_missing_tensor_is_named(tmp_path):
    state = their_state(bert_config(heads=1))
    del state["cap_proj.bias"]
    with pytest.raises(CheckpointError, match="textual.projection.bias"):
        import_their_checkpoint(save_theirs(tmp_path / "theirs.pth", state))


def test_files_that_are_not_theirs(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        import_their_checkpoint(tmp_path / "list.pth")
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not under 'img_txt_enc.'"):
        import_their_checkpoint(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        import_their_checkpoint(tmp_path / "junk.pth")


def test_mismatched_text_backbone_is_refused(tmp_path):
    other = bert_config(heads=2)
    other.vocab_size = 99
    transformers.BertModel(other).save_pretrained(tmp_path / "bert")
    path = save_theirs(tmp_path / "theirs.pth", their_state(bert_config(heads=1)))
    with pytest.raises(CheckpointError, match="vocab_size=99"):
        import_their_checkpoint(path, text_backbone=tmp_path / "bert")


def test_untrusted_pickles_warn_before_loading(tmp_path):
    path = save_theirs(
        tmp_path / "theirs.pth", their_state(bert_config(heads=1)), where=pathlib.PurePosixPath("/x")
    )
    with pytest.warns(UserWarning, match="Only import checkpoints you trust"):
        import_their_checkpoint(path)


def test_cli_writes_a_loadable_checkpoint(tmp_path):
    config = bert_config(heads=1)
    state = their_state(config, seed=2)
    path = save_theirs(tmp_path / "theirs.pth", state)
    result = CliRunner().invoke(cli, ["import-checkpoint", str(path), str(tmp_path / "ours"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["mapped"] > 0 and payload["unexpected"] == [] and len(payload["fingerprint"]) == 64
    model, pipeline, meta = load_checkpoint(tmp_path / "ours")
    assert pipeline.model.padding == "reference" and meta["extra"]["imported"]["epoch"] == 17
    data = inputs(seed=2)
    torch.testing.assert_close(
        our_scores(model, *data), their_scores(state, config, *data), atol=1e-5, rtol=1e-5
    )


def test_cli_reports_a_bad_file_cleanly(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "bad.pth")
    result = CliRunner().invoke(cli, ["import-checkpoint", str(tmp_path / "bad.pth"), str(tmp_path / "ours")])
    assert result.exit_code != 0 and "not under" in result.output
