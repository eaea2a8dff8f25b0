"""Ingest and search end to end with the Elasticsearch backend, against the embedded one."""

from __future__ import annotations

import pytest
import torch

from teran_es.features.columnar import ColumnarReader
from teran_es.index import IndexMismatchError
from teran_es.indexer import Ingestor
from teran_es.model.teran import build_model
from teran_es.searcher import Searcher
from teran_es.store import StoreMismatchError
from teran_es.workdir import QuantizerMismatchError

pytestmark = pytest.mark.elasticsearch

QUERIES = ["a red cat", "a green car and a blue bird", "there is a white horse", "boat", "a pink ball"]


@pytest.fixture
def pipelines(synthetic_dataset, tiny_pipeline, tmp_path, es_url, index_name, es_admin):
    """Two configs over the same data and model: one per backend, separate work dirs."""

    def make(backend: str):
        return tiny_pipeline(
            f"workdir={tmp_path / backend}",
            f"index.backend={backend}",
            f"index.name={index_name}",
            f"elasticsearch.url={es_url}",
            "elasticsearch.bulk_chunk_docs=25",
            "quantizer.pooling=max",
            "quantizer.gamma=16",
            "quantizer.doc_gamma=64",
            "quantizer.sample_size=2000",
            "ingest.device=cpu",
            "search.device=cpu",
        )

    torch.manual_seed(0)
    configs = {b: make(b) for b in ("embedded", "elasticsearch")}
    model = build_model(configs["embedded"].model).eval()
    records = list(ColumnarReader(synthetic_dataset.data_path).iter_records())
    yield configs, model, records
    for concrete in es_admin.indices.get(index=index_name, ignore_unavailable=True):  # the alias's indexes
        es_admin.indices.delete(index=concrete)


def run_ingest(config, model, records):
    with Ingestor(config, model=model) as ingestor:
        return ingestor.ingest(records, batch_size=32)


def test_both_backends_give_the_same_hits(pipelines):
    configs, model, records = pipelines
    for config in configs.values():
        report = run_ingest(config, model, records)
        assert report.total_in_index == len(records) and report.index_failed == 0
    searchers = {b: Searcher.open(c, model=model) for b, c in configs.items()}
    try:
        for text in QUERIES:
            for candidates in (20, len(records)):
                got = {b: s.search(text, k=10, candidates=candidates) for b, s in searchers.items()}
                emb, es = got["embedded"], got["elasticsearch"]
                assert emb.candidates == es.candidates
                assert [h.id for h in es.hits] == [h.id for h in emb.hits]
                assert [h.score for h in es.hits] == pytest.approx([h.score for h in emb.hits], rel=1e-6)
                assert [h.caption for h in es.hits] == [h.caption for h in emb.hits]
            exact = searchers["elasticsearch"].search(text, k=10, exact=True)
            full = searchers["elasticsearch"].search(text, k=10, candidates=len(records))
            assert [h.id for h in full.hits] == [h.id for h in exact.hits]
    finally:
        for s in searchers.values():
            s.close()


def test_reingest_into_elasticsearch_is_idempotent(pipelines):
    configs, model, records = pipelines
    config = configs["elasticsearch"]
    run_ingest(config, model, records[:40])
    again = run_ingest(config, model, records[:60])
    assert again.skipped_existing == 40 and again.encoded == 20
    assert again.total_in_index == 60


def test_searching_with_another_model_is_refused(pipelines):
    configs, model, records = pipelines
    config = configs["elasticsearch"]
    run_ingest(config, model, records[:20])
    torch.manual_seed(99)
    other = build_model(config.model).eval()
    with pytest.raises((StoreMismatchError, IndexMismatchError, QuantizerMismatchError)):
        Searcher.open(config, model=other)


def test_rebuild_from_the_store_switches_the_alias_and_answers_the_same(pipelines, es_admin):
    from teran_es.errors import ConfigError
    from teran_es.rebuild import rebuild_index

    configs, model, records = pipelines
    config = configs["elasticsearch"]
    ingested = run_ingest(config, model, records)
    name = config.resolved_index_name()
    assert sorted(es_admin.indices.get_alias(name=name)) == [f"{name}-000001"]

    def answers():
        searcher = Searcher.open(config, model=model)
        try:
            return [[(h.id, h.caption) for h in searcher.search(text, k=10, candidates=50).hits] for text in QUERIES]
        finally:
            searcher.close()

    before = answers()
    with Ingestor(config, model=model) as ingestor:
        seen = []
        report = rebuild_index(ingestor, chunk=50, progress=seen.append)
    assert report.switched and report.old_removed and report.failed == 0
    assert report.count == report.sent == ingested.total_in_index
    assert sum(seen) == len(records)
    assert sorted(es_admin.indices.get_alias(name=name)) == [f"{name}-000002"]
    assert not es_admin.indices.exists(index=f"{name}-000001")
    assert answers() == before  # same store, same first stage: the same hits, captions copied over

    with Ingestor(configs["embedded"], model=model) as ingestor, pytest.raises(ConfigError, match="no alias"):
        rebuild_index(ingestor)


