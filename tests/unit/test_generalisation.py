"""The generalisation protocols' recall: group ranks against a brute-force reference, and the
queries and galleries of the three protocols on a small table."""

from __future__ import annotations

import numpy as np
import pytest

from teran_es.evaluation import image_retrieval_ranks
from teran_es.generalisation import (
    MISS,
    bank_texts,
    build_protocols,
    concept_queries,
    group_ranks,
    list_ranks,
    recalls,
    recalls_by_kind,
)


def brute_force_group_ranks(scores, query_groups, item_groups):
    ranks = []
    for q, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))  # ties: lower index first
        ranks.append(next(pos for pos, i in enumerate(order) if item_groups[i] == query_groups[q]))
    return np.asarray(ranks)


@pytest.mark.parametrize("seed", range(5))
def test_group_ranks_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    items, queries = 40, 300
    item_groups = rng.integers(0, 12, items)
    query_groups = rng.choice(item_groups, queries)
    scores = rng.integers(0, 6, (queries, items)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(group_ranks(scores, query_groups, item_groups),
                                  brute_force_group_ranks(scores, query_groups, item_groups))


def test_one_item_per_group_is_image_retrieval():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(7, 20))  # images x captions
    owners = rng.integers(0, 7, 20)
    np.testing.assert_array_equal(group_ranks(scores.T, owners, np.arange(7)), image_retrieval_ranks(scores, owners))
    with pytest.raises(ValueError, match="no relevant"):
        group_ranks(scores.T, np.full(20, 9), np.arange(7))


def test_list_ranks_and_recalls():
    ranks = list_ranks([[3, 1, 2], [5, 5, 5], [2]], [1, 2, 2])
    assert ranks.tolist() == [1, MISS, 0]
    assert recalls(ranks, (1, 2, 10)) == {"r1": 33.33, "r2": 66.67, "r10": 66.67}


def row(source, code, split, captions, concept_split=None):
    return {"image_id": f"{source}-{code}", "concept": code, "split": split, "captions": captions,
            "concept_split": concept_split or split}


def test_protocols_on_a_small_table():
    rows = [
        row("openmoji", "A", "test", ["an a", "letter a"]),
        row("fluent", "A", "test", ["an a", "letter a"]),
        row("openmoji", "B", "train", ["a b"]),
        row("twemoji", "A", "heldout-artist", ["an a", "letter a"], "test"),
        row("twemoji", "B", "heldout-artist", ["a b"], "train"),
    ]
    protocols = build_protocols(rows)
    unseen = protocols["unseen"]
    assert unseen.texts == ["an a", "letter a"] and unseen.gallery.tolist() == [0, 1, 2, 3, 4]
    assert unseen.image_queries.tolist() == [0, 1, 3] and unseen.text_pool == ["an a", "letter a", "a b"]
    held = protocols["heldout"]
    assert held.gallery.tolist() == [3, 4] and held.texts == ["an a", "letter a", "a b"]
    assert held.gallery_groups.tolist() == [0, 1] and held.text_groups.tolist() == [0, 0, 1]
    om = protocols["openmoji"]
    assert om.gallery.tolist() == [0, 2] and om.texts == ["an a", "letter a"] and om.text_groups.tolist() == [0, 0]


def test_recalls_by_kind_against_counting():
    rng = np.random.default_rng(3)
    ranks = rng.integers(0, 20, 200)
    kinds = rng.choice(["flag", "single", "skin tone"], 200)
    by_kind = recalls_by_kind(ranks, kinds)
    assert list(by_kind) == ["flag", "skin tone", "single"]  # CONCEPT_KINDS order, absent kinds left out
    for kind, values in by_kind.items():
        mine = [r for r, k in zip(ranks, kinds, strict=True) if k == kind]
        assert values["queries"] == len(mine)
        assert values["r10"] == round(100 * sum(r < 10 for r in mine) / len(mine), 2)
    assert sum(v["queries"] for v in by_kind.values()) == 200
    with pytest.raises(ValueError, match="3 ranks but 2 kinds"):
        recalls_by_kind(np.array([0, 1, 2]), ["flag", "single"])


def test_each_text_query_carries_its_concepts_kind():
    rows = [
        row("openmoji", "1F1EE-1F1F9", "test", ["flag of italy"]),
        row("openmoji", "1F44B-1F3FD", "test", ["waving hand: medium skin tone"]),
        row("fluent", "1F44B-1F3FD", "test", ["waving hand: medium skin tone", "a brown waving hand"]),
        row("openmoji", "1F600", "train", ["grinning face"]),
        row("twemoji", "1F600", "heldout-artist", ["grinning face"], "train"),
    ]
    protocols = build_protocols(rows)
    unseen = protocols["unseen"]
    assert dict(zip(unseen.texts, unseen.text_kinds, strict=True)) == {
        "flag of italy": "flag", "waving hand: medium skin tone": "skin tone", "a brown waving hand": "skin tone"}
    assert protocols["heldout"].text_kinds == ["single"]
    om = protocols["openmoji"]
    assert len(om.text_kinds) == len(om.texts) and om.text_kinds == ["flag", "skin tone"]


def test_concept_queries_and_the_bank():
    rows = [
        row("openmoji", "A", "test", ["an a", "letter a"]),
        row("openmoji", "B", "train", ["a b", "letter b"]),
        row("fluent", "B", "train", ["a b", "letter b"]),
        row("openmoji", "C", "val", ["a c"]),
        row("openmoji", "D", "train", ["a d"]),
        row("twemoji", "E", "heldout-artist", ["an e"], "train"),  # a trained concept, but only the held-out artist drew it
    ]
    unseen = build_protocols(rows)["unseen"]
    texts, groups = concept_queries(rows, "val")
    assert texts == ["a c"] and unseen.gallery_groups[3] == groups[0]  # row 3 is concept C's only drawing
    texts, groups = concept_queries(rows, "train")
    assert texts == ["a b", "letter b", "a d", "an e"]
    relevant = [[i for i in unseen.gallery if unseen.gallery_groups[i] == g] for g in groups]
    assert relevant == [[1, 2], [1, 2], [4], [5]]
    sample, sample_groups = concept_queries(rows, "train", limit=2, seed=3)
    assert len(sample) == 2 and set(sample) <= set(texts) and sample == concept_queries(rows, "train", 2, 3)[0]
    assert all(groups[texts.index(t)] == g for t, g in zip(sample, sample_groups, strict=True))
    # the bank: captions of rows trained on (split "train"); these val, test and held-out captions are not theirs
    assert bank_texts(rows) == ["a b", "a d", "letter b"]
    assert len(bank_texts(rows, limit=2)) == 2 and set(bank_texts(rows, limit=2, seed=1)) <= {"a b", "a d", "letter b"}
    assert bank_texts(rows, limit=2, seed=1) == bank_texts(rows, limit=2, seed=1)
