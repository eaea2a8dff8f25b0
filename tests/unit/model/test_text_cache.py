"""The frozen text backbone's states, computed once, stand in for running it per batch."""

from __future__ import annotations

import pytest
import torch

from teran_es.model.text_cache import TextStateCache, tokenize_in_batches

CAPTIONS = ["a dog runs on the grass .", "cats", "the red car on the street with a ball .", "a man", "ball"]


def test_cached_batch_equals_the_backbone_on_the_padded_batch(make_model):
    model = make_model(text_trainable_layers=0)
    batches = tokenize_in_batches(CAPTIONS, model.tokenize, batch_size=2)
    assert [len(b["input_ids"]) for b in batches] == [2, 2, 1]
    cache = TextStateCache.build(batches, model.textual.backbone_states, pad_id=model.tokenizer.pad_token_id)
    assert len(cache) == len(CAPTIONS)
    for picked in ([0, 1, 2], [3, 4], [4, 2, 2, 0]):
        cached = cache.batch(picked)
        tokens = model.tokenize([CAPTIONS[p] for p in picked])
        assert torch.equal(cached["input_ids"], tokens["input_ids"])
        assert torch.equal(cached["attention_mask"], tokens["attention_mask"])
        with torch.no_grad():
            direct = model.encode_texts(tokens["input_ids"], tokens["attention_mask"])
            looked_up = model.encode_text_states(cached["text_states"], cached["attention_mask"])
        assert torch.equal(direct.mask, looked_up.mask)
        real = tokens["attention_mask"].bool()
        assert torch.allclose(direct.words[real], looked_up.words[real], atol=1e-5)
        assert torch.allclose(direct.global_vec, looked_up.global_vec, atol=1e-5)
        assert not cached["text_states"][~real].any()  # padding is zero, and never read


def test_an_empty_batch_is_refused(make_model):
    model = make_model(text_trainable_layers=0)
    cache = TextStateCache.build(tokenize_in_batches(CAPTIONS[:2], model.tokenize), model.textual.backbone_states)
    with pytest.raises(ValueError, match="no captions"):
        cache.batch([])
    with pytest.raises(ValueError, match="2 token sequences but 1"):
        TextStateCache(cache.ids, cache.states[:1])