def test_rerank_codes_in_elasticsearch_give_the_local_stores_hits(pipelines, es_admin):
    """store.location=elasticsearch: the documents carry the region codes, the search fetches them
    with the candidates and reranks from them: the same hits and scores as from the local store.
    An index without codes is refused for it, and a rebuild adds them."""
    import dataclasses

    from teran_es.rebuild import rebuild_index

    configs, model, records = pipelines
    local = configs["elasticsearch"]
    remote = dataclasses.replace(local, store=dataclasses.replace(local.store, location="elasticsearch"))
    run_ingest(local, model, records)  # an index without codes
    with pytest.raises(IndexMismatchError, match="carries no rerank codes.*--rebuild"):
        Searcher.open(remote, model=model)
    with Ingestor(remote, model=model) as ingestor:
        report = rebuild_index(ingestor)
    assert report.switched
    name = local.resolved_index_name()
    mapping = next(iter(es_admin.indices.get_mapping(index=name).values()))["mappings"]
    assert mapping["properties"]["rerank_codes"] == {"type": "binary", "doc_values": True}
    assert mapping["_meta"]["rerank_codes"] == local.store.dtype

    searchers = {"local": Searcher.open(local, model=model), "remote": Searcher.open(remote, model=model)}
    try:
        for text in QUERIES:
            got = {where: s.search(text, k=10, candidates=40) for where, s in searchers.items()}
            assert got["remote"].candidates == got["local"].candidates > 0
            assert [(h.id, h.score, h.caption) for h in got["remote"].hits] == \
                [(h.id, h.score, h.caption) for h in got["local"].hits]
    finally:
        for s in searchers.values():
            s.close()
    # a new ingest into it keeps carrying codes
    more = run_ingest(remote, model, records)
    assert more.index_failed == 0


def test_a_models_query_bank_ranks_alike_on_both_backends(pipelines):
    """A model with a query bank: the normalisers ingest keeps in the work directory are
    subtracted in the rerank whatever the backend, and wherever the rerank reads regions from
    (the local store, or the codes Elasticsearch returns with the candidates, which also serve
    to compute normalisers that the work directory lacks)."""
    import dataclasses

    from teran_es.model.bank import QueryBank
    from teran_es.rebuild import rebuild_index
    from teran_es.workdir import Artifacts

    configs, model, records = pipelines
    model.query_bank = QueryBank(("a blue boat", "a white cat", "a red car", "there is a horse", "green grass"), 5.0)
    for config in configs.values():
        report = run_ingest(config, model, records)
        assert report.normalised == len(records)
    local = configs["elasticsearch"]
    remote = dataclasses.replace(local, store=dataclasses.replace(local.store, location="elasticsearch"))
    with Ingestor(remote, model=model) as ingestor:
        assert rebuild_index(ingestor).switched
    Artifacts(remote).normalisers.unlink()  # the remote searcher computes them from the fetched codes
    plain = dataclasses.replace(local, search=dataclasses.replace(local.search, bank_norm=False))
    searchers = {name: Searcher.open(c, model=model) for name, c in
                 (("embedded", configs["embedded"]), ("local", local), ("remote", remote), ("plain", plain))}
    try:
        differ = 0
        for text in QUERIES:
            got = {name: s.search(text, k=10, candidates=len(records)) for name, s in searchers.items()}
            exact = searchers["embedded"].search(text, k=10, exact=True)
            assert all(got[n].bank_normalised for n in ("embedded", "local", "remote"))
            for name in ("embedded", "local", "remote"):
                assert [h.id for h in got[name].hits] == [h.id for h in exact.hits], name
                assert [h.score for h in got[name].hits] == pytest.approx([h.score for h in exact.hits], abs=1e-5)
            assert not got["plain"].bank_normalised
            differ += [h.id for h in got["plain"].hits] != [h.id for h in exact.hits]
        assert differ
    finally:
        for s in searchers.values():
            s.close()
