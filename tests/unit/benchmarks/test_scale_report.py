"""The scale benchmark's conclusions: frontier, interpolation, headline against the targets."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import scale_report as sr  # noqa: E402


def _row(backend, k, recall, ms, total_bytes=6000.0):
    return {
        "backend": backend,
        "setting_key": "sum-g64",
        "pooling": "sum",
        "gamma": 64,
        "candidates": k,
        "store_dtype": "int8",
        "recall_at_10": recall,
        "recall_at_100": recall,
        "single": {"total": {"p50_ms": ms}},
        "bytes_per_image": {"total": total_bytes},
    }


def test_frontier_drops_dominated_points():
    assert sr.frontier([(10, 0.5), (5, 0.6), (20, 0.9), (30, 0.8)]) == [(5, 0.6), (20, 0.9)]


def test_interpolation_is_linear_in_log_latency_and_inverts():
    front = [(1.0, 0.5), (100.0, 0.9)]
    assert math.isclose(sr.recall_at_latency(front, 10.0), 0.7)
    assert math.isclose(sr.latency_at_recall(front, 0.7), 10.0)
    assert sr.recall_at_latency(front, 0.5) is None  # faster than anything measured
    assert sr.recall_at_latency(front, 1000.0) == 0.9
    assert sr.latency_at_recall(front, 0.95) is None  # never reached
    assert sr.latency_at_recall(front, 0.2) == 1.0


def test_headline_picks_the_fastest_qualifying_elasticsearch_row():
    rows = [
        _row("embedded", 1000, 0.995, 5.0),
        _row("elasticsearch", 1000, 0.962, 20.0, 9000.0),
        _row("elasticsearch", 300, 0.951, 10.0, 7000.0),
        _row("elasticsearch", 2000, 0.999, 8.0),  # more candidates than the target allows
        _row("elasticsearch", 100, 0.94, 6.0),  # below the recall target
    ]
    h = sr.headline(rows, {"single": {"p50_ms": 2000.0}}, 1_000_000, {"elasticsearch/sum-g64": 6000.0})
    assert h["config"] == "elasticsearch/sum-g64/K300/int8"
    assert h["speedup_over_exact_scan"] == 200.0
    assert all(t["met"] for t in h["targets"].values()) and h["targets_apply"]


def test_headline_reports_the_best_recall_when_the_target_is_missed():
    rows = [_row("embedded", 100, 0.5, 1.0), _row("embedded", 1000, 0.9, 40.0, 9000.0)]
    h = sr.headline(rows, {"single": {"p50_ms": 50.0}}, 10_000)
    assert not h["reached_target_recall"] and h["recall_at_10"] == 0.9
    assert not h["targets"]["recall_at_10"]["met"] and not h["targets"]["bytes_per_image"]["met"]
    assert not h["targets"]["latency_p50_ms"]["met"]  # 40 ms
    assert not h["targets"]["index_images_per_s"]["met"] and h["targets"]["index_images_per_s"]["value"] is None


def test_peer_comparison():
    rows = [_row("embedded", 100, 0.5, 1.0), _row("embedded", 1000, 0.9, 100.0)]
    peers = {"faiss": {"rows": [_row("peer", 100, 0.7, 10.0)]}, "plaid": {"skipped": "not installed"}}
    out = sr.compare_peers(rows, peers)
    point = out["by_peer"]["faiss"][0]["embedded"]
    assert math.isclose(point["our_recall_at_10_at_peer_latency"], 0.7)
    assert math.isclose(point["our_latency_ms_at_peer_recall"], 10.0)
    assert point["best_within_latency"]["recall_at_10"] == 0.5
    assert "plaid" not in out["by_peer"]
