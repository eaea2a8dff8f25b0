"""The TERAN encoders and model on tiny sizes."""

from __future__ import annotations

import pytest
import torch
import transformers

from teran_es.model.teran import TERAN, count_parameters
from teran_es.model.textual import default_text_backbone_path, load_text_backbone, word_mask
from teran_es.model.visual import box_geometry


def test_encode_images_shapes_norms_and_masks(make_model, images):
    model = make_model()
    features, boxes, mask = images(3, 6, 20)
    with torch.no_grad():
        out = model.encode_images(features, boxes, mask)
    assert out.regions.shape == (3, 6, 24) and out.global_vec.shape == (3, 24)
    assert torch.equal(out.mask, mask)
    torch.testing.assert_close(out.regions.norm(dim=-1), torch.ones(3, 6))
    torch.testing.assert_close(out.global_vec.norm(dim=-1), torch.ones(3))


def test_padded_regions_change_nothing(make_model, images):
    model = make_model()
    features, boxes, _ = images(1, 4, 20, seed=1)
    full = torch.ones(1, 4, dtype=torch.bool)
    padded_features = torch.cat([features, torch.randn(1, 3, 20) * 50], dim=1)
    padded_boxes = torch.cat([boxes, torch.rand(1, 3, 4)], dim=1)
    padded_mask = torch.tensor([[True] * 4 + [False] * 3])
    with torch.no_grad():
        alone = model.encode_images(features, boxes, full)
        padded = model.encode_images(padded_features, padded_boxes, padded_mask)
    torch.testing.assert_close(padded.regions[:, :4], alone.regions, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.global_vec, alone.global_vec, atol=1e-5, rtol=0)


def test_padded_words_change_nothing(make_model, sentences):
    model = make_model()
    batch = model.tokenize(sentences)
    with torch.no_grad():
        together = model.encode_texts(batch["input_ids"], batch["attention_mask"])
        for row, sentence in enumerate(sentences):
            alone_batch = model.tokenize([sentence])
            alone = model.encode_texts(alone_batch["input_ids"], alone_batch["attention_mask"])
            length = alone.words.shape[1]
            torch.testing.assert_close(together.words[row, :length], alone.words[0], atol=1e-5, rtol=0)
            assert torch.equal(together.mask[row, :length], alone.mask[0])
            assert not together.mask[row, length:].any()


def test_image_token_is_a_learned_constant(make_model, images):
    model = make_model()
    captured = []
    model.visual.box_mlp.register_forward_hook(lambda module, args, output: captured.append(output))
    features, boxes, mask = images(3, 5, 20, seed=2)
    with torch.no_grad():
        model.encode_images(features, boxes, mask)
        constant = model.visual.box_mlp(torch.zeros(20 + 5))
    torch.testing.assert_close(captured[0][:, 0], constant.expand(3, -1))


def test_box_geometry_appends_the_area():
    boxes = torch.tensor([[[0.1, 0.2, 0.5, 0.7]]])
    torch.testing.assert_close(box_geometry(boxes), torch.tensor([[[0.1, 0.2, 0.5, 0.7, 0.4 * 0.5]]]))


def test_word_mask_excludes_special_tokens_and_optionally_the_last_word():
    attention = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    assert word_mask(attention).tolist() == [
        [False, True, True, True, False, False],
        [False, True, False, False, False, False],
    ]
    assert word_mask(attention, exclude_last_word=True).tolist() == [
        [False, True, True, False, False, False],
        [False, False, False, False, False, False],
    ]


