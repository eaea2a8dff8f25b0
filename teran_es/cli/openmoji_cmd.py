"""``teran-es openmoji``: build the OpenMoji collection into the cache, or describe it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache directory (default: $TERAN_ES_CACHE or ~/.cache/teran-es).",
)


@click.group()
def openmoji() -> None:
    """The OpenMoji collection: ~4,000 emoji drawings with captions and fixed splits."""


size_option = click.option(
    "--size", type=click.IntRange(min=8), default=96, show_default=True, help="PNG width and height."
)
limit_option = click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Keep only N images (a stable sample)."
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")


@openmoji.command()
@size_option
@limit_option
@seed_option
@click.option("--force", is_flag=True, help="Rebuild even when an up-to-date collection exists.")
@cache_dir_option
@json_option
def build(size: int, limit: int | None, seed: int, force: bool, cache_dir: str | None, as_json: bool) -> None:
    """Render the drawings and write the collection (skipped when already up to date)."""
    from teran_es.collections.openmoji import build_openmoji, read_manifest

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        directory = build_openmoji(
            cache_dir=cache_dir, size=size, seed=seed, limit=limit, progress=not as_json, force=force
        )
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    _report(directory, read_manifest(directory), as_json)


@openmoji.command()
@size_option
@limit_option
@seed_option
@cache_dir_option
@json_option
def info(size: int, limit: int | None, seed: int, cache_dir: str | None, as_json: bool) -> None:
    """Where the collection is and what it holds (the build with these settings: each
    variant has its own directory)."""
    from teran_es.collections.openmoji import collection_dir_for, installed_source, read_manifest

    try:
        directory = collection_dir_for(installed_source().version, cache_dir, size, seed, limit)
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        manifest = read_manifest(directory)
    except FileNotFoundError:
        raise click.ClickException(f"not built yet: {directory} (run `teran-es openmoji build`)") from None
    _report(directory, manifest, as_json)


def _report(directory: Path, manifest: dict[str, Any], as_json: bool) -> None:
    summary = {
        "path": str(directory),
        "source": manifest["source"],
        "size": manifest["size"],
        "seed": manifest["seed"],
        "counts": manifest["counts"],
        "skipped": manifest["skipped_counts"],
        "built_at": manifest["built_at"],
        "build_seconds": manifest["build_seconds"],
        "sources": manifest["sources"],
        "attribution": manifest["attribution"],
    }
    if as_json:
        emit_json(summary)
        return
    counts = manifest["counts"]
    click.echo(f"OpenMoji collection: {directory}")
    click.echo(f"  source:   {manifest['source']}, {manifest['size']}x{manifest['size']} PNG")
    click.echo(
        f"  images:   {counts['total']} (train {counts['train']}, val {counts['val']}, test {counts['test']}; "
        f"seed {manifest['seed']})"
    )
    skipped = ", ".join(f"{n} {reason}" for reason, n in manifest["skipped_counts"].items()) or "none"
    click.echo(f"  skipped:  {skipped}")
    click.echo(
        f"  captions: {'; '.join(manifest['sources'][k] for k in manifest['sources'] if k != 'images')}"
    )
    click.echo(f"  built:    {manifest['built_at']} in {manifest['build_seconds']} s")
    click.echo(f"  {manifest['attribution']}")
