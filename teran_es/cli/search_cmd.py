"""``teran-es search "a few words"``: candidates from the index, exact TERAN rerank."""

from __future__ import annotations

import click

from teran_es.cli.common import (
    emit_json,
    json_option,
    load_pipeline,
    os_error_message,
    pipeline_option,
    set_option,
)
from teran_es.errors import TeranError
from teran_es.index import BACKENDS


@click.command()
@click.argument("query", nargs=-1, required=True)
@pipeline_option
@set_option
@click.option("--checkpoint", default=None, help="Trained model directory (overrides the pipeline's).")
@click.option("--k", "k", type=int, default=None, help="Hits to return (default: search.k).")
@click.option("--candidates", type=int, default=None, help="Images recalled from the index and reranked.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None, help="Index backend.")
@click.option("--exact", is_flag=True, help="Score every image exactly (brute-force scan) instead.")
@click.option("--device", default=None, help="Rerank device: cpu, cuda, auto.")
@json_option
def search(query, pipeline_path, overrides, checkpoint, k, candidates, backend, exact, device, as_json):
    """Search the ingested collection for QUERY."""
    from teran_es.searcher import QueryError, Searcher

    config = load_pipeline(pipeline_path, overrides, checkpoint=checkpoint, backend=backend)
    text = " ".join(query)
    try:
        searcher = Searcher.open(config, device=device)
        try:
            result = searcher.search(text, k=k, candidates=candidates, exact=exact)
        finally:
            searcher.close()
    except QueryError as exc:
        raise click.UsageError(str(exc)) from None
    except (TeranError, FileNotFoundError) as exc:  # FileNotFoundError: model files
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read the collection: {os_error_message(exc)}") from None
    if as_json:
        emit_json(result.to_dict())
        return
    mode = "exact scan" if exact else f"{result.candidates} candidates reranked"
    click.echo(f"{text!r}: {len(result.hits)} hits ({mode}, {sum(result.timings.values()) * 1000:.1f} ms)")
    if result.message:
        click.echo(result.message)
    for rank, hit in enumerate(result.hits, 1):
        extra = f"  {hit.caption}" if hit.caption else ""
        click.echo(f"{rank:3d}. {hit.score:8.4f}  {hit.id}{extra}")
