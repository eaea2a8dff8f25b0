"""``teran-es evaluate --generalisation``: the generalisation protocols of a checkpoint on
the multi-source emoji collection, run (``generalisation_eval.py``) and printed as a table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

PROTOCOL_NAMES = ("unseen", "heldout", "openmoji")
DIRECTIONS = (("t2i", "text -> image"), ("i2t", "image -> text"))


def parse_protocols(value: str) -> list[str]:
    """``"unseen,heldout"`` -> ["unseen", "heldout"] (``all``: the three); unknown names are a usage error."""
    names = list(PROTOCOL_NAMES) if value.strip() == "all" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROTOCOL_NAMES]
    if unknown or not names:
        raise click.BadParameter(
            f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(PROTOCOL_NAMES)} (comma-separated) or all",
            param_hint="--generalisation",
        )
    return list(dict.fromkeys(names))


def run_generalisation(
    model,
    pipeline,
    meta: dict,
    data,
    names: list[str],
    *,
    candidates: list[int],
    queries: int,
    workdir: str | None,
    device: str,
    batch_size: int,
    progress: bool,
    bank_norm: bool = True,
) -> dict[str, Any]:
    """The result dict of ``--generalisation``: the collection, the settings and each protocol's
    entry. ``bank_norm``: apply the model's query bank, when it carries one, as search does."""
    from teran_es.collections.emoji_multi import read_rows
    from teran_es.config import default_cache_dir
    from teran_es.evaluation import encode_image_set
    from teran_es.generalisation import build_protocols
    from teran_es.generalisation_eval import collection_image_set, evaluate_protocol, row_normalisers

    rows = read_rows(data.path)
    protocols = build_protocols(rows)
    image_set = collection_image_set(model, rows, data.path, progress=progress)
    regions, mask = encode_image_set(model, image_set, batch_size=batch_size, progress=progress)
    bank = model.query_bank if bank_norm else None
    normaliser = row_normalisers(model, regions, mask) if bank is not None else None
    config = dataclasses.replace(
        pipeline,
        ingest=dataclasses.replace(pipeline.ingest, device=device),
        search=dataclasses.replace(pipeline.search, device=device, bank_norm=bank_norm),
        index=dataclasses.replace(pipeline.index, backend="embedded"),
    )
    root = Path(workdir) if workdir else default_cache_dir() / "evaluate" / f"{str(meta.get('fingerprint', 'model'))[:12]}-generalisation"
    results = {}
    for name in names:
        if progress:
            click.echo(f"protocol {name}: {len(protocols[name].gallery)} images, {len(protocols[name].texts)} text queries",
                       err=True)
        results[name] = evaluate_protocol(
            model, config, image_set, regions, mask, protocols[name], candidates=candidates, queries=queries,
            workdir=root / name, batch_size=batch_size, normaliser=normaliser, progress=progress,
        )
    return {
        "collection": data.path,
        "images": len(rows),
        # text -> image ranks less each image's query-bank normaliser (docs/generalisation.md)
        "query_bank": None if bank is None else {"texts": len(bank.texts), "beta": bank.beta,
                                                 "source": bank.source, "fingerprint": bank.fingerprint},
        "candidates": candidates,
        "queries": queries,
        "workdir": str(root) if candidates else None,
        "protocols": results,
    }


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, int, int, dict[str, float], float | None]]:
    """(protocol, direction, method, queries, searched, R@K, ms p50 or None): one row per
    protocol, direction and method (exact scan; with the pipeline, the exact scan on its
    sample and recall N + rerank; then text -> image by the exact scan for each kind of
    concept, "exact, flag" and so on). ``searched``: the gallery's images (text -> image), or
    the texts of the pool the image queries rank (image -> text)."""
    rows = []
    for name, entry in results["protocols"].items():
        t2i = ("t2i", entry["text_queries"], entry["gallery"])
        i2t = ("i2t", entry["image_queries"], entry["text_pool"])
        for direction, queries, searched in (t2i, i2t):
            rows.append((name, direction, "exact", queries, searched, entry["exact"][direction], None))
            if direction == "t2i" and "pipeline" in entry:
                sampled = entry["pipeline"]["queries"]
                rows.append((name, direction, "exact (sample)", sampled, searched, entry["exact_on_sample"], None))
                for method, values in entry["pipeline"].items():
                    if method.startswith("recall"):
                        rows.append((name, direction, method, sampled, searched, values, values["ms_p50"]))
            if direction == "t2i":
                for kind, values in entry.get("exact_t2i_by_kind", {}).items():
                    rows.append((name, direction, f"exact, {kind}", values["queries"], searched, values, None))
    return rows


def echo_table(checkpoint: str, results: dict[str, Any]) -> None:
    """The human output of ``--generalisation``: one line per row of :func:`table_rows`."""
    click.echo(f"{checkpoint} on {results['collection']} ({results['images']} drawings): generalisation")
    bank = results.get("query_bank")
    if bank:
        click.echo(f"text -> image scores less each drawing's query-bank normaliser ({bank['texts']} texts, "
                   f"beta {bank['beta']:g}; --no-bank-norm for the plain scores)")
    click.echo(f"{'protocol':9s} {'direction':13s} {'method':22s} {'queries':>7s} {'searched':>8s}"
               f" {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'ms p50':>7s}")
    labels = dict(DIRECTIONS)
    for name, direction, method, queries, searched, r, ms in table_rows(results):
        timing = f"{ms:7.1f}" if ms is not None else ""
        click.echo(f"{name:9s} {labels[direction]:13s} {method:22s} {queries:7d} {searched:8d}"
                   f" {r['r1']:6.2f} {r['r5']:6.2f} {r['r10']:6.2f} {timing}".rstrip())
