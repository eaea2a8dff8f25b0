"""Bad input through `teran-es ingest` and `teran-es search`: each case gives a clear error (exit
1, or 2 for a query the model cannot use) or a skipped item with its reason in skipped.jsonl,
and the rest of the work goes on. (Feature rows with NaN, Inf or wrong shapes and wrong column
types: test_ingest_search_cli.py.)"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from teran_es.cli import cli
from teran_es.config import save_config
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model
from teran_es.surrogate import fit_encoder, load_encoder


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def make_pipeline(tiny_pipeline, tmp_path, *overrides):
    """A pipeline file with a tiny random checkpoint of its model."""
    config = tiny_pipeline(
        f"workdir={tmp_path / 'work'}",
        f"checkpoint={tmp_path / 'checkpoint'}",
        "quantizer.gamma=16",
        "quantizer.doc_gamma=64",
        "quantizer.sample_size=2000",
        "ingest.device=cpu",
        "search.device=cpu",
        "search.candidates=30",
        *overrides,
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model).eval(), tmp_path / "checkpoint", config)
    return save_config(config, tmp_path / "pipeline.toml")


@pytest.fixture
def features_source(synthetic_dataset, tmp_path):
    """30 rows of region features (the synthetic test split) as a Parquet file."""
    table = pq.read_table(synthetic_dataset.data_path)
    table = table.filter(pa.compute.equal(table.column("split"), "test")).slice(0, 30)
    pq.write_table(table, tmp_path / "source.parquet")
    return tmp_path / "source.parquet"


# --------------------------------------------------------------------------- images


def bad_image_folder(root, png_header) -> tuple[list[str], dict[str, str]]:
    """A folder of good images with bad files mixed in: (good ids, bad id -> expected reason)."""
    rng = np.random.default_rng(0)
    (root / "more").mkdir(parents=True)
    good = []
    for i in range(8):
        name = f"more/good-{i}.jpg" if i % 2 else f"good-{i}.png"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / name)
        good.append(name)
    whole_png = (root / "good-0.png").read_bytes()
    whole_jpeg = (root / "more" / "good-1.jpg").read_bytes()
    (root / "zero-bytes.jpg").write_bytes(b"")
    (root / "truncated.png").write_bytes(whole_png[: len(whole_png) // 2])
    (root / "truncated.jpg").write_bytes(whole_jpeg[: len(whole_jpeg) // 2])
    (root / "not-an-image.jpg").write_text("a text file with an image's name\n")
    (root / "huge.png").write_bytes(png_header(9_000, 9_000))  # 81 Mpx, above our limit of 64
    (root / "bomb.png").write_bytes(png_header(30_000, 30_000))  # 900 Mpx: PIL's own guard
    (root / "gone.jpg").symlink_to(root / "deleted-long-ago.jpg")
    (root / "notes.txt").write_text("not an image name: never listed\n")
    bad = {
        "zero-bytes.jpg": "empty file",
        "truncated.png": "truncated or corrupt",
        "truncated.jpg": "truncated or corrupt",
        "not-an-image.jpg": "not an image",
        "huge.png": "9000x9000 pixels is more than",
        "bomb.png": "decompression bomb",
        "gone.jpg": "cannot read",
    }
    if os.geteuid() != 0:  # root reads it anyway: tests/unit/features/test_bad_images.py covers that case
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "unreadable.png")
        (root / "unreadable.png").chmod(0)
        bad["unreadable.png"] = "cannot read: Permission denied"
    return good, bad


def test_an_image_folder_with_bad_files_ingests_the_rest(tiny_pipeline, tmp_path, png_header):
    pipeline = make_pipeline(
        tiny_pipeline,
        tmp_path,
        "model.frontend=grid-cnn",
        "model.frontend_grid=2",
        "model.frontend_width=4",
        "model.image_size=16",
    )
    folder = tmp_path / "photos"
    good, bad = bad_image_folder(folder, png_header)
    result = invoke("ingest", folder, "--pipeline", pipeline, "--batch-size", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["seen"] == len(good) + len(bad) and report["skipped_bad"] == len(bad)
    assert report["total_in_store"] == report["total_in_index"] == len(good)
    skipped = {
        x["id"]: x["reason"] for x in map(json.loads, (tmp_path / "work" / "skipped.jsonl").read_text().splitlines())
    }
    assert skipped.keys() == bad.keys()
    for image_id, reason in bad.items():
        assert reason in skipped[image_id] and str(folder) in skipped[image_id]  # names the file, says why

    found = invoke("search", "a red cat", "--pipeline", pipeline, "--k", "20", "--json")
    assert found.exit_code == 0, found.output
    assert {h["id"] for h in json.loads(found.stdout)["hits"]} == set(good)


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "damage, message",
    [
        ({"format_version": 99}, "checkpoint format 99 is newer than this teran-es reads"),
        ({"format_version": None}, "no format_version; not a teran-es checkpoint"),
        ("truncated weights", "unreadable"),
    ],
)
def test_a_checkpoint_of_an_incompatible_version_is_refused_clearly(
    tiny_pipeline, tmp_path, features_source, damage, message
):
    pipeline = make_pipeline(tiny_pipeline, tmp_path)
    assert invoke("ingest", features_source, "--pipeline", pipeline).exit_code == 0
    checkpoint = tmp_path / "checkpoint"
    if isinstance(damage, dict):
        meta = json.loads((checkpoint / "meta.json").read_text())
        meta.update(damage)
        (checkpoint / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    else:
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    for command in (["ingest", features_source], ["search", "a red cat"]):
        result = invoke(*command, "--pipeline", pipeline)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- another quantizer


def test_an_index_built_with_another_quantizer_is_refused(tiny_pipeline, tmp_path, features_source):
    pipeline = make_pipeline(tiny_pipeline, tmp_path)
    assert invoke("ingest", features_source, "--pipeline", pipeline).exit_code == 0
    quantizer_file = tmp_path / "work" / "quantizer.npz"
    built_with = load_encoder(quantizer_file)
    rng = np.random.default_rng(5)
    # the same settings, other data: as if the first stage had been refitted after the index was built
    other = fit_encoder(rng.standard_normal((400, 4, built_with.dim)).astype(np.float32), built_with.config)
    other.save(quantizer_file)
    for command in (["search", "a red cat"], ["ingest", features_source]):
        result = invoke(*command, "--pipeline", pipeline)
        assert result.exit_code == 1, result.output
        assert f"quantizer_fingerprint={built_with.fingerprint}" in result.output
        assert other.fingerprint in result.output and "Re-ingest" in result.output


# --------------------------------------------------------------------------- queries


def test_queries_the_model_cannot_use_are_usage_errors_and_long_ones_are_truncated(
    tiny_pipeline, tmp_path, features_source
):
    pipeline = make_pipeline(tiny_pipeline, tmp_path)
    assert invoke("ingest", features_source, "--pipeline", pipeline).exit_code == 0
    for text, message in [("", "empty"), (" \t ", "empty"), ("日本語", "known to the text model")]:
        result = invoke("search", text, "--pipeline", pipeline)
        assert result.exit_code == 2 and message in result.output, result.output
    words = ("a red cat and a blue car " * 1700).split()[:10_000]
    result = invoke("search", *words, "--pipeline", pipeline, "--k", "3", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["hits"]) == 3
