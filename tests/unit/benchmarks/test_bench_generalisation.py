"""benchmarks/bench_generalisation.py on a tiny multi-source collection: both models side by
side, through the library, in the layout of benchmarks/results/generalisation.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_generalisation  # noqa: E402


def test_a_small_run_writes_both_models_side_by_side(tiny_emoji, tmp_path, monkeypatch):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_generalisation, "build_emoji_collection", lambda progress: tiny_emoji["collection"])
    checkpoint = str(tiny_emoji["checkpoint"])
    out = tmp_path / "generalisation.json"
    bench_generalisation.main(["--old", checkpoint, "--new", checkpoint, "--candidates", "10", "--rerank-queries", "3",
                               "--threads", "1", "--no-progress", "--out", str(out)])
    written = json.loads(out.read_text())
    assert set(written["models"]) == {"old", "new"} and set(written["ratios"]) == {"unseen", "heldout", "openmoji"}
    old, new = written["models"]["old"], written["models"]["new"]
    for name in ("unseen", "heldout", "openmoji"):
        assert old[name]["exact"] == new[name]["exact"]  # the same model twice
        assert {"gallery", "text_queries", "image_queries", "exact", "exact_on_sample", "pipeline"} <= set(old[name])
        assert old[name]["pipeline"]["queries"] == 3 and "recall 10 + rerank" in old[name]["pipeline"]
    assert (tmp_path / "cache" / "bench" / f"generalisation-{old['fingerprint'][:12]}-heldout" / "store").is_dir()


def test_bank_normalisation_rows_beside_the_plain_scan(tiny_emoji, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench_generalisation, "build_emoji_collection", lambda progress: tiny_emoji["collection"])
    checkpoint = str(tiny_emoji["checkpoint"])
    out = tmp_path / "generalisation.json"
    bench_generalisation.main(["--old", checkpoint, "--new", checkpoint, "--rerank-queries", "0", "--bank-norm", "5,2",
                               "--bank-size", "4", "--check-queries", "3", "--threads", "1", "--no-progress",
                               "--out", str(out)])
    new = json.loads(out.read_text())["models"]["new"]
    bank = new["bank_norm"]
    assert set(bank) == {"bank", "plain", "beta=5", "beta=2"} and bank["bank"]["texts"] == 4
    for name in ("unseen", "heldout", "openmoji"):
        assert bank["plain"][name]["t2i"] == new[name]["exact"]["t2i"]  # the plain row is the exact scan's
    assert bank["plain"]["seen"]["queries"] == 3 and bank["plain"]["val"]["queries"] == 4  # 2 val concepts x 2 captions
    printed = capsys.readouterr().out
    assert "new bank-norm beta=5" in printed and "seen" in printed


def test_bad_bank_norm_strengths_are_refused(tmp_path):
    for value in ("x", "0", "5,-1", "nan"):
        with pytest.raises(SystemExit):
            bench_generalisation.main(["--bank-norm", value, "--out", str(tmp_path / "never.json")])
    assert not (tmp_path / "never.json").exists()
