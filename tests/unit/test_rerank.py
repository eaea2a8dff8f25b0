"""The exact rerank (teran_es/rerank.py) against a brute-force MrSw in numpy: one query or many,
over chosen candidates or the whole store, ties by id, k beyond the candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teran_es.rerank import ScoredImage, rerank_exact, rerank_exact_many
from teran_es.store import FeatureStore

DIM = 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_force(regions: dict[str, np.ndarray], words: np.ndarray, ids, k: int) -> list[tuple[str, float]]:
    """MrSw by its definition in float64 (each valid word's best region, summed) for the ``ids``
    given, sorted by score descending, then id ascending; the first ``k``."""
    scored = {
        i: float((words.astype(np.float64) @ regions[i].astype(np.float64).T).max(axis=1).sum())
        for i in dict.fromkeys(ids)
    }
    return sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:k]


def assert_matches(got: list[ScoredImage], expected: list[tuple[str, float]]) -> None:
    assert [s.id for s in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s.score for s in got], [s for _, s in expected], rtol=0, atol=1e-5)


def query_tensors(queries: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries of different word counts, padded: ``(float32 [Q, max W, D], bool [Q, max W])``."""
    width = max(len(q) for q in queries)
    words = torch.zeros(len(queries), width, DIM)
    mask = torch.zeros(len(queries), width, dtype=torch.bool)
    for n, q in enumerate(queries):
        words[n, : len(q)] = torch.from_numpy(q)
        mask[n, : len(q)] = True
    return words, mask


@pytest.fixture
def collection(tmp_path):
    """An fp32 store of 40 images with 1 to 5 regions each, written in an order that is not the
    ids' order (so storage order and id order differ), and the regions by id."""
    rng = np.random.default_rng(0)
    ids = [f"img{k:02d}" for k in rng.permutation(40)]
    regions = {i: _unit(rng.standard_normal((int(rng.integers(1, 6)), DIM))) for i in ids}
    store = FeatureStore.open(tmp_path / "store", create=True, dim=DIM, dtype="fp32", model_fingerprint="m", shard_size=16)
    store.add(ids, [regions[i] for i in ids])
    store.flush()
    yield store, regions
    store.close()


@pytest.fixture
def queries():
    rng = np.random.default_rng(1)
    return [_unit(rng.standard_normal((n, DIM))) for n in (3, 1, 5)]


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_rerank_exact_equals_brute_force(collection, queries, batch_size):
    store, regions = collection
    candidates = ["img05", "img31", "img12", "img05", "img00", "img27", "img39", "img18"]  # one repeated
    words, mask = query_tensors(queries)
    got = rerank_exact(words, mask, store, candidates, 4, device="cpu", batch_size=batch_size)
    assert len(got) == len(queries)
    for q, query in enumerate(queries):
        assert_matches(got[q], brute_force(regions, query, candidates, 4))


def test_no_candidates_means_the_whole_store(collection, queries):
    store, regions = collection
    words, mask = query_tensors(queries)
    got = rerank_exact(words, mask, store, None, 10, device="cpu", batch_size=16)
    for q, query in enumerate(queries):
        assert_matches(got[q], brute_force(regions, query, regions, 10))


def test_k_beyond_the_candidates_returns_them_all(collection, queries):
    store, regions = collection
    candidates = ["img07", "img03", "img22"]
    words, mask = query_tensors(queries[:1])
    got = rerank_exact(words, mask, store, candidates, 50, device="cpu")[0]
    assert_matches(got, brute_force(regions, queries[0], candidates, 50))
    assert len(got) == 3
    assert rerank_exact(words, mask, store, [], 5, device="cpu") == [[]]


def test_equal_scores_are_ordered_by_id(tmp_path):
    """Images with the same regions score the same: they come out by id, not by storage order,
    and the k-th place goes to the lower id, across batches too."""
    rng = np.random.default_rng(2)
    shared = _unit(rng.standard_normal((3, DIM)))
    ids = ["d", "b", "e", "a", "c"]  # stored in this order
    store = FeatureStore.open(tmp_path / "ties", create=True, dim=DIM, dtype="fp32", model_fingerprint="m")
    with store:
        store.add(ids, [shared] * len(ids))
        store.add(["z"], [-shared])  # scores lower than all of them
        words, mask = query_tensors([shared[:2]])
        for batch_size in (1, 2, 256):
            got = rerank_exact(words, mask, store, None, 3, device="cpu", batch_size=batch_size)[0]
            assert [s.id for s in got] == ["a", "b", "c"]
            assert len({s.score for s in got}) == 1
        everything = rerank_exact(words, mask, store, ["z", "e", "d"], 10, device="cpu")[0]
        assert [s.id for s in everything] == ["d", "e", "z"]
        many = rerank_exact_many(words, mask, store, [["e", "c", "d", "z"]], 2, device="cpu")[0]
        assert [s.id for s in many] == ["c", "d"]


@pytest.mark.parametrize("batch_size", [2, 256])
def test_rerank_exact_many_is_rerank_exact_per_query(collection, queries, batch_size):
    store, regions = collection
    lists = [
        ["img05", "img31", "img12", "img00", "img27", "img05"],
        ["img31", "img12", "img33"],  # overlaps the first
        [f"img{k:02d}" for k in range(0, 40, 3)],
    ]
    words, mask = query_tensors(queries)
    got = rerank_exact_many(words, mask, store, lists, 4, device="cpu", batch_size=batch_size)
    assert len(got) == len(queries)
    for q, query in enumerate(queries):
        alone = rerank_exact(words[q : q + 1], mask[q : q + 1], store, lists[q], 4, device="cpu", batch_size=batch_size)[0]
        assert got[q] == alone  # same ids, same float scores
        assert_matches(got[q], brute_force(regions, query, lists[q], 4))


def test_rerank_exact_many_with_empty_and_short_lists(collection, queries):
    store, regions = collection
    words, mask = query_tensors(queries[:2])
    got = rerank_exact_many(words, mask, store, [[], ["img09", "img10"]], 10, device="cpu")
    assert got[0] == []
    assert_matches(got[1], brute_force(regions, queries[1], ["img09", "img10"], 10))
    assert rerank_exact_many(words, mask, store, [[], []], 3, device="cpu") == [[], []]


def test_rerank_exact_many_wants_one_list_per_query(collection, queries):
    store, _ = collection
    words, mask = query_tensors(queries)
    with pytest.raises(ValueError, match="3 queries but 2 candidate lists"):
        rerank_exact_many(words, mask, store, [["img01"], ["img02"]], 5, device="cpu")


def test_unknown_candidates_raise_key_error(collection, queries):
    store, _ = collection
    words, mask = query_tensors(queries[:1])
    with pytest.raises(KeyError):
        rerank_exact(words, mask, store, ["img01", "nope"], 5, device="cpu")
    with pytest.raises(KeyError):
        rerank_exact_many(words, mask, store, [["img01", "nope"]], 5, device="cpu")


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_offsets_are_subtracted_before_ranking(collection, queries, batch_size):
    store, regions = collection
    rng = np.random.default_rng(5)
    # offsets as large as the scores' spread, so that they reorder the ranking
    offsets = {i: float(rng.uniform(-2, 2)) for i in regions}
    words, mask = query_tensors(queries)
    got = rerank_exact(words, mask, store, None, 8, device="cpu", batch_size=batch_size, offsets=offsets)
    plain = rerank_exact(words, mask, store, None, 8, device="cpu", batch_size=batch_size)
    for q, query in enumerate(queries):
        scored = {i: s - offsets[i] for i, s in brute_force(regions, query, list(regions), len(regions))}
        expected = sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:8]
        assert_matches(got[q], expected)
    assert [[s.id for s in r] for r in got] != [[s.id for s in r] for r in plain]
    many = rerank_exact_many(words, mask, store, [list(regions)] * len(queries), 8, device="cpu",
                             batch_size=batch_size, offsets=offsets)
    assert many == got


def test_a_candidate_without_an_offset_is_an_error(collection, queries):
    store, regions = collection
    words, mask = query_tensors(queries)
    offsets = {i: 0.0 for i in regions if i != "img05"}
    with pytest.raises(KeyError):
        rerank_exact(words, mask, store, ["img05", "img06"], 2, device="cpu", offsets=offsets)
