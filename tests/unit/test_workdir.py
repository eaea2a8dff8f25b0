"""The saved first stage against the pipeline file: query-side settings apply at search time,
document-side ones that differ are refused with a way out."""

from __future__ import annotations

import dataclasses

import pytest

from teran_es.config import load_config
from teran_es.features.synthetic import tiny_model_overrides
from teran_es.index import open_index
from teran_es.searcher import Searcher
from teran_es.workdir import QuantizerMismatchError, open_quantizer


@pytest.fixture(scope="module")
def ingested(synthetic_dataset, tmp_path_factory, ingest_tiny):
    """A cells and a scalar collection of 40 synthetic images; (configs, model)."""
    configs, model = {}, None
    for kind in ("cells", "scalar"):
        configs[kind] = load_config(
            None,
            [
                *tiny_model_overrides(synthetic_dataset.text_backbone),
                f"workdir={tmp_path_factory.mktemp(kind)}",
                f"quantizer.kind={kind}",
                "quantizer.gamma=16",
                "quantizer.doc_gamma=64",
                "quantizer.sample_size=2000",
                "ingest.device=cpu",
                "search.device=cpu",
            ],
        )
        model, _, _ = ingest_tiny(configs[kind])
    return configs, model


def with_settings(config, **changes):
    return dataclasses.replace(config, quantizer=dataclasses.replace(config.quantizer, **changes))


@pytest.mark.parametrize(
    ("kind", "change"),
    [("cells", {"nprobe": 4}), ("cells", {"query_levels": 2}), ("scalar", {"query_gamma": 2})],
)
def test_a_query_side_setting_of_the_pipeline_changes_the_query(ingested, kind, change):
    configs, model = ingested
    words = None
    queries = []
    for config in (configs[kind], with_settings(configs[kind], **change)):
        searcher = Searcher.open(config, model=model)
        try:
            if words is None:
                words = searcher.encode_query("a red cat and a blue car")
            queries.append(searcher.first_stage_query(*words))
            assert searcher.search("a red cat and a blue car", k=3).hits  # still searches
        finally:
            searcher.close()
    assert queries[0] != queries[1]


@pytest.mark.parametrize(
    ("kind", "change", "named"),
    [
        ("cells", {"cells": 32}, "quantizer.cells"),
        ("cells", {"codebooks": 3}, "quantizer.codebooks"),
        ("cells", {"kind": "scalar"}, "quantizer.kind"),
        ("scalar", {"gamma": 8}, "quantizer.gamma"),
        ("scalar", {"pooling": "sum"}, "quantizer.pooling"),
        ("scalar", {"kind": "cells"}, "quantizer.kind"),
    ],
)
def test_a_changed_document_side_setting_is_refused_and_says_how_to_rebuild(ingested, kind, change, named):
    configs, model = ingested
    changed = with_settings(configs[kind], **change)
    with pytest.raises(QuantizerMismatchError, match=rf"{named}.*only a new ingest can change that.*rebuild"):
        open_quantizer(changed)
    with pytest.raises(QuantizerMismatchError):
        Searcher.open(changed, model=model)


def test_an_automatic_cell_count_in_the_pipeline_accepts_the_fitted_one(ingested):
    configs, model = ingested
    saved = open_quantizer(configs["cells"])
    assert saved.config.cells > 0  # resolved at fit time
    assert open_quantizer(with_settings(configs["cells"], cells=0, coarse_cells=0)).fingerprint == saved.fingerprint


def test_a_reader_opens_the_embedded_index_while_a_writer_holds_it(ingested):
    configs, _ = ingested
    writer = open_index(configs["cells"], create=False)
    try:
        reader = open_index(configs["cells"], create=False, read_only=True)
        assert reader.count() == writer.count() == 40
        reader.close()
    finally:
        writer.close()


def test_a_query_that_probes_no_indexed_cell_gets_no_hits_and_a_message(ingested, monkeypatch):
    from teran_es.surrogate import MaxSumQuery

    configs, model = ingested
    searcher = Searcher.open(configs["cells"], model=model)
    try:
        # cells that no image holds, as when every probed cell of every word is empty
        monkeypatch.setattr(
            searcher, "first_stage_query", lambda words, mask: MaxSumQuery.of([{"m0c999999": 0.5}, {"m1c999999": 0.2}])
        )
        result = searcher.search("a red cat", k=5)
        assert result.hits == [] and result.candidates == 0
        assert "no indexed image holds" in result.message and "--exact" in result.message
        assert searcher.search("a red cat", k=5, exact=True).hits  # the exact scan still answers
    finally:
        searcher.close()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], None),
        (["index.backend=elasticsearch", "store.location=elasticsearch", "store.dtype=int8"], "int8"),
        (["index.backend=elasticsearch", "store.location=elasticsearch", "quantizer.kind=scalar",
          "quantizer.pooling=max"], "fp16"),
    ],
)
def test_where_the_rerank_codes_live(overrides, expected):
    from teran_es.workdir import rerank_codes_dtype

    assert rerank_codes_dtype(load_config(None, overrides)) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["store.location=cloud"], "choose one of local, elasticsearch"),
        (["store.location=elasticsearch"], "backend is local anyway"),
        (["index.backend=elasticsearch", "store.location=elasticsearch", "quantizer.kind=scalar",
          "quantizer.pooling=region"], "one document per image"),
    ],
)
def test_rerank_codes_where_they_cannot_live_are_refused(overrides, message):
    from teran_es.errors import ConfigError
    from teran_es.workdir import rerank_codes_dtype

    with pytest.raises(ConfigError, match=message):
        rerank_codes_dtype(load_config(None, overrides))
