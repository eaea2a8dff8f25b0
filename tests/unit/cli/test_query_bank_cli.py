"""`teran-es query-bank`: a bank written into a checkpoint from a captions file, then used by
`ingest` and `search` through the CLI; its removal; and its refusals."""

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
from teran_es.model.bank import BANK_FILE, read_query_bank
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def checkpoint(synthetic_dataset, tiny_pipeline, tmp_path):
    """(checkpoint dir, pipeline file, Parquet source of 30 test images, captions file)."""
    config = tiny_pipeline(f"workdir={tmp_path / 'work'}", f"checkpoint={tmp_path / 'ckpt'}", "quantizer.gamma=16",
                           "quantizer.doc_gamma=64", "ingest.device=cpu", "search.device=cpu")
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model).eval(), tmp_path / "ckpt", config)
    pipeline = save_config(config, tmp_path / "pipeline.toml")
    table = pq.read_table(synthetic_dataset.data_path)
    source = tmp_path / "source.parquet"
    pq.write_table(table.filter(pa.compute.equal(table.column("split"), "test")).slice(0, 30), source)
    captions = tmp_path / "captions.txt"
    train = table.filter(pa.compute.equal(table.column("split"), "train")).column("captions").to_pylist()
    captions.write_text("\n".join(c for caps in train for c in caps) + "\n\n  \n", encoding="utf-8")
    return tmp_path / "ckpt", pipeline, source, captions


def test_a_bank_from_a_captions_file_is_used_by_ingest_and_search(checkpoint):
    ckpt, pipeline, source, captions = checkpoint
    distinct = {line.strip() for line in captions.read_text().splitlines() if line.strip()}
    result = invoke("query-bank", ckpt, "--captions", captions, "--size", 12, "--seed", 3, "--beta", 2.5, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    bank = read_query_bank(ckpt)
    assert payload["texts"] == len(bank.texts) == 12 and payload["beta"] == bank.beta == 2.5
    assert set(bank.texts) <= distinct and payload["fingerprint"] == bank.fingerprint
    everything = invoke("query-bank", ckpt, "--captions", captions, "--size", 0, "--json")
    assert json.loads(everything.output)["texts"] == len(distinct)

    ingested = invoke("ingest", source, "--pipeline", pipeline, "--json")
    assert ingested.exit_code == 0, ingested.output
    assert json.loads(ingested.output)["normalised"] == 30
    searched = invoke("search", "a red cat", "--pipeline", pipeline, "--exact", "--json")
    assert searched.exit_code == 0, searched.output
    assert json.loads(searched.output)["bank_normalised"] is True
    plain = invoke("search", "a red cat", "--pipeline", pipeline, "--exact", "--json", "--set", "search.bank_norm=false")
    assert json.loads(plain.output)["bank_normalised"] is False

    removed = invoke("query-bank", ckpt, "--remove")
    assert removed.exit_code == 0, removed.output
    assert not (ckpt / BANK_FILE).exists()
    searched = invoke("search", "a red cat", "--pipeline", pipeline, "--exact", "--json")
    assert json.loads(searched.output)["bank_normalised"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--beta", 0), "beta must be a finite number > 0"),
        (("--beta", "nan"), "beta must be a finite number > 0"),
        ((), "not the emoji collection: give its training captions with --captions"),
        (("--remove", "--captions", "CAPTIONS"), "--remove takes no captions"),
        (("--data", "x", "--captions", "CAPTIONS"), "not both"),
    ],
)
def test_bad_requests_are_refused_in_one_line(checkpoint, args, message):
    ckpt, _, _, captions = checkpoint
    args = [captions if a == "CAPTIONS" else a for a in args]
    if not any(a == captions for a in args) and "--beta" in args:
        args = [*args, "--captions", captions]
    result = invoke("query-bank", ckpt, *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message in result.output
    assert not (ckpt / BANK_FILE).exists()


def test_a_directory_that_is_no_checkpoint_is_refused(tmp_path):
    (tmp_path / "captions.txt").write_text("a red cat\n")
    result = invoke("query-bank", tmp_path, "--captions", tmp_path / "captions.txt")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not (tmp_path / BANK_FILE).exists()
