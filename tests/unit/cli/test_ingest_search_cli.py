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
        "ingest.device=cpu",
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


def rows_of(source) -> tuple[list[dict], pa.Schema]:
    table = pq.read_table(source)
    return table.to_pylist(), table.schema


def with_column_type(schema: pa.Schema, name: str, kind: pa.DataType) -> pa.Schema:
    return schema.set(schema.get_field_index(name), pa.field(name, kind))


def test_infinite_values_are_skipped_with_reasons(setup):
    pipeline, source, _, tmp_path = setup
    rows, schema = rows_of(source)
    rows[2]["features"] = [float("inf")] + rows[2]["features"][1:]
    rows[5]["boxes"] = [float("-inf")] + rows[5]["boxes"][1:]
    infinite = tmp_path / "infinite.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), infinite)
    result = invoke("ingest", str(infinite), "--pipeline", str(pipeline), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped_bad"] == 4 and report["total_in_index"] == 26  # with the NaN and short rows
    logged = {x["id"]: x["reason"] for x in map(json.loads, (tmp_path / "work" / "skipped.jsonl").read_text().splitlines())}
    assert "features contain NaN or Inf" in logged[rows[2]["image_id"]]
    assert "boxes contain NaN or Inf" in logged[rows[5]["image_id"]]


def test_other_numeric_types_are_converted_and_values_beyond_float32_skipped(setup):
    pipeline, source, bad_ids, tmp_path = setup
    rows, schema = rows_of(source)
    rows = [r for r in rows if r["image_id"] not in bad_ids]
    rows[4]["features"] = [1e300] + rows[4]["features"][1:]  # finite as float64, Inf as float32
    wide = with_column_type(with_column_type(schema, "features", pa.list_(pa.float64())), "n_regions", pa.int64())
    doubles = tmp_path / "doubles.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=wide), doubles)
    result = invoke("ingest", str(doubles), "--pipeline", str(pipeline), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped_bad"] == 1 and report["total_in_index"] == report["total_in_store"] == len(rows) - 1
    logged = [json.loads(line) for line in (tmp_path / "work" / "skipped.jsonl").read_text().splitlines()]
    assert [x["id"] for x in logged] == [rows[4]["image_id"]] and "NaN or Inf" in logged[0]["reason"]


@pytest.mark.parametrize(
    "column, kind, convert, message",
    [
        ("features", pa.list_(pa.string()), lambda v: [str(x) for x in v], "column 'features' is list<element: string>"),
        ("features", pa.float32(), lambda v: v[0], "column 'features' is float"),
        ("boxes", pa.list_(pa.bool_()), lambda v: [x > 0.5 for x in v], "column 'boxes' is list<element: bool>"),
        ("n_regions", pa.string(), str, "column 'n_regions' is string, expected an integer"),
    ],
)
def test_a_feature_file_with_wrong_column_types_is_refused_clearly(setup, column, kind, convert, message):
    pipeline, source, _, tmp_path = setup
    rows, schema = rows_of(source)
    bad = tmp_path / "wrong-types.parquet"
    converted = [{**r, column: convert(r[column])} for r in rows]
    pq.write_table(pa.Table.from_pylist(converted, schema=with_column_type(schema, column, kind)), bad)
    result = invoke("ingest", str(bad), "--pipeline", str(pipeline))
    assert result.exit_code == 1, result.output
    assert message in result.output and str(bad) in result.output and "Traceback" not in result.output
