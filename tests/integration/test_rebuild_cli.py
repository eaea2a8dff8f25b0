"""`teran-es ingest --rebuild` end to end through the CLI against a real Elasticsearch: the alias
moves to one new index with the new settings, nothing is lost, searches answer the same; a rebuild
that fails half way leaves the alias on the old index."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from teran_es.cli import cli
from teran_es.config import save_config
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model
from teran_es.store import FeatureStore

pytestmark = pytest.mark.elasticsearch

QUERIES = ["a red cat", "a green car and a blue bird", "boat"]


@pytest.fixture
def pipeline(synthetic_dataset, tiny_pipeline, tmp_path, es_url, index_name, es_admin):
    """A pipeline file on the Elasticsearch backend (a random tiny checkpoint) whose alias
    ``index_name`` holds the 40 test images, ingested through the CLI; every index of the alias's
    name is deleted at the end."""
    config = tiny_pipeline(
        f"workdir={tmp_path / 'work'}",
        f"checkpoint={tmp_path / 'ckpt'}",
        f"index.name={index_name}",
        f"elasticsearch.url={es_url}",
        "elasticsearch.bulk_chunk_docs=16",
        "quantizer.gamma=16",
        "quantizer.doc_gamma=64",
        "ingest.device=cpu",
        "search.device=cpu",
        "search.candidates=20",
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model).eval(), tmp_path / "ckpt", config)
    path = save_config(config, tmp_path / "pipeline.toml")
    ingested = invoke("ingest", str(synthetic_dataset.data_path), "--split", "test", "--pipeline", str(path),
                      "--backend", "elasticsearch", "--json")
    assert ingested.exit_code == 0, ingested.output
    report = json.loads(ingested.stdout)
    assert report["total_in_index"] == report["total_in_store"] == 40
    yield path
    for concrete in es_admin.indices.get(index=f"{index_name}*", ignore_unavailable=True):
        es_admin.indices.delete(index=concrete)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def hits_of(path, text: str) -> list[tuple[str, float]]:
    result = invoke("search", text, "--pipeline", str(path), "--backend", "elasticsearch", "--k", "10", "--json")
    assert result.exit_code == 0, result.output
    return [(h["id"], h["score"]) for h in json.loads(result.stdout)["hits"]]


def store_size(path) -> int:
    """Images in the pipeline's feature store (the work directory is next to the pipeline file)."""
    store = FeatureStore.open(path.parent / "work" / "store")
    try:
        return len(store)
    finally:
        store.close()


def concrete_indexes(es_admin, alias: str) -> list[str]:
    return sorted(es_admin.indices.get_alias(name=alias)) if es_admin.indices.exists_alias(name=alias) else []


def test_rebuild_moves_the_alias_to_one_new_index_with_the_new_settings(pipeline, es_admin, index_name):
    old, new = f"{index_name}-000001", f"{index_name}-000002"
    assert concrete_indexes(es_admin, index_name) == [old]
    before = {text: hits_of(pipeline, text) for text in QUERIES}
    assert all(len(hits) == 10 for hits in before.values())

    result = invoke("ingest", "--rebuild", "--pipeline", str(pipeline), "--backend", "elasticsearch",
                    "--set", "elasticsearch.shards=2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["alias"], report["old_index"], report["new_index"]) == (index_name, old, new)
    assert report["switched"] and report["old_removed"] and report["failed"] == 0

    assert concrete_indexes(es_admin, index_name) == [new]
    assert not es_admin.indices.exists(index=old)
    assert es_admin.count(index=index_name)["count"] == report["count"] == store_size(pipeline) == 40
    shards = es_admin.indices.get_settings(index=new)[new]["settings"]["index"]["number_of_shards"]
    assert int(shards) == 2
    after = {text: hits_of(pipeline, text) for text in QUERIES}
    for text in QUERIES:
        assert [i for i, _ in after[text]] == [i for i, _ in before[text]], text
        assert [s for _, s in after[text]] == pytest.approx([s for _, s in before[text]], rel=1e-6), text


def test_a_rebuild_whose_fill_fails_leaves_the_alias_on_the_old_index(pipeline, es_admin, index_name, monkeypatch):
    from teran_es.index.elastic import ElasticIndex

    old, new = f"{index_name}-000001", f"{index_name}-000002"
    before = hits_of(pipeline, QUERIES[0])
    real_add = ElasticIndex.add

    def add_then_fail(self, docs):
        real_add(self, docs)  # part of the new index is written before the failure
        raise OSError("no space left on device")

    monkeypatch.setattr(ElasticIndex, "add", add_then_fail)
    result = invoke("ingest", "--rebuild", "--pipeline", str(pipeline), "--backend", "elasticsearch",
                    "--set", "elasticsearch.shards=2")
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert f"still points at {old!r}" in result.output and "no space left on device" in result.output
    assert concrete_indexes(es_admin, index_name) == [old]
    assert not es_admin.indices.exists(index=new)
    assert es_admin.count(index=index_name)["count"] == 40
    assert hits_of(pipeline, QUERIES[0]) == before
