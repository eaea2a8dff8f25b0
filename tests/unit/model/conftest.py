"""Tiny models, tokenizers and inputs for the model tests (no network, no big weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from teran_es.config import ModelConfig

WORDS = [
    "a",
    "dog",
    "cat",
    "man",
    "red",
    "car",
    "runs",
    "on",
    "the",
    "grass",
    "street",
    ".",
    "##s",
    "with",
    "ball",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTENCES = ["a dog runs on the grass .", "a man", "the red car on the street with a ball .", "cats"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    return transformers.BertTokenizer(vocab=vocab)


@pytest.fixture(scope="session")
def tiny_bert_config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
    )


def tiny_config(**overrides) -> ModelConfig:
    base = ModelConfig(
        region_feature_dim=20,
        visual_layers=2,
        visual_heads=2,
        visual_ff_dim=40,
        text_layers=2,
        max_words=16,
        embed_dim=24,
        reasoning_layers=2,
        reasoning_heads=2,
        reasoning_ff_dim=48,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def make_model(tiny_bert_config, tiny_tokenizer):
    """Factory: a seeded tiny TERAN in eval mode; keyword arguments override ModelConfig fields."""
    from teran_es.model.teran import build_model

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return build_model(tiny_config(**overrides), tiny_bert_config, tiny_tokenizer).eval()

    return make


def random_images(batch: int, regions: int, feature_dim: int, seed: int = 0, min_regions: int = 1):
    """(features [B,R,F], boxes [B,R,4] with x1<x2, y1<y2 in [0,1], region_mask bool [B,R])."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, regions, feature_dim, generator=gen).relu()
    corners = torch.rand(batch, regions, 2, 2, generator=gen)
    low, high = corners.min(dim=2).values, corners.max(dim=2).values
    boxes = torch.cat([low, high], dim=-1)
    counts = torch.randint(min_regions, regions + 1, (batch,), generator=gen)
    mask = torch.arange(regions)[None, :] < counts[:, None]
    return features, boxes, mask


@pytest.fixture
def images():
    return random_images


@pytest.fixture
def config_factory():
    """Factory: the tiny ModelConfig with fields overridden."""
    return tiny_config


@pytest.fixture
def sentences() -> list[str]:
    return list(SENTENCES)
