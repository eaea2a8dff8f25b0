"""What the scale benchmark concludes from its rows: the frontier of our configurations,
peers at matched latency and matched recall, the headline against the targets, the plots and
the printed table. Pure functions of the measured rows (no measuring here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import repo_relative

# The targets at 1M images (Elasticsearch, one node, 1 GiB heap; single query, one thread).
TARGETS = {
    "recall_at_10": 0.95,
    "recall_goal": 0.99,
    "max_candidates": 1000,
    "latency_p50_ms": 30.0,
    "bytes_per_image": 8 * 1024,
    "index_images_per_s": 5000.0,
    "applies_to_size": 1_000_000,
}
INTERPOLATION = (
    "Our points are the single-query (p50 recall + p50 rerank latency, mean recall@10) of every "
    "configuration of one backend. The frontier keeps the points that no faster point beats in "
    "recall. recall at a latency: linear in log(latency) between the two frontier points around "
    "it (null below the fastest point; above the slowest, the slowest point's recall). latency at "
    "a recall: the same segments read the other way (null where the frontier never reaches it). "
    "'best_within_latency' is the best measured point no slower than the peer, without interpolation."
)


def latency_ms(row: dict[str, Any]) -> float:
    return float(row["single"]["total"]["p50_ms"])


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, recall) points that no faster-or-equal point beats, by increasing latency."""
    best: list[tuple[float, float]] = []
    for lat, rec in sorted(points, key=lambda p: (p[0], -p[1])):
        if lat > 0 and (not best or rec > best[-1][1]):
            best.append((lat, rec))
    return best


def recall_at_latency(front: Sequence[tuple[float, float]], latency: float) -> float | None:
    if not front or latency < front[0][0]:
        return None
    for (l0, r0), (l1, r1) in zip(front, front[1:], strict=False):
        if l0 <= latency <= l1:
            share = (math.log(latency) - math.log(l0)) / (math.log(l1) - math.log(l0)) if l1 > l0 else 1.0
            return r0 + share * (r1 - r0)
    return front[-1][1]


def latency_at_recall(front: Sequence[tuple[float, float]], recall: float) -> float | None:
    if not front or recall > front[-1][1]:
        return None
    if recall <= front[0][1]:
        return front[0][0]
    for (l0, r0), (l1, r1) in zip(front, front[1:], strict=False):
        if r0 <= recall <= r1:
            share = (recall - r0) / (r1 - r0) if r1 > r0 else 1.0
            return math.exp(math.log(l0) + share * (math.log(l1) - math.log(l0)))
    return None


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def compare_peers(rows: Sequence[dict[str, Any]], peers: dict[str, Any]) -> dict[str, Any]:
    """Each peer point (peer candidates + our rerank) against each backend's frontier."""
    out: dict[str, Any] = {"method": INTERPOLATION, "by_peer": {}}
    backends = sorted({r["backend"] for r in rows})
    fronts = {b: frontier([(latency_ms(r), r["recall_at_10"]) for r in rows if r["backend"] == b]) for b in backends}
    out["frontiers"] = {b: [{"latency_ms": lat, "recall_at_10": rec} for lat, rec in f] for b, f in fronts.items()}
    for name, peer in peers.items():
        if "rows" not in peer:
            continue
        points = []
        for row in peer["rows"]:
            lat, rec = latency_ms(row), row["recall_at_10"]
            point: dict[str, Any] = {"candidates": row["candidates"], "peer_latency_ms": lat, "peer_recall_at_10": rec}
            for b, front in fronts.items():
                within = [r for r in rows if r["backend"] == b and latency_ms(r) <= lat]
                best = max(within, key=lambda r: r["recall_at_10"], default=None)
                ours_latency = latency_at_recall(front, rec)
                point[b] = {
                    "our_recall_at_10_at_peer_latency": _round(recall_at_latency(front, lat)),
                    "our_latency_ms_at_peer_recall": _round(ours_latency, 3),
                    "peer_latency_over_ours_at_matched_recall": _round(lat / ours_latency, 3) if ours_latency else None,
                    "best_within_latency": None
                    if best is None
                    else {"config": config_label(best), "recall_at_10": best["recall_at_10"], "latency_ms": latency_ms(best)},
                }
            points.append(point)
        out["by_peer"][name] = points
    return out


