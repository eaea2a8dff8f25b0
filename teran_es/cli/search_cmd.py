"""``teran-es search "a few words"``: candidates from the index, exact TERAN rerank.

``teran-es search --image PATH`` (or ``--image-id ID``) goes the other way: the collection's
captions that align best with an image, by an exact scan over all of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
@click.argument("query", nargs=-1, required=False)
@pipeline_option
@set_option
@click.option("--checkpoint", default=None, help="Trained model directory (overrides the pipeline's).")
@click.option("--k", "k", type=int, default=None, help="Hits to return (default: search.k).")
@click.option("--candidates", type=int, default=None, help="Images recalled from the index and reranked.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None, help="Index backend.")
@click.option("--exact", is_flag=True, help="Score every image exactly (brute-force scan) instead.")
@click.option("--device", default=None, help="Rerank device: cpu, cuda, auto.")
@click.option(
    "--image",
    "image_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Search by image: the collection's captions that align best with this image file.",
)
@click.option("--image-id", default=None, help="Search by image: an image of the collection, by id.")
@json_option
def search(
    query, pipeline_path, overrides, checkpoint, k, candidates, backend, exact, device, image_path, image_id, as_json
):
    """Search the ingested collection for QUERY (or, with --image / --image-id, its captions for an image)."""
    from teran_es.searcher import QueryError, Searcher

    config = load_pipeline(pipeline_path, overrides, checkpoint=checkpoint, backend=backend)
    if image_path or image_id:
        if query or (image_path and image_id):
            raise click.UsageError("give words to search for, or --image, or --image-id: one of them")
        search_captions(config, image_path, image_id, k, device, as_json)
        return
    if not query:
        raise click.UsageError("missing the words to search for (or --image PATH to search by image)")
    text = " ".join(query)
    with _search_errors(QueryError):
        searcher = Searcher.open(config, device=device)
        try:
            result = searcher.search(text, k=k, candidates=candidates, exact=exact)
        finally:
            searcher.close()
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


@contextmanager
def _search_errors(*usage_errors: type[Exception]) -> Iterator[None]:
    """Errors of a search as the command reports them: ``usage_errors`` (a bad query) as usage
    errors; the library's own and missing model files as plain errors; other OS errors as an
    unreadable collection."""
    try:
        yield
    except usage_errors as exc:
        raise click.UsageError(str(exc)) from None
    except (TeranError, FileNotFoundError) as exc:  # FileNotFoundError: model files
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read the collection: {os_error_message(exc)}") from None


def search_captions(config, image_path: str | None, image_id: str | None, k: int | None, device, as_json) -> None:
    """The image -> captions direction of ``teran-es search``."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from teran_es.catalog import Catalog
    from teran_es.features.images import ImageDecodeError
    from teran_es.image_search import CaptionSearch, ImageQueryError, UnknownImageError
    from teran_es.searcher import Searcher

    k = config.search.k if k is None else k
    if k < 1:
        raise click.UsageError("--k must be at least 1")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            click.echo(f"encoding the collection's {total:,} captions, once ...", err=True)
            bar = tqdm(total=total, desc="captions", unit="caption", disable=as_json)
        bar.update(done - bar.n)

    with _search_errors(UnknownImageError, ImageDecodeError, ImageQueryError):
        searcher = Searcher.open(config, device=device)
        try:
            captions = CaptionSearch(searcher, Catalog.open(config))
            captions.bank(progress)
            if bar is not None:
                bar.close()
            if image_id:
                result = captions.by_id(image_id, k)
            else:
                path = Path(image_path)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise click.UsageError(f"cannot read --image: {os_error_message(exc)}") from None
                result = captions.by_file(data, k, path.name)
        finally:
            searcher.close()
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"{result.image}: best of {result.captions:,} captions ({sum(result.timings.values()) * 1000:.1f} ms)")
    for rank, hit in enumerate(result.hits, 1):
        click.echo(f"{rank:3d}. {hit.score:8.4f}  {hit.image_id}  {hit.caption}")
