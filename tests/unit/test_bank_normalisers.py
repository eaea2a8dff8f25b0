"""Images' query-bank normalisers from their regions (teran_es/bank_normalisers.py), against
the definition computed by hand: MrSw of each bank text, then log-mean-exp at beta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.bank_normalisers import BankNormalisers, encode_bank, image_normalisers
from teran_es.model.bank import QueryBank
from teran_es.model.teran import build_model
from teran_es.store import FeatureStore

BANK = ("a red cat", "a green car and a blue bird", "boat", "there is a white horse")


@pytest.fixture
def model(tiny_pipeline):
    torch.manual_seed(0)
    return build_model(tiny_pipeline().model).eval()


def by_definition(regions, mask, words, word_mask, beta):
    """float64 [N]: for each image, (1/beta) log mean_b exp(beta * sum_w max_r <w, r>)."""
    out = []
    for n in range(regions.shape[0]):
        r = regions[n][mask[n]].double()
        scores = []
        for b in range(words.shape[0]):
            w = words[b][word_mask[b]].double()
            scores.append(float((w @ r.T).max(dim=1).values.sum()))
        scores = np.array(scores)
        out.append(np.log(np.mean(np.exp(beta * scores))) / beta)
    return np.array(out)


def test_the_bank_is_encoded_in_its_own_order(model):
    from teran_es.evaluation import encode_captions

    texts = ("a green car and a blue bird and a red cat", "boat", "a red cat", "there is a white horse")
    words, mask = encode_bank(model, QueryBank(texts, 5.0))
    for i, text in enumerate(texts):
        alone, alone_mask = encode_captions(model, [text])
        width = alone.shape[1]
        assert mask[i, :width].tolist() == alone_mask[0].tolist() and not mask[i, width:].any()
        torch.testing.assert_close(words[i, :width][alone_mask[0]], alone[0][alone_mask[0]], atol=1e-5, rtol=0)


@pytest.mark.parametrize("beta", [0.5, 5.0, 40.0])
def test_normalisers_follow_the_definition(model, beta):
    bank = QueryBank(BANK, beta)
    words, word_mask = encode_bank(model, bank)
    assert words.shape[0] == len(BANK)
    rng = torch.Generator().manual_seed(1)
    regions = torch.nn.functional.normalize(torch.randn(6, 5, model.config.embed_dim, generator=rng), dim=-1)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[2, 3:] = False
    mask[4, 1:] = False
    got = image_normalisers(model, words, word_mask, regions, mask, beta)
    np.testing.assert_allclose(got, by_definition(regions, mask, words, word_mask, beta), rtol=0, atol=1e-5)


def test_ensure_computes_only_what_is_missing(model, tmp_path):
    dim = model.config.embed_dim
    rng = torch.Generator().manual_seed(2)
    ids = [f"img{i}" for i in range(7)]
    regions = torch.nn.functional.normalize(torch.randn(7, 3, dim, generator=rng), dim=-1)
    store = FeatureStore.open(tmp_path / "store", create=True, dim=dim, dtype="fp32", model_fingerprint="m")
    store.add(ids, [r.numpy() for r in regions])
    bank = QueryBank(BANK, 5.0)
    normalisers = BankNormalisers(model, bank, {"img0": 123.0})
    assert normalisers.ensure(ids[:4] + ["img1"], store, batch_size=2) == 3
    assert normalisers.values["img0"] == 123.0  # kept, not recomputed
    assert normalisers.ensure(ids, store, batch_size=2) == 3
    assert normalisers.ensure(ids, store) == 0
    words, word_mask = encode_bank(model, bank)
    expected = image_normalisers(model, words, word_mask, regions[1:], torch.ones(6, 3, dtype=torch.bool), 5.0)
    np.testing.assert_allclose([normalisers.values[i] for i in ids[1:]], expected, rtol=0, atol=1e-6)
    store.close()
