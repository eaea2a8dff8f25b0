"""`teran-es reproduce` end to end on a few images in the authors' layout, with a tiny random
checkpoint saved as theirs are (or trained here), against the paper's pipeline files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from teran_es.cli import cli

FEATURES = 24


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def f30k(authors_data):
    return authors_data("f30k", feature_dim=FEATURES, test_images=8, seed=3)


@pytest.fixture(scope="module")
def coco(authors_data):
    return authors_data("coco", feature_dim=FEATURES, test_images=6, seed=4)


def test_f30k_with_their_checkpoint_prints_ours_next_to_the_papers(
    f30k, authors_checkpoint, authors_text_backbone, tmp_path
):
    their = authors_checkpoint(FEATURES)
    common = ["--text-backbone", str(authors_text_backbone), "--device", "cpu", "--no-progress"]
    # the file gives no Flickr30k figure (none was checked); a user adds the paper's with --set
    common += ["--set", "expected_metrics.all_t2i_r1=56.5"]
    result = run("reproduce", "f30k", "--data", str(f30k), "--checkpoint", str(their), *common, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["n_images"], payload["n_captions"]) == (8, 40)
    assert payload["model"]["how"] == "imported"
    assert any("embed_dim" in note for note in payload["model"]["notes"])  # a tiny model, not the paper's
    rows = {row["metric"]: row for row in payload["comparison"]}
    assert list(rows) == ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"]
    assert rows["t2i_r1"]["paper"] == 56.5 and rows["t2i_r1"]["difference"] == pytest.approx(
        rows["t2i_r1"]["ours"] - 56.5, abs=1e-3
    )
    for metric, row in rows.items():
        assert row["ours"] == payload["protocols"]["all"][metric]
        if metric != "t2i_r1":  # ours without the paper's: no difference is made up
            assert row["paper"] is None and row["difference"] is None

    # the same numbers as importing the file and evaluating it with the existing verbs
    ours = tmp_path / "imported"
    assert run("import-checkpoint", str(their), str(ours), "--text-backbone", str(authors_text_backbone)).exit_code == 0
    evaluated = run("evaluate", str(ours), "--data", str(f30k), "--format", "bottom-up", "--device", "cpu", "--no-progress", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    separately = json.loads(evaluated.stdout)
    for metric in rows:
        assert separately[metric] == pytest.approx(payload["protocols"]["all"][metric])

    text = run("reproduce", "f30k", "--data", str(f30k), "--checkpoint", str(their), *common)
    assert text.exit_code == 0, text.output
    assert "image retrieval R@1" in text.output and "paper figures: Messina et al." in text.output
    line = next(x for x in text.output.splitlines() if x.strip().startswith("image retrieval R@1"))
    assert line.split()[-2:] == ["56.50", f"{rows['t2i_r1']['difference']:.2f}"]


def test_coco_protocols_that_do_not_fit_are_said_so_and_the_pipeline_is_searched(
    coco, authors_checkpoint, authors_text_backbone, tmp_path
):
    their = authors_checkpoint(FEATURES)
    args = ["reproduce", "coco", "--data", str(coco), "--checkpoint", str(their)]
    args += ["--text-backbone", str(authors_text_backbone), "--device", "cpu", "--no-progress"]
    result = run(*args, "--candidates", "3", "--candidates", "50", "--workdir", str(tmp_path / "work"), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["protocols"]["1k"] == {"skipped": "needs a multiple of 1,000 images; the split has 6"}
    assert payload["protocols"]["5k"] == {"skipped": "needs exactly 5,000 images; the split has 6"}
    assert payload["protocols"]["all"]["n_images"] == 6
    # the paper's figures stay in the table, with nothing measured against them
    # (the file gives the 1K R@1 figures only; 5K has none, so it has no rows)
    assert {row["protocol"] for row in payload["comparison"]} == {"1k"}
    assert {row["metric"] for row in payload["comparison"]} == {"i2t_r1", "t2i_r1"}
    assert all(row["ours"] is None and row["difference"] is None for row in payload["comparison"])
    searched = payload["search_pipeline"]
    assert searched["queries"] == 30 and searched["ingest"]["images"] == 6
    # 50 candidates hold all 6 images: the rerank returns the exact scan's ranking
    assert searched["candidates"]["50"]["fidelity_at_10"] == 1.0
    assert searched["candidates"]["50"]["t2i_r1"] == searched["exact"]["t2i_r1"]

    text = run(*args)
    assert "protocol 1K (mean over folds of 1,000 images): not run, needs a multiple" in text.output
    assert "the paper gives no figures for this protocol" in text.output


def test_trains_when_no_checkpoint_is_given(f30k, authors_text_backbone, tmp_path):
    tiny = [
        f"model.region_feature_dim={FEATURES}",
        "model.visual_layers=1",
        "model.visual_heads=2",
        "model.visual_ff_dim=32",
        "model.text_layers=2",
        "model.embed_dim=16",
        "model.reasoning_layers=1",
        "model.reasoning_heads=2",
        "model.reasoning_ff_dim=32",
        "train.epochs=1",
        "train.batch_size=4",
        "train.val_images=2",
        "train.warmup_iters=0",
        "train.device=cpu",
        f"train.output_dir={tmp_path / 'train'}",
    ]
    sets = [x for item in tiny for x in ("--set", item)]
    result = run(
        "reproduce", "f30k", "--data", str(f30k), "--text-backbone", str(authors_text_backbone),
        "--device", "cpu", "--no-progress", "--json", *sets,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"]["how"] == "trained" and payload["model"]["epochs"] == 1
    assert payload["model"]["checkpoint"] == str(tmp_path / "train" / "best")
    assert 0 <= payload["protocols"]["all"]["rsum"] <= 600


def test_clear_errors(f30k, coco, authors_checkpoint, tmp_path):
    missing = run("reproduce", "f30k", "--data", str(f30k), "--checkpoint", str(authors_checkpoint(FEATURES)))
    assert missing.exit_code == 1
    assert "model.text_backbone 'bert-base-uncased' is not a local model directory" in missing.output
    wrong = run("reproduce", "coco", "--data", str(f30k), "--pipeline", "pipelines/f30k-teran.toml")
    assert wrong.exit_code == 1 and "is the pipeline of 'f30k', not of 'coco'" in wrong.output
    bad_set = run("reproduce", "coco", "--data", str(coco), "--set", "expected_metrics.1k_t2i_r1=120")
    assert bad_set.exit_code == 2 and "outside [0, 100]" in bad_set.output
