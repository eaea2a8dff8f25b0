"""benchmarks/common.py: the recorded command line, and results files that name paths inside the
repository relative to it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402


def test_paths_inside_the_repository_become_relative():
    assert common.REPO == REPO
    assert common.repo_relative(REPO / "models" / "openmoji-minilm") == "models/openmoji-minilm"
    assert common.repo_relative(str(REPO / "benchmarks" / "results" / "x.png")) == "benchmarks/results/x.png"
    assert common.repo_relative("/somewhere/else/cache") == "/somewhere/else/cache"


def test_relative_paths_walks_the_payload():
    payload = {
        "plots": [str(REPO / "benchmarks/results/a.png"), REPO / "benchmarks/results/b.png"],
        "model": {"checkpoint": str(REPO / "models/openmoji-minilm"), "fingerprint": "abc"},
        "cache": "/var/cache/teran-es/bench/scale-1",
        "ratio": "1/2",
        "load": (0.5, 1.0),
        "note": "see /work for details",
    }
    assert common.relative_paths(payload) == {
        "plots": ["benchmarks/results/a.png", "benchmarks/results/b.png"],
        "model": {"checkpoint": "models/openmoji-minilm", "fingerprint": "abc"},
        "cache": "/var/cache/teran-es/bench/scale-1",
        "ratio": "1/2",
        "load": [0.5, 1.0],
        "note": "see /work for details",
    }


def test_write_results_records_relative_paths(tmp_path):
    target = common.write_results("x", {"out_dir": REPO / "benchmarks/results", "tmp": str(tmp_path)}, tmp_path / "x.json")
    assert json.loads(target.read_text()) == {"out_dir": "benchmarks/results", "tmp": str(tmp_path)}
    assert not list(tmp_path.glob("*.tmp"))


def test_command_lines():
    script = REPO / "benchmarks" / "bench_scale.py"
    argv = ["--quick", "--checkpoint", str(REPO / "models" / "openmoji-minilm")]
    assert common.command_line(script, argv) == "python benchmarks/bench_scale.py --quick --checkpoint models/openmoji-minilm"
    assert common.command_line(script, []) == "python benchmarks/bench_scale.py"
    options = argparse.Namespace(docs=1000, query_terms=5, workdir="/tmp/w", quick=False, json_out=REPO / "benchmarks/results/index.json")
    assert (
        common.command_from_options(REPO / "benchmarks" / "bench_index.py", options, skip=("workdir",))
        == "python benchmarks/bench_index.py --docs 1000 --query-terms 5 --json-out benchmarks/results/index.json"
    )