def config_label(row: dict[str, Any]) -> str:
    probe = f"/nprobe{row['nprobe']}" if row.get("nprobe") else ""
    return f"{row['backend']}/{row['setting_key']}{probe}/K{row['candidates']}/{row['store_dtype']}"


def headline(rows: Sequence[dict[str, Any]], exact: dict[str, Any], n_images: int, index_rates: dict[str, float] | None = None) -> dict[str, Any]:
    """The fastest Elasticsearch configuration reaching recall@10 >= 0.95 with <= 1000
    candidates, else the best recall reached; with its latency, bytes per image, speed-up over
    the exact scan and the indexing rate of its index, each against the target."""
    es_rows = [r for r in rows if r["backend"] == "elasticsearch"]
    pool = es_rows or list(rows)
    if not pool:
        return {"skipped": "no configuration was measured"}
    qualifying = [
        r for r in pool if r["recall_at_10"] >= TARGETS["recall_at_10"] and r["candidates"] <= TARGETS["max_candidates"]
    ]
    best = min(qualifying, key=latency_ms) if qualifying else max(pool, key=lambda r: (r["recall_at_10"], -latency_ms(r)))
    exact_ms = exact.get("single", {}).get("p50_ms") if isinstance(exact, dict) else None
    speedup = exact_ms / latency_ms(best) if exact_ms else None
    rate = (index_rates or {}).get(f"{best['backend']}/{best['setting_key']}")
    targets = {
        "recall_at_10": {
            "target": f">= {TARGETS['recall_at_10']} with <= {TARGETS['max_candidates']} candidates (goal {TARGETS['recall_goal']})",
            "value": best["recall_at_10"],
            "candidates": best["candidates"],
            "met": bool(qualifying),
        },
        "latency_p50_ms": {"target": f"<= {TARGETS['latency_p50_ms']:g} ms (recall + rerank)", "value": latency_ms(best), "met": latency_ms(best) <= TARGETS["latency_p50_ms"]},
        "bytes_per_image": {
            "target": f"<= {TARGETS['bytes_per_image']} (Elasticsearch index + feature store)",
            "value": best["bytes_per_image"]["total"],
            "met": best["bytes_per_image"]["total"] <= TARGETS["bytes_per_image"],
        },
        "index_images_per_s": {"target": f">= {TARGETS['index_images_per_s']:g} images/s into the index", "value": rate, "met": rate is not None and rate >= TARGETS["index_images_per_s"]},
    }
    return {
        "chosen_from": "elasticsearch" if es_rows else "embedded (no Elasticsearch rows)",
        "rule": f"fastest (p50 single-query latency) configuration with recall@10 >= {TARGETS['recall_at_10']} and <= {TARGETS['max_candidates']} candidates; if none, the highest recall@10",
        "reached_target_recall": bool(qualifying),
        "config": config_label(best),
        "recall_at_10": best["recall_at_10"],
        "recall_at_100": best["recall_at_100"],
        "latency_p50_ms": latency_ms(best),
        "exact_scan_p50_ms": exact_ms,
        "speedup_over_exact_scan": _round(speedup, 1),
        "bytes_per_image": best["bytes_per_image"],
        "targets": targets,
        "targets_apply": n_images >= TARGETS["applies_to_size"],
    }


# --------------------------------------------------------------------------- plots


