"""``teran-es reproduce coco|f30k``: the paper's table, ours next to theirs (teran_es/reproduce.py)."""

from __future__ import annotations

import logging
from typing import Any

import click

from teran_es.cli.common import emit_json, json_option, set_option
from teran_es.errors import TeranError
from teran_es.index import BACKENDS

_LABELS = {
    "i2t_r1": "sentence retrieval R@1",
    "i2t_r5": "sentence retrieval R@5",
    "i2t_r10": "sentence retrieval R@10",
    "t2i_r1": "image retrieval R@1",
    "t2i_r5": "image retrieval R@5",
    "t2i_r10": "image retrieval R@10",
    "rsum": "RSUM",
}
_PROTOCOL_NAMES = {
    "1k": "1K (mean over folds of 1,000 images)",
    "5k": "5K (all 5,000 images)",
    "all": "the whole test split",
}


@click.command("reproduce")
@click.argument("dataset", type=click.Choice(["coco", "f30k"]))
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, file_okay=False),
    required=True,
    help="The dataset's folder in the authors' layout (annotations/, features_36/bu_att, bu_box), "
    "or in ours (bu_att/ at its top).",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True),
    default=None,
    help="The authors' .pth (imported; trusted files only) or one of our checkpoint directories. "
    "Without it, a model is trained first as the pipeline says.",
)
@click.option(
    "--text-backbone",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Local copy of bert-base-uncased (default: the pipeline's model.text_backbone).",
)
@click.option(
    "--pipeline",
    "pipeline_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Pipeline file (default: pipelines/coco-teran.toml or pipelines/f30k-teran.toml).",
)
@set_option
@click.option(
    "--candidates",
    type=click.IntRange(min=1),
    multiple=True,
    help="Also search the test split through the pipeline: recall this many candidates, then "
    "the exact rerank (repeatable).",
)
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="embedded", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Work directory for --candidates.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Images or captions encoded at once.")
@click.option("--limit", type=int, default=0, help="The first N test images only (0 = all).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
@json_option
def reproduce(
    dataset: str,
    data_path: str,
    checkpoint: str | None,
    text_backbone: str | None,
    pipeline_path: str | None,
    overrides: tuple[str, ...],
    candidates: tuple[int, ...],
    backend: str,
    workdir: str | None,
    device: str,
    batch_size: int,
    limit: int,
    on_error: str,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Evaluate a TERAN of the paper on DATASET's test split (coco | f30k) with the paper's
    protocols, and print our Recall@K next to the paper's, with the differences."""
    from teran_es.config import ConfigError
    from teran_es.reproduce import load_paper_pipeline
    from teran_es.reproduce import reproduce as run_reproduce

    extra = [f"data.path={data_path}"] + ([f"model.text_backbone={text_backbone}"] if text_backbone else [])
    try:
        config = load_paper_pipeline(dataset, pipeline_path, [*overrides, *extra])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    if not as_json:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run_reproduce(
            config,
            checkpoint,
            device=device,
            candidates=candidates,
            workdir=workdir,
            backend=backend,
            batch_size=batch_size,
            limit=limit,
            progress=not no_progress,
            on_error=on_error,
        )
    except (TeranError, FileNotFoundError) as exc:  # FileNotFoundError: data or model files
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(result)
        return
    _print_report(result)


def _number(value: Any) -> str:
    return f"{value:7.2f}" if isinstance(value, (int, float)) else "      -"


def _print_report(result: dict[str, Any]) -> None:
    model = result["model"]
    click.echo(f"{result['dataset']}: model {model['how']} from {model['checkpoint']}")
    for note in model.get("notes", []):
        click.echo(f"  note: {note}")
    click.echo(
        f"{result['data']} [{result['split']}]: {result['n_images']:,} images, {result['n_captions']:,} captions"
    )
    rows_by_protocol: dict[str, list[dict[str, Any]]] = {}
    for row in result["comparison"]:
        rows_by_protocol.setdefault(row["protocol"], []).append(row)
    for protocol, metrics in result["protocols"].items():
        title = _PROTOCOL_NAMES.get(protocol, protocol)
        if "skipped" in metrics:
            click.echo(f"protocol {title}: not run, {metrics['skipped']}")
            continue
        rows = rows_by_protocol.get(protocol)
        click.echo(f"protocol {title}:")
        if rows:
            click.echo(f"  {'':24s} {'ours':>7s} {'paper':>7s} {'diff':>7s}")
            for row in rows:
                label = _LABELS.get(row["metric"], row["metric"])
                click.echo(
                    f"  {label:24s} {_number(row['ours'])} {_number(row['paper'])} {_number(row['difference'])}"
                )
        else:
            click.echo("  (the paper gives no figures for this protocol)")
            for metric, label in _LABELS.items():
                click.echo(f"  {label:24s} {_number(metrics.get(metric))}")
    if result["comparison"] and result["paper_source"]:
        click.echo(f"paper figures: {result['paper_source']}")
    searched = result.get("search_pipeline")
    if searched:
        click.echo(f"image retrieval through the search pipeline ({searched['ingest']['backend']} backend):")
        rows = [("exact scan", searched["exact"])]
        rows += [(f"recall {n} + rerank", values) for n, values in searched["candidates"].items()]
        for label, values in rows:
            recalls = "  ".join(f"R@{k} {values[f't2i_r{k}']:6.2f}" for k in (1, 5, 10))
            overlap = f"  top-10 overlap {values['fidelity_at_10']:.3f}" if "fidelity_at_10" in values else ""
            click.echo(f"  {label:22s} {recalls}{overlap}")
