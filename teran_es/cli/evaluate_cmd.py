"""``teran-es evaluate``: Recall@K in both directions of a checkpoint on one split, by the
exact scan and, with ``--candidates``, through the search pipeline (index recall + rerank).
With ``--generalisation``, the generalisation protocols of the multi-source emoji collection
instead (``cli/generalisation_view.py``)."""

from __future__ import annotations

import dataclasses

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError
from teran_es.index import BACKENDS


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True),
    default=None,
    help="Parquet file or directory, a bottom-up root, or an OpenMoji collection (default: the checkpoint's data.path).",
)
@click.option(
    "--format",
    "data_format",
    type=click.Choice(["auto", "parquet", "bottom-up", "openmoji", "emoji"]),
    default="auto",
    show_default=True,
    help="Data format; auto = the checkpoint's own for a model with an image front end, else "
    "bottom-up when the directory has bu_att/, else parquet.",
)
@click.option("--split", default="test", show_default=True, help="Split to evaluate on.")
@click.option(
    "--protocol",
    type=click.Choice(["1k", "5k", "all"]),
    default="all",
    show_default=True,
    help="1k: mean over folds of 1,000 images (COCO 1K); 5k: exactly 5,000 images; all: the whole split.",
)
@click.option("--limit", type=int, default=0, help="Evaluate on the first N images only (0 = all).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option(
    "--batch-size", type=int, default=128, show_default=True, help="Images or captions encoded at once."
)
@click.option(
    "--threads", type=int, default=0, show_default=True, help="torch CPU threads (0 = torch's default)."
)
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True)
@click.option(
    "--candidates",
    type=click.IntRange(min=1),
    multiple=True,
    help="Also search the split through the pipeline: surrogate-text recall of this many candidates, "
    "then the exact rerank (repeatable, e.g. --candidates 100 --candidates 1000).",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="embedded",
    show_default=True,
    help="Index backend for --candidates.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Work directory for --candidates (default: <cache>/evaluate/<model>-<split>-<backend>; with "
    "--generalisation, one per protocol under <cache>/evaluate/<model>-generalisation/).",
)
@click.option(
    "--generalisation",
    "generalisation",
    metavar="PROTOCOLS",
    default=None,
    help="Instead of one split: the generalisation protocols of the multi-source emoji collection "
    "(unseen,heldout,openmoji, comma-separated, or all); needs data.format emoji. See docs/generalisation.md.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="With --generalisation and --candidates: a seeded sample of this many text queries per "
    "protocol goes through the pipeline (0 = all).",
)
@click.option("--bank-norm/--no-bank-norm", default=True, show_default=True,
              help="Rank text -> image by the score less each image's query-bank normaliser when the model "
                   "carries a bank, as search does (the exact scan of --generalisation and the search pipeline "
                   "rows; the split's R@K are the plain scores).")
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
@json_option
@click.pass_context
def evaluate(
    ctx: click.Context,
    checkpoint: str,
    data_path: str | None,
    data_format: str,
    split: str,
    protocol: str,
    limit: int,
    device: str,
    batch_size: int,
    threads: int,
    on_error: str,
    candidates: tuple[int, ...],
    backend: str,
    workdir: str | None,
    generalisation: str | None,
    queries: int,
    bank_norm: bool,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Evaluate the checkpoint CHECKPOINT on a split: image and sentence retrieval R@1/5/10 and RSUM.

    With --generalisation: R@1/5/10 both ways on unseen concepts, the held-out artist and the
    OpenMoji test split of the multi-source emoji collection (`teran-es emoji build`)."""
    from teran_es.collections.defaults import with_default_collection
    from teran_es.device import resolve_device
    from teran_es.evaluation import chance_recall, evaluate_model
    from teran_es.features import open_image_set
    from teran_es.model.checkpoint import load_checkpoint

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    names = None
    if generalisation is None and ctx.get_parameter_source("queries") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--queries: only with --generalisation (a split's pipeline rows search all its captions)")
    if generalisation is not None:
        from teran_es.cli.generalisation_view import parse_protocols

        names = parse_protocols(generalisation)
        given = [f"--{p.replace('_', '-')}" for p in ("split", "protocol", "limit", "on_error")
                 if ctx.get_parameter_source(p) is click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)}: not with --generalisation (its protocols set the queries)")
        if backend != "embedded":
            raise click.UsageError("--generalisation measures the pipeline on a fresh embedded index: "
                                   "leave --backend at embedded")
    try:
        model, pipeline, meta = load_checkpoint(checkpoint, resolve_device(device))
        frontend = model.frontend is not None
        # a model with a front end reads images as its training did; "auto" keeps that format
        fmt = pipeline.data.format if data_format == "auto" and (frontend or names) else data_format
        data = dataclasses.replace(pipeline.data, format=fmt)
        if data_path is not None:
            data.path = data_path
        if names is not None:
            if fmt != "emoji":
                raise click.UsageError(
                    f"--generalisation needs the multi-source emoji collection: a checkpoint trained with "
                    f"data.format = \"emoji\", or --format emoji (this one: {fmt})"
                )
            from teran_es.cli.generalisation_view import echo_table, run_generalisation

            results = run_generalisation(
                model, pipeline, meta, with_default_collection(data), names,
                candidates=sorted(set(candidates)), queries=queries, workdir=workdir, device=device,
                batch_size=batch_size, progress=not no_progress, bank_norm=bank_norm,
            )
            if as_json:
                emit_json({"checkpoint": checkpoint, "fingerprint": meta.get("fingerprint"), **results})
            else:
                echo_table(checkpoint, results)
            return
        image_set = open_image_set(
            with_default_collection(data),  # an empty openmoji path: the collection built in the cache
            split,
            limit=limit,
            on_error=on_error,
            feature_dim=model.config.region_feature_dim,
            image_size=model.config.image_size if frontend else None,
        )
        metrics = evaluate_model(
            model, image_set, protocol=protocol, batch_size=batch_size, progress=not no_progress
        )
        searched = None
        if candidates:
            from pathlib import Path

            from teran_es.config import default_cache_dir
            from teran_es.search_evaluation import evaluate_search_pipeline

            pipeline.index.backend = backend
            pipeline.ingest.device = pipeline.search.device = device
            pipeline.search.bank_norm = bank_norm
            name = f"{str(meta.get('fingerprint', 'model'))[:12]}-{split}-{backend}"
            searched = evaluate_search_pipeline(
                model,
                image_set,
                pipeline,
                Path(workdir) if workdir else default_cache_dir() / "evaluate" / name,
                candidates=sorted(set(candidates)),
                progress=not no_progress,
            )
    except (TeranError, FileNotFoundError) as exc:  # FileNotFoundError: data or model files
        raise click.ClickException(str(exc)) from None
    n_images, n_captions = metrics["n_images"] // metrics["folds"], metrics["n_captions"] // metrics["folds"]
    chance = chance_recall(n_images, n_captions, n_captions / max(1, n_images))
    payload = {"checkpoint": checkpoint, "data": data.path, "split": split, **metrics, "chance": chance}
    if searched is not None:
        payload["pipeline"] = searched
    if as_json:
        emit_json(payload)
        return
    click.echo(
        f"{checkpoint} on {data.path or (data.format + ' (default)')} [{split}], protocol {protocol}: {n_images} images, {n_captions} captions"
    )
    for direction, label in (
        ("i2t", "sentence retrieval (image -> text)"),
        ("t2i", "image retrieval (text -> image)"),
    ):
        values = "  ".join(
            f"R@{k} {metrics[f'{direction}_r{k}']:6.2f} (chance {chance[f'{direction}_r{k}']:.2f})"
            for k in (1, 5, 10)
        )
        click.echo(f"{label:36s} {values}")
    click.echo(f"RSUM {metrics['rsum']:.2f}")
    if searched is not None:
        click.echo(
            f"image retrieval through the search pipeline ({searched['ingest']['backend']} backend, "
            f"{searched['queries']} queries):"
        )
        rows = [("exact scan", searched["exact"])]
        rows += [(f"recall {n} + rerank", values) for n, values in searched["candidates"].items()]
        for label, values in rows:
            recalls = "  ".join(f"R@{k} {values[f't2i_r{k}']:6.2f}" for k in (1, 5, 10))
            fidelity = f"  top-10 overlap with exact {values['fidelity_at_10']:.3f}" if "fidelity_at_10" in values else ""
            click.echo(f"  {label:22s} {recalls}{fidelity}")
