"""benchmarks/bench_generalisation.py on a tiny multi-source collection: both models side by
side, through the library, in the layout of benchmarks/results/generalisation.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
