"""Ingest and search end to end on the embedded backend, with a tiny random TERAN.

The fidelity property: with every image a candidate, recall + exact rerank returns exactly
the exhaustive scan's ranking (ids and scores), because the rerank *is* the scan's code.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from teran_es.features.columnar import ColumnarReader
from teran_es.index import IndexMismatchError
from teran_es.indexer import Ingestor
from teran_es.model.teran import build_model
from teran_es.searcher import QueryError, Searcher
from teran_es.store import StoreMismatchError
from teran_es.workdir import QuantizerMismatchError

QUERIES = ["a red cat", "a green car and a blue bird", "there is a white horse", "boat"]


@pytest.fixture
def collection(synthetic_dataset, tiny_pipeline, tmp_path):
    """A pipeline config with a work dir, a tiny random model, and the records to ingest."""

    def make(pooling: str = "sum", **quantizer):
        """``pooling`` "cells": the cell first stage; else the scalar one with that pooling."""
        first_stage = ["quantizer.kind=cells"] if pooling == "cells" else ["quantizer.kind=scalar", f"quantizer.pooling={pooling}"]
        config = tiny_pipeline(
            f"workdir={tmp_path / ('work-' + pooling)}",
            *first_stage,
            "quantizer.gamma=16",
            "quantizer.doc_gamma=64",
            "quantizer.sample_size=2000",
            "ingest.device=cpu",
            "search.device=cpu",
            "search.batch_size=16",
            *[f"quantizer.{k}={v}" for k, v in quantizer.items()],
        )
        torch.manual_seed(0)
        model = build_model(config.model).eval()
        records = list(ColumnarReader(synthetic_dataset.data_path).iter_records())
        return config, model, records

    return make


def ingest(config, model, records):
    with Ingestor(config, model=model) as ingestor:
        return ingestor.ingest(records, batch_size=32)


@pytest.mark.parametrize("pooling", ["cells", "sum", "max", "region"])
def test_all_candidates_reproduce_the_exact_scan(collection, pooling):
    # cells: every cell probed with its exact weight, so that an image matches unless all its
    # regions sit in each word's floor cell
    probe_all = {"cells": 64, "nprobe": 64, "probe_beam": 0, "query_levels": 0} if pooling == "cells" else {}
    config, model, records = collection(pooling, **probe_all)
    report = ingest(config, model, records)
    n = len(records)
    assert report.encoded == n and report.stored == n and report.quantizer_fitted
    searcher = Searcher.open(config, model=model)
    try:
        for text in QUERIES:
            exact = searcher.search(text, k=10, exact=True)
            assert exact.candidates == n
            piped = searcher.search(text, k=10, candidates=n)
            # Every image shares a term with the query here, so every image was reranked.
            assert piped.candidates == n
            assert [h.id for h in piped.hits] == [h.id for h in exact.hits]
            assert [h.score for h in piped.hits] == [h.score for h in exact.hits]
            # Scores are the model's own MrSw, not something the index made up.
            assert all(h.path is not None or h.caption is not None for h in piped.hits)
    finally:
        searcher.close()


def test_exact_scores_equal_the_model_score(collection):
    config, model, records = collection("cells")
    config.store.dtype = "fp32"
    ingest(config, model, records[:40])
    searcher = Searcher.open(config, model=model)
    try:
        result = searcher.search(QUERIES[0], k=5, exact=True)
        best = {r.image_id: r for r in records[:40]}[result.hits[0].id]
        with torch.inference_mode():
            img = model.encode_images(
                torch.from_numpy(best.features)[None], torch.from_numpy(best.boxes)[None],
                torch.ones(1, best.n_regions, dtype=torch.bool),
            )
            txt = model.encode_sentences([QUERIES[0]])
            expected = float(model.score(img, txt)[0, 0])
        assert result.hits[0].score == pytest.approx(expected, rel=1e-5)
    finally:
        searcher.close()


def test_reingest_is_idempotent_and_resumes(collection):
    config, model, records = collection("sum")
    first = ingest(config, model, records[:50])
    assert first.total_in_index == 50
    again = ingest(config, model, records[:50])
    assert (again.encoded, again.skipped_existing, again.total_in_index) == (0, 50, 50)
    # A crash after the store write but before the index write: the store has images the index lacks.
    from teran_es.index import open_index

    index = open_index(config)
    index.delete([r.image_id for r in records[40:50]])
    index.close()
    resumed = ingest(config, model, records)
    assert resumed.indexed_from_store == 10
    assert resumed.encoded == len(records) - 50
    assert resumed.total_in_index == resumed.total_in_store == len(records)


def test_an_ingestor_block_that_raises_still_commits_and_releases(collection):
    config, model, records = collection("sum")
    with pytest.raises(RuntimeError, match="after the ingest"):
        with Ingestor(config, model=model) as ingestor:
            ingestor.ingest(records[:30], batch_size=32)
            raise RuntimeError("after the ingest")
    # closed on the way out: the next writer gets the index, and finds every image committed
    again = ingest(config, model, records[:30])
    assert (again.encoded, again.skipped_existing, again.total_in_index) == (0, 30, 30)


def test_search_refuses_a_collection_built_by_another_model(collection):
    config, model, records = collection("sum")
    ingest(config, model, records[:30])
    torch.manual_seed(123)
    other = build_model(config.model).eval()
    with pytest.raises((StoreMismatchError, IndexMismatchError, QuantizerMismatchError)):
        Searcher.open(config, model=other)


@pytest.mark.parametrize("text", ["", "   \t", "日本語"])
def test_unusable_queries_give_a_clear_error(collection, text):
    config, model, records = collection("sum")
    ingest(config, model, records[:20])
    searcher = Searcher.open(config, model=model)
    try:
        with pytest.raises(QueryError):
            searcher.search(text)
    finally:
        searcher.close()


def test_artifacts_are_written_next_to_the_index(collection):
    config, model, records = collection("max")
    ingest(config, model, records[:20])
    root = config.resolved_workdir()
    assert (root / "quantizer.npz").is_file() and (root / "config.toml").is_file()
    manifest = json.loads((root / "index" / "manifest.json").read_text())
    assert manifest["meta"]["quantizer_fingerprint"] and manifest["meta"]["model_fingerprint"]


def test_the_written_config_names_the_model_that_ingested(collection):
    """A checkpoint's model overrides the pipeline's [model] (the demo pairs the OpenMoji
    pipeline with another model): the work directory's config.toml records the model used."""
    import dataclasses

    from teran_es.config import load_config

    config, model, records = collection("max")
    pipeline_model = dataclasses.replace(config.model, visual_ff_dim=config.model.visual_ff_dim + 8)
    config = dataclasses.replace(config, model=pipeline_model)
    ingest(config, model, records[:20])
    written = load_config(config.resolved_workdir() / "config.toml")
    assert written.model == model.config != pipeline_model


def test_evaluation_index_names_are_safe_for_elasticsearch():
    from teran_es.search_evaluation import evaluate_index_name

    assert evaluate_index_name("/tmp/runs/My Run.2") == "teran-eval-my-run-2"
    assert evaluate_index_name("/tmp/__") == "teran-eval-default"
    assert re.fullmatch(r"[a-z0-9_\-]+", evaluate_index_name("/x/ÄÖ ü*?"))
