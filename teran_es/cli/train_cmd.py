"""``teran-es train``: train TERAN as a pipeline file says (continues an interrupted run)."""

from __future__ import annotations

import logging

import click

from teran_es.cli.common import emit_json, json_option, load_pipeline, pipeline_option, set_option
from teran_es.errors import TeranError


@click.command("train")
@pipeline_option
@set_option
@click.option("--restart", is_flag=True, help="Ignore the run's last checkpoint and start from scratch.")
@click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default="raise",
    show_default=True,
    help="What to do with a bad image in the data: stop, or log it and skip it.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
@json_option
def train(
    pipeline_path: str | None,
    overrides: tuple[str, ...],
    restart: bool,
    on_error: str,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Train TERAN on the pipeline's data; checkpoints go to train.output_dir (last/ and best/)."""
    from teran_es.training import train as run_training

    config = load_pipeline(pipeline_path, overrides)
    if not as_json:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run_training(config, restart=restart, progress=not no_progress, on_error=on_error)
    except (TeranError, FileNotFoundError) as exc:  # FileNotFoundError: data or text backbone files
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(
        f"trained {result.epochs_completed} epochs ({result.iterations} iterations) in {result.seconds:.1f}s; "
        f"best validation RSUM {result.best_rsum:.2f} at epoch {result.best_epoch}"
    )
    click.echo(f"checkpoints: {result.output_dir / 'best'} (best), {result.output_dir / 'last'} (last)")