def test_tokenize_truncates_and_pads_right(make_model):
    model = make_model(max_words=5)
    batch = model.tokenize(["a dog runs on the grass .", "a man"])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert batch["input_ids"][0, 0] == model.tokenizer.cls_token_id
    assert batch["input_ids"][0, -1] == model.tokenizer.sep_token_id


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"box_encoding": "project-and-sum"},
        {"shared_reasoning": False},
        {"text_extra_layers": 1},
        {"reasoning_layers": 0},
        {"score": "symm", "padding": "reference", "exclude_last_word": True},
    ],
)
def test_forward_scores_and_every_parameter_learns(make_model, images, sentences, overrides):
    model = make_model(**overrides).train()
    features, boxes, mask = images(4, 5, 20, seed=3)
    batch = model.tokenize(sentences)
    scores, image_out, text_out = model(features, boxes, mask, **batch, return_embeddings=True)
    assert scores.shape == (4, 4)
    torch.testing.assert_close(scores, model.score(image_out, text_out))
    (scores.sum() + image_out.global_vec.sum() + text_out.global_vec.sum()).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_shared_and_separate_reasoning_layouts(make_model):
    shared, separate = make_model(), make_model(shared_reasoning=False)
    assert any(name.startswith("reasoning.") for name, _ in shared.named_parameters())
    names = [name for name, _ in separate.named_parameters()]
    assert any(n.startswith("image_reasoning.") for n in names) and any(
        n.startswith("text_reasoning.") for n in names
    )
    assert count_parameters(separate)["reasoning"] == 2 * count_parameters(shared)["reasoning"]


def test_parameter_counts_add_up(make_model):
    counts = count_parameters(make_model())
    assert (
        counts["total"]
        == counts["visual"] + counts["text_backbone"] + counts["text_head"] + counts["reasoning"]
    )


def test_backbone_from_a_local_directory_is_truncated(
    tmp_path, tiny_bert_config, tiny_tokenizer, config_factory
):
    transformers.BertModel(tiny_bert_config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model = TERAN(config_factory(text_backbone=str(tmp_path), text_layers=2))
    assert len(model.textual.backbone.encoder.layer) == 2
    assert model.textual.backbone.pooler is None
    assert model.tokenize(["a dog"])["input_ids"].tolist() == [[2, 5, 6, 3]]


def test_missing_backbone_directory_is_a_clear_error(tmp_path, config_factory):
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        TERAN(config_factory(text_backbone=str(tmp_path / "nowhere")))


def test_too_many_text_layers_is_refused(tiny_bert_config, config_factory):
    with pytest.raises(ValueError, match="text_layers=9"):
        TERAN(config_factory(text_layers=9), text_backbone=transformers.BertModel(tiny_bert_config))


def test_bad_score_kind_is_refused(tiny_bert_config, config_factory):
    with pytest.raises(ValueError, match="score kind"):
        TERAN(config_factory(score="MaxMax"), text_backbone=transformers.BertModel(tiny_bert_config))


def test_no_tokenizer_means_a_clear_error(tiny_bert_config, config_factory):
    model = TERAN(config_factory(), text_backbone=transformers.BertModel(tiny_bert_config))
    with pytest.raises(RuntimeError, match="no tokenizer"):
        model.tokenize(["a dog"])


def test_default_backbone_is_the_bundled_minilm(config_factory):
    path = default_text_backbone_path()
    assert (path / "config.json").is_file()
    backbone, tokenizer = load_text_backbone(None)
    assert backbone.config.hidden_size == 384 and backbone.config.num_hidden_layers == 6
    model = TERAN(
        config_factory(text_layers=6, text_backbone=""), text_backbone=backbone, tokenizer=tokenizer
    ).eval()
    with torch.no_grad():
        out = model.encode_sentences(["a dog runs on the grass."])
    assert out.words.shape[-1] == 24 and out.mask.sum() == 7  # a dog runs on the grass .


def test_wrong_input_shapes_are_clear_errors(make_model, images):
    model = make_model()
    features, boxes, mask = images(2, 3, 20)
    with pytest.raises(ValueError, match=r"features must be \[B, R, 20\]"):
        model.encode_images(features[..., :10], boxes, mask)
    with pytest.raises(ValueError, match="boxes"):
        model.encode_images(features, boxes[..., :2], mask)
