"""End to end through the command line: make-synthetic -> train -> evaluate --json."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from teran_es.cli import cli

TINY_PIPELINE = Path(__file__).resolve().parents[3] / "pipelines" / "synthetic-tiny.toml"


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_make_synthetic_train_evaluate(tmp_path):
    data = tmp_path / "data"
    made = json.loads(
        invoke(
            "make-synthetic",
            str(data),
            "--images",
            "160",
            "--val-images",
            "40",
            "--test-images",
            "50",
            "--seed",
            "3",
            "--json",
        ).stdout
    )
    assert made["images"] == {"train": 160, "val": 40, "test": 50}
    run = tmp_path / "run"
    trained = json.loads(
        invoke(
            "train",
            "--pipeline",
            str(TINY_PIPELINE),
            "--set",
            f"model.text_backbone={made['text_backbone']}",
            "--set",
            f"data.path={data}",
            "--set",
            f"train.output_dir={run}",
            "--set",
            "train.epochs=3",
            "--set",
            "train.warmup_iters=10",
            "--set",
            "train.device=cpu",
            "--no-progress",
            "--json",
        ).stdout
    )
    assert trained["epochs_completed"] == 3 and (run / "best" / "meta.json").is_file()
    result = invoke(
        "evaluate", str(run / "best"), "--data", str(data), "--split", "test", "--device", "cpu", "--json"
    )
    metrics = json.loads(result.stdout)
    assert metrics["n_images"] == 50 and metrics["n_captions"] == 250 and metrics["protocol"] == "all"
    # chance with 50 images: R@1 2%, R@5 10%, R@10 20% (both directions, 5 captions each)
    for direction in ("i2t", "t2i"):
        assert metrics[f"{direction}_r1"] > 5 * metrics["chance"][f"{direction}_r1"]
        assert metrics[f"{direction}_r5"] > 2.5 * metrics["chance"][f"{direction}_r5"]
        assert metrics[f"{direction}_r10"] > 2.5 * metrics["chance"][f"{direction}_r10"]
    human = invoke("evaluate", str(run / "best"), "--split", "test", "--device", "cpu", "--no-progress")
    assert "image retrieval" in human.stdout and "RSUM" in human.stdout


def test_errors_are_clean(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["train", "--set", f"data.path={tmp_path / 'nothing.parquet'}", "--no-progress"]
    )
    assert result.exit_code != 0 and "nothing.parquet" in result.output
    result = runner.invoke(cli, ["train", "--set", "train.nonsense=1"])
    assert result.exit_code == 2 and "nonsense" in result.output
    result = runner.invoke(cli, ["evaluate", str(tmp_path), "--data", str(tmp_path)])
    assert result.exit_code != 0 and str(tmp_path) in result.output
