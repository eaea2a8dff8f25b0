"""``teran-es demo``: see teran-es find things for words, with no data of your own."""

from __future__ import annotations

import sys

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError


@click.command()
@click.option(
    "--collection",
    type=click.Choice(["openmoji", "synthetic"]),
    default="openmoji",
    show_default=True,
    help="Which built-in collection to search: ~4,000 OpenMoji drawings, or seeded synthetic features.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache directory (default: $TERAN_ES_CACHE or ~/.cache/teran-es).",
)
@click.option("--query", "queries", multiple=True, help="Your own query (repeatable); default: a few examples.")
@click.option("--k", "k", default=5, show_default=True, help="Hits per query.")
@click.option("--serve", "serve_after", is_flag=True, help="Then serve the collection's search page (teran-es serve).")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --serve: the address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="With --serve: the port.")
@json_option
def demo(collection, queries, k, cache_dir, serve_after, host, port, as_json):
    """Build a collection, take (or train, once) a model, ingest into the embedded index, and search it.

    The OpenMoji demo ingests all ~4,000 drawings (every split: the whole collection is what
    you search) and writes an HTML and a PNG contact sheet of the hits. With --serve it then
    serves the search page over the collection (Ctrl-C stops).
    """
    if serve_after and collection != "openmoji":
        raise click.UsageError("--serve shows images: it goes with --collection openmoji")
    from pathlib import Path

    from teran_es.demo import run_openmoji_demo, run_synthetic_demo

    def say(message: str) -> None:
        click.echo(message, err=True)

    cache = Path(cache_dir) if cache_dir else None
    try:
        if collection == "openmoji":
            result = run_openmoji_demo(list(queries) or None, k=k, cache_dir=cache, say=say, progress=not as_json)
        else:
            result = run_synthetic_demo(list(queries) or None, k=k, cache_dir=cache, say=say)
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(result.to_dict())
        sys.stdout.flush()
        if serve_after:
            serve_demo(result.workdir, host, port, say)
        return
    if any(r.bank_normalised for r in result.results):
        click.echo("\nscores: the exact alignment less each drawing's query-bank normaliser (its soft maximum "
                   "over the model's bank of training captions; docs/generalisation.md)")
    for r in result.results:
        click.echo(f"\n{r.query!r}  ({r.candidates} candidates reranked, {sum(r.timings.values()) * 1000:.0f} ms)")
        for rank, hit in enumerate(r.hits, 1):
            click.echo(f"  {rank}. {hit.score:7.3f}  {hit.id:<22s} {hit.caption or ''}")
    if result.contact_sheet:
        click.echo(f"\ncontact sheet: {result.contact_sheet}")
    if result.contact_sheet_png:
        click.echo(f"contact sheet (PNG): {result.contact_sheet_png}")
    if result.attribution:
        click.echo(result.attribution)
    sys.stdout.flush()
    if serve_after:
        serve_demo(result.workdir, host, port, say)


def serve_demo(workdir: str, host: str, port: int, say) -> None:
    """``teran-es serve`` over the demo's work directory (its config.toml is the pipeline)."""
    from pathlib import Path

    from teran_es.cli.serve_cmd import pipeline_for_workdir
    from teran_es.demo import committed_openmoji_checkpoint
    from teran_es.web.run import serve

    # the model the demo searched with: the committed one, else the one it trained (next to workdir)
    checkpoint = committed_openmoji_checkpoint() or Path(workdir).parent / "train" / "best"
    config = pipeline_for_workdir(None, workdir, (), str(checkpoint), None)
    try:
        serve(config, host=host, port=port, say=say)
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc}") from None
