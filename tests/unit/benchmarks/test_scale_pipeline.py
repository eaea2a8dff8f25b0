"""The scale benchmark's measuring helpers on a tiny collection: rerank paths agree, recall is
tie-tolerant, builds are reused, and a whole setting measures end to end (embedded backend)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import scale_collection as sc  # noqa: E402
import scale_pipeline as sp  # noqa: E402


@pytest.fixture
def collection(tmp_path) -> sc.ScaleCollection:
    rng = np.random.default_rng(0)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    real = sc.RealEmbeddings(
        unit(rng.standard_normal((40, 4, 16))),
        [f"q{i}" for i in range(6)],
        [unit(rng.standard_normal((n, 16))) for n in (2, 3, 1, 4, 2, 3)],
    )
    built, _ = sc.build_collection(
        real, sc.RegionRecipe(n_images=300), tmp_path / "c", 6, model_fingerprint="t" * 64, progress=False
    )
    return built


def test_rerank_of_everything_is_the_exact_list(collection):
    store, info = sp.build_store(collection, "fp16", "t" * 64, fresh=False, progress=False)
    with store:
        everything = list(range(collection.n_images))
        for q in range(collection.n_queries):
            found = sp.rerank_one(collection, store, q, everything)
            assert sp.tie_tolerant_recall(collection, q, found, 10) == 1.0
            assert sp.tie_tolerant_recall(collection, q, found, 100) == 1.0
        assert info["fresh"] and info["images"] == collection.n_images
    again, info = sp.build_store(collection, "fp16", "t" * 64, fresh=False, progress=False)
    again.close()
    assert not info["fresh"]


def test_batched_rerank_equals_single(collection):
    store, _ = sp.build_store(collection, "int8", "t" * 64, fresh=False, progress=False)
    rng = np.random.default_rng(1)
    found = [
        sorted(rng.choice(collection.n_images, size=150, replace=False).tolist())
        for _ in range(collection.n_queries)
    ]
    with store:
        single = [sp.rerank_one(collection, store, q, found[q]) for q in range(collection.n_queries)]
        batched = sp.rerank_batch(collection, store, list(range(collection.n_queries)), found)
    for a, b in zip(single, batched, strict=True):
        assert a[:10] == b[:10]


def test_recall_counts_ties_and_misses(collection):
    exact = collection.exact_top[0].tolist()
    assert sp.tie_tolerant_recall(collection, 0, exact[:10], 10) == 1.0
    assert sp.tie_tolerant_recall(collection, 0, exact[:5] + exact[50:55], 10) == 0.5
    assert sp.tie_tolerant_recall(collection, 0, [], 10) == 0.0


def test_a_setting_measures_end_to_end_and_is_reused(collection):
    setting = sp.IndexSetting(kind="scalar", pooling="sum", gamma=8, doc_gamma=32, q_factor=50)
    store, _ = sp.build_store(collection, "fp16", "t" * 64, fresh=False, progress=False)
    encoder, fit = sp.fit_quantizer(collection, setting)
    index, ingest = sp.open_embedded(collection, setting, encoder, fresh=False, progress=False)
    with store:
        rows = sp.measure_setting(
            collection, index, encoder, {"fp16": store}, [20, 300], 4, 1, "t", progress=False
        )
    index.close()
    assert ingest["fresh"] and ingest["documents"] == collection.n_images and ingest["bytes"] > 0
    assert [r["candidates"] for r in rows] == [20, 300]
    for row in rows:
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["single"]["total"]["n"] == collection.n_queries
        assert row["batched"]["same_candidates_as_single"] == 1.0
        assert row["batched"]["batched_recall_at_10"] == row["recall_at_10"]
    # every image matched and reranked: the exact lists come back
    assert rows[1]["reranked_mean"] == collection.n_images and rows[1]["recall_at_10"] == 1.0
    again, ingest = sp.open_embedded(collection, setting, encoder, fresh=False, progress=False)
    again.close()
    assert not ingest["fresh"]
    _, fit_again = sp.fit_quantizer(collection, setting)
    assert fit["fresh"] and not fit_again["fresh"]


def test_a_cells_setting_measures_every_nprobe_on_one_index(collection):
    setting = sp.IndexSetting(kind="cells", cells=64, codebooks=2, sample_size=600)
    store, _ = sp.build_store(collection, "fp16", "t" * 64, fresh=False, progress=False)
    encoder, fit = sp.fit_quantizer(collection, setting)
    index, ingest = sp.open_embedded(collection, setting, encoder, fresh=False, progress=False)
    with store:
        rows = sp.measure_setting(
            collection, index, encoder, {"fp16": store}, [20, 300], 4, 1, "t", progress=False, nprobes=[4, 32]
        )
    index.close()
    assert fit["fresh"] and ingest["documents"] == collection.n_images
    assert [(r["nprobe"], r["candidates"]) for r in rows] == [(4, 20), (4, 300), (32, 20), (32, 300)]
    for row in rows:
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["batched"]["same_candidates_as_single"] == 1.0
    for small, large in ((rows[0], rows[1]), (rows[2], rows[3])):
        # more candidates of the same ranking: a superset, and the rerank is exact
        assert large["recall_at_10"] >= small["recall_at_10"] and large["reranked_mean"] >= small["reranked_mean"]
