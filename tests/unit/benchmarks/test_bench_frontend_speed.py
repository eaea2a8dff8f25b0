"""benchmarks/bench_frontend_speed.py: the three forwards it times compute the same function,
and a small run writes every size's rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_frontend_speed  # noqa: E402

from teran_es.model.efficientnet import EfficientNetLite  # noqa: E402

TINY_STAGES = ((1, 3, 1, 1, 8, 4), (2, 3, 2, 2, 4, 6), (2, 5, 2, 3, 6, 10))


def test_the_timed_forwards_agree_on_a_tiny_network():
    torch.manual_seed(0)
    network = EfficientNetLite(TINY_STAGES, head_channels=16, classes=5).eval()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # statistics that make folding matter
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    for block in (2, -1):
        result = bench_frontend_speed.time_forwards(network, 33, batch=2, rounds=2, block=block)
        assert set(result) == set(bench_frontend_speed.FORWARDS)
        for row in result.values():
            assert row["ms_per_image"] > 0 and row["max_abs_difference_from_plain"] < 1e-4
        assert result["plain"]["speedup_over_plain"] == 1.0
    assert next(network.parameters()).is_contiguous()  # the channels-last copy left it as it was


def test_a_small_run_writes_each_size(tmp_path, capsys):
    out = tmp_path / "speed.json"
    payload = bench_frontend_speed.main(["--sizes", "64", "96", "--batch", "2", "--rounds", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    assert set(written["sizes"]) == {"64", "96"} == set(payload["sizes"])
    assert written["machine"]["torch_threads"] == 2
    assert "64 px: plain" in capsys.readouterr().out
