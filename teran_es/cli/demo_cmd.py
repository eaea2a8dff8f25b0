"""``teran-es demo``: see teran-es find things for words, with no data of your own."""

from __future__ import annotations

import sys

import click

from teran_es.cli.common import emit_json, json_option


@click.command()
@click.option(
    "--collection",
    type=click.Choice(["synthetic"]),
    default="synthetic",
    show_default=True,
    help="Which built-in collection to search.",
)
@click.option("--query", "queries", multiple=True, help="Your own query (repeatable); default: a few examples.")
@click.option("--k", "k", default=5, show_default=True, help="Hits per query.")
@json_option
def demo(collection, queries, k, as_json):
    """Build a collection, train (once, cached), ingest into the embedded index, and search it."""
    from teran_es.demo import run_synthetic_demo

    def say(message: str) -> None:
        click.echo(message, err=True)

    result = run_synthetic_demo(list(queries) or None, k=k, say=say)
    if as_json:
        emit_json(result.to_dict())
        return
    for r in result.results:
        click.echo(f"\n{r.query!r}  ({r.candidates} candidates reranked, {sum(r.timings.values()) * 1000:.0f} ms)")
        for rank, hit in enumerate(r.hits, 1):
            click.echo(f"  {rank}. {hit.score:7.3f}  {hit.id:<14s} {hit.caption or ''}")
    if result.contact_sheet:
        click.echo(f"\ncontact sheet: {result.contact_sheet}")
    if result.attribution:
        click.echo(result.attribution)
    sys.stdout.flush()
