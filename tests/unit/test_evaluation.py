from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.evaluation import (
    chance_recall,
    evaluate_scores,
    image_retrieval_ranks,
    recall_at_k,
    sentence_retrieval_ranks,
)


def brute_force_ranks(scores, owners):
    """Reference: a stable sort by descending score per query (ties: lower index first)."""
    n_images, n_captions = scores.shape
    t2i = np.empty(n_captions, dtype=np.int64)
    for c in range(n_captions):
        order = np.argsort(-scores[:, c], kind="stable")
        t2i[c] = int(np.flatnonzero(order == owners[c])[0])
    i2t = np.empty(n_images, dtype=np.int64)
    for i in range(n_images):
        order = np.argsort(-scores[i], kind="stable")
        i2t[i] = int(np.flatnonzero(owners[order] == i)[0])
    return i2t, t2i


def brute_force_recall(scores, owners, ks=(1, 5, 10)):
    i2t, t2i = brute_force_ranks(scores, owners)
    out = {f"i2t_r{k}": 100.0 * np.mean(i2t < k) for k in ks}
    out.update({f"t2i_r{k}": 100.0 * np.mean(t2i < k) for k in ks})
    out["rsum"] = sum(out.values())
    return out


def random_problem(seed, n_images=37, per_image=5, ties=False):
    rng = np.random.default_rng(seed)
    owners = np.repeat(np.arange(n_images), per_image)
    rng.shuffle(owners)  # captions need not be grouped by image
    if ties:
        scores = rng.integers(0, 4, size=(n_images, owners.size)).astype(np.float32)  # many exact ties
    else:
        scores = rng.standard_normal((n_images, owners.size)).astype(np.float32)
        scores[owners, np.arange(owners.size)] += 1.5  # better than chance
    return scores, owners


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_brute_force(seed, ties):
    scores, owners = random_problem(seed, ties=ties)
    i2t, t2i = brute_force_ranks(scores, owners)
    np.testing.assert_array_equal(sentence_retrieval_ranks(scores, owners), i2t)
    np.testing.assert_array_equal(image_retrieval_ranks(scores, owners), t2i)
    got = recall_at_k(scores, owners)
    for key, value in brute_force_recall(scores, owners).items():
        assert got[key] == pytest.approx(value)


def test_block_boundaries_do_not_matter(monkeypatch):
    import teran_es.evaluation as evaluation

    scores, owners = random_problem(5, n_images=23, ties=True)
    expected = recall_at_k(scores, owners)
    monkeypatch.setattr(evaluation, "_RANK_BLOCK", 7)
    assert recall_at_k(scores, owners) == expected


def test_ties_are_broken_by_index():
    # one caption per image, every score equal: image 0 / caption 0 win every tie
    scores = np.zeros((3, 3), dtype=np.float32)
    owners = np.array([0, 1, 2])
    assert image_retrieval_ranks(scores, owners).tolist() == [0, 1, 2]
    assert sentence_retrieval_ranks(scores, owners).tolist() == [0, 1, 2]
    # image 1 owns captions 1 and 2; a tie among its own captions ranks the first of them
    scores = np.array([[0, 0, 0], [1, 2, 2]], dtype=np.float32)
    assert sentence_retrieval_ranks(scores, np.array([0, 1, 1])).tolist() == [0, 0]


def test_perfect_and_keys_and_torch_input():
    owners = np.repeat(np.arange(4), 5)
    scores = torch.zeros(4, 20)
    scores[torch.from_numpy(owners), torch.arange(20)] = 1.0
    metrics = recall_at_k(scores, torch.from_numpy(owners))
    assert metrics["rsum"] == 600.0 and metrics["i2t_medr"] == 1.0 and metrics["t2i_medr"] == 1.0
    assert set(metrics) == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {
        "i2t_medr",
        "t2i_medr",
        "rsum",
    }


def test_one_k_protocol_averages_folds():
    owners = np.repeat(np.arange(2000), 5)  # grouped, as the COCO test split is
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((2000, 10000)).astype(np.float32)
    scores[owners, np.arange(10000)] += 2.0
    result = evaluate_scores(scores, owners, protocol="1k")
    folds = [
        recall_at_k(scores[f * 1000 : (f + 1) * 1000, f * 5000 : (f + 1) * 5000], owners[:5000])
        for f in (0, 1)
    ]
    for key in ("i2t_r1", "t2i_r10", "rsum"):
        assert result[key] == pytest.approx((folds[0][key] + folds[1][key]) / 2)
    assert result["folds"] == 2 and result["n_images"] == 2000
    whole = evaluate_scores(scores, owners, protocol="all")
    assert whole["t2i_r1"] < result["t2i_r1"]  # five times the distractors


def test_protocol_errors():
    scores, owners = random_problem(0, n_images=30)
    with pytest.raises(ValueError, match="multiple of 1000"):
        evaluate_scores(scores, owners, protocol="1k")
    with pytest.raises(ValueError, match="exactly 5000"):
        evaluate_scores(scores, owners, protocol="5k")
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_scores(scores, owners, protocol="2k")
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.full((2, 2), np.nan), np.array([0, 1]))
    with pytest.raises(ValueError, match="at least one caption"):
        recall_at_k(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="caption_to_image"):
        recall_at_k(np.zeros((3, 2)), np.array([0, 1, 2]))


def test_chance_matches_random_scores():
    chance = chance_recall(100, 500, 5)
    assert chance["t2i_r1"] == pytest.approx(1.0) and chance["t2i_r10"] == pytest.approx(10.0)
    assert chance["i2t_r1"] == pytest.approx(1.0)
    owners = np.repeat(np.arange(100), 5)
    rng = np.random.default_rng(0)
    measured = np.mean([recall_at_k(rng.standard_normal((100, 500)), owners)["i2t_r10"] for _ in range(20)])
    assert measured == pytest.approx(chance["i2t_r10"], abs=2.5)


def test_evaluate_model_matches_direct_scores(tiny_pipeline, synthetic_dataset):
    from teran_es.evaluation import evaluate_model
    from teran_es.features import open_image_set
    from teran_es.model.alignment import pairwise_scores
    from teran_es.model.teran import TERAN

    config = tiny_pipeline()
    torch.manual_seed(0)
    model = TERAN(config.model).eval()
    images = open_image_set(config.data, "test", limit=12)
    got = evaluate_model(model, images, batch_size=5, max_bytes=4096)
    # reference: everything in one batch, one block
    from teran_es.features import pad_regions

    batch = pad_regions([images.load(i) for i in range(len(images))])
    texts, owners = images.caption_index()
    with torch.no_grad():
        encoded = model.encode_images(
            *(torch.from_numpy(a) for a in (batch.features, batch.boxes, batch.mask))
        )
        tokens = model.tokenize(texts)
        words = model.encode_texts(tokens["input_ids"], tokens["attention_mask"])
        scores = pairwise_scores(encoded.regions, encoded.mask, words.words, words.mask)
    expected = recall_at_k(scores, owners)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)
    assert got["n_images"] == 12 and got["n_captions"] == 60