def plot(rows: Sequence[dict[str, Any]], peers: dict[str, Any], exact: dict[str, Any], title: str, stem: Path) -> list[str]:
    """recall@10 vs latency and recall@10 vs bytes per image, as ``<stem>-latency.png`` and
    ``<stem>-bytes.png``; returns their paths, relative to the repository when inside it."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['backend']} {r.get('kind', 'scalar')} {r['store_dtype']}", []).append(r)
    written = []
    for kind in ("latency", "bytes"):
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for label, group in sorted(series.items()):
            xs = [latency_ms(r) if kind == "latency" else r["bytes_per_image"]["total"] for r in group]
            ys = [r["recall_at_10"] for r in group]
            ax.scatter(xs, ys, label=label, s=[12 + 8 * math.log10(r["candidates"]) ** 2 for r in group], alpha=0.8)
            for x, y, r in zip(xs, ys, group, strict=True):
                probe = f" p{r['nprobe']}" if r.get("nprobe") else ""
                ax.annotate(f"{r.get('label', r.get('setting_key'))}{probe} K{r['candidates']}", (x, y), fontsize=6, alpha=0.7, xytext=(3, 3), textcoords="offset points")
        for marker, (name, peer) in zip("xP*+", peers.items(), strict=False):
            points = [
                (latency_ms(r) if kind == "latency" else r.get("bytes_per_image"), r["recall_at_10"], r["candidates"])
                for r in peer.get("rows", [])
            ]
            points = [p for p in points if p[0] is not None]
            if points:
                ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, s=60, label=f"{name} + rerank")
                for x, y, k in points:
                    ax.annotate(f"K{k}", (x, y), fontsize=6, xytext=(3, -9), textcoords="offset points")
        if kind == "latency":
            if exact.get("single", {}).get("p50_ms"):
                ax.axvline(exact["single"]["p50_ms"], color="grey", linestyle="--", label="exact scan p50")
            ax.set_xlabel("single-query latency p50, recall + rerank (ms)")
        else:
            ax.axvline(TARGETS["bytes_per_image"], color="grey", linestyle=":", label="8 KB per image")
            ax.set_xlabel("bytes per image (index + feature store)")
        ax.axhline(TARGETS["recall_at_10"], color="grey", linestyle=":", linewidth=0.8)
        if kind == "latency":
            ax.axvline(TARGETS["latency_p50_ms"], color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel("recall@10 vs exact scan")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = stem.with_name(f"{stem.name}-{kind}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(repo_relative(path))
    return written


# --------------------------------------------------------------------------- table


def table(result: dict[str, Any]) -> str:
    """A readable summary of one size."""
    lines = [f"== {result['images']:,} images, {result['queries']} queries =="]
    lines.append(f"{'config':58s} {'R@10':>6s} {'R@100':>6s} {'cand@10':>7s} {'recall ms':>10s} {'rerank ms':>10s} {'total p50/p95':>15s} {'batch ms/q':>10s} {'B/img':>8s}")
    for r in result["rows"]:
        s = r["single"]
        lines.append(
            f"{config_label(r):58s} {r['recall_at_10']:6.3f} {r['recall_at_100']:6.3f} {r['candidate_recall_at_10']:7.3f} "
            f"{s['recall']['p50_ms']:10.2f} {s['rerank']['p50_ms']:10.2f} "
            f"{s['total']['p50_ms']:7.2f}/{s['total']['p95_ms']:<7.2f} {r['batched']['total_ms_per_query']:10.2f} {r['bytes_per_image']['total']:8.0f}"
        )
    for name, exact in result["exact_scan"].items():
        if "skipped" in exact:
            lines.append(f"exact scan {name}: skipped ({exact['skipped']})")
        else:
            lines.append(
                f"exact scan {name}: p50 {exact['single']['p50_ms']:.1f} ms over {exact['queries_timed']} queries "
                f"(batch of {exact['batch']['batch_size']}: {exact['batch']['ms_per_query']:.1f} ms/query)"
            )
    for name, peer in result["peers"].items():
        if "rows" not in peer:
            lines.append(f"peer {name}: {'skipped' if 'skipped' in peer else 'failed'} ({peer.get('skipped') or peer.get('failed')})")
            continue
        for r in peer["rows"]:
            lines.append(
                f"peer {name} K={r['candidates']}: own R@10 {r['own_recall_at_10']:.3f}, + rerank R@10 {r['recall_at_10']:.3f}, "
                f"latency p50 {r['single']['total']['p50_ms']:.2f} ms"
            )
    for name, points in result.get("peer_comparison", {}).get("by_peer", {}).items():
        for p in points:
            for b in sorted(k for k in p if isinstance(p[k], dict)):
                c = p[b]
                lines.append(
                    f"  vs {b}: {name} K={p['candidates']} -> our R@10 at its latency {c['our_recall_at_10_at_peer_latency']}, "
                    f"our latency at its recall {c['our_latency_ms_at_peer_recall']} ms"
                )
    h = result["headline"]
    if "skipped" not in h:
        lines.append(
            f"headline ({h['chosen_from']}): {h['config']} R@10 {h['recall_at_10']:.3f}, {h['latency_p50_ms']:.2f} ms p50, "
            f"speed-up over exact {h['speedup_over_exact_scan']}x, {h['bytes_per_image']['total']:.0f} B/image"
        )
        scope = "" if h["targets_apply"] else " (targets are for 1M images; shown for reference)"
        for name, t in h["targets"].items():
            lines.append(f"  target {name} {t['target']}: {t['value']} -> {'MET' if t['met'] else 'not met'}{scope}")
    return "\n".join(lines)
