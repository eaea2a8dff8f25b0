"""``teran-es serve``: the search page and the JSON API over one ingested collection."""

from __future__ import annotations

from pathlib import Path

import click

from teran_es.cli.common import load_pipeline, os_error_message, pipeline_option, set_option
from teran_es.errors import TeranError
from teran_es.index import BACKENDS


def pipeline_for_workdir(pipeline_path, workdir, overrides, checkpoint, backend):
    """The pipeline of --pipeline, or of the work directory's own config.toml (written by the
    first ingest) when only --workdir is given; --workdir always wins as the work directory."""
    if workdir and not pipeline_path:
        saved = Path(workdir) / "config.toml"
        if not saved.is_file():
            raise click.UsageError(f"{saved} is missing: is {workdir} a work directory that `teran-es ingest` wrote?")
        pipeline_path = str(saved)
    config = load_pipeline(pipeline_path, overrides, checkpoint=checkpoint, backend=backend)
    if workdir:
        config.workdir = str(Path(workdir).resolve())
    return config


@click.command()
@pipeline_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Work directory of an ingested collection (its config.toml is the pipeline when --pipeline is omitted).",
)
@set_option
@click.option("--checkpoint", default=None, help="Trained model directory (overrides the pipeline's).")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None, help="Index backend.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--device", default=None, help="Query encoding and rerank device: cpu, cuda, auto.")
@click.option(
    "--prepare-captions/--lazy-captions",
    default=True,
    show_default=True,
    help="Encode the collection's captions for search by image in the background at start "
    "(once per work directory), or on the first such request.",
)
def serve(pipeline_path, workdir, overrides, checkpoint, backend, host, port, device, prepare_captions):
    """Serve a search page and a JSON API (/api/search, /api/images/..., /api/health; docs at /docs)."""
    from teran_es.web.run import serve as run

    config = pipeline_for_workdir(pipeline_path, workdir, overrides, checkpoint, backend)
    try:
        run(config, host=host, port=port, device=device, say=lambda m: click.echo(m, err=True),
            prepare_captions=prepare_captions)
    except (TeranError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {os_error_message(exc)}") from None
