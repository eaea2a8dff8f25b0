"""`teran-es ingest` and `teran-es search` through the CLI, bad rows included."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from teran_es.cli import cli
from teran_es.config import save_config
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model


@pytest.fixture
def setup(synthetic_dataset, tiny_pipeline, tmp_path):
    """A random tiny checkpoint, a pipeline file, and a Parquet source with two bad rows."""
    config = tiny_pipeline(
        f"workdir={tmp_path / 'work'}",
        f"checkpoint={tmp_path / 'ckpt'}",
        "quantizer.gamma=16",
        "quantizer.doc_gamma=64",
        "search.device=cpu",
        "search.candidates=30",
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model).eval(), tmp_path / "ckpt", config)
    pipeline = save_config(config, tmp_path / "pipeline.toml")

    table = pq.read_table(synthetic_dataset.data_path)
    table = table.filter(pa.compute.equal(table.column("split"), "test"))
    rows = table.to_pylist()[:30]
    rows[3]["features"] = [float("nan")] * len(rows[3]["features"])  # NaN features
    rows[7]["features"] = rows[7]["features"][:-5]  # wrong shape for its feature_dim
    source = tmp_path / "source.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), source)
    return pipeline, source, [rows[3]["image_id"], rows[7]["image_id"]], tmp_path


def invoke(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_bad_rows_are_skipped_with_reasons_and_the_rest_is_searchable(setup):
    pipeline, source, bad_ids, tmp_path = setup
    result = invoke("ingest", str(source), "--pipeline", str(pipeline), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped_bad"] == 2
    assert report["total_in_index"] == report["total_in_store"] == 28
    logged = [json.loads(line) for line in (tmp_path / "work" / "skipped.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in logged) == sorted(bad_ids)
    assert any("NaN" in x["reason"] for x in logged)

    again = json.loads(invoke("ingest", str(source), "--pipeline", str(pipeline), "--json").stdout)
    assert again["encoded"] == 0 and again["skipped_existing"] == 28 and again["total_in_index"] == 28

    found = invoke("search", "a", "red", "cat", "--pipeline", str(pipeline), "--k", "5", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 5 and not set(bad_ids) & {h["id"] for h in hits}
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)

    exact = json.loads(invoke("search", "a red cat", "--pipeline", str(pipeline), "--k", "5", "--exact", "--json").stdout)
    everything = invoke("search", "a red cat", "--pipeline", str(pipeline), "--k", "5", "--candidates", "28", "--json")
    assert [h["id"] for h in json.loads(everything.stdout)["hits"]] == [h["id"] for h in exact["hits"]]


def test_empty_query_is_a_usage_error(setup):
    pipeline, source, _, _ = setup
    invoke("ingest", str(source), "--pipeline", str(pipeline))
    result = invoke("search", "  ", "--pipeline", str(pipeline))
    assert result.exit_code == 2 and "empty" in result.output


def test_search_before_ingest_says_what_to_do(setup):
    pipeline, _, _, _ = setup
    result = invoke("search", "cat", "--pipeline", str(pipeline))
    assert result.exit_code == 1 and "teran-es ingest" in result.output
