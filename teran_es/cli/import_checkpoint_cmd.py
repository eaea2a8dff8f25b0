"""``teran-es import-checkpoint``: turn one of the authors' TERAN .pth files into our checkpoint."""

from __future__ import annotations

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError


@click.command("import-checkpoint")
@click.argument("their_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("ours_dir", type=click.Path(file_okay=False))
@click.option(
    "--text-backbone",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Local BERT directory (e.g. bert-base-uncased) giving their text model's config and tokenizer.",
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Local directory of a tokenizer only (when --text-backbone is not given).",
)
@click.option(
    "--visual-heads", type=int, default=4, show_default=True, help="Attention heads of their visual layers."
)
@click.option(
    "--reasoning-heads",
    type=int,
    default=4,
    show_default=True,
    help="Attention heads of their shared layers.",
)
@click.option(
    "--no-strict", "lenient", is_flag=True, help="Import even when some of their tensors have no counterpart."
)
@json_option
def import_checkpoint(
    their_file: str,
    ours_dir: str,
    text_backbone: str | None,
    tokenizer_path: str | None,
    visual_heads: int,
    reasoning_heads: int,
    lenient: bool,
    as_json: bool,
) -> None:
    """Import THEIR_FILE (the authors' .pth; trusted files only) into the checkpoint OURS_DIR."""
    from teran_es.model.checkpoint import model_fingerprint, save_checkpoint
    from teran_es.model.importer import import_their_checkpoint

    try:
        model, report = import_their_checkpoint(
            their_file,
            text_backbone=text_backbone,
            tokenizer_path=tokenizer_path,
            visual_heads=visual_heads,
            reasoning_heads=reasoning_heads,
            strict=not lenient,
        )
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    out = save_checkpoint(model, ours_dir, extra={"imported": report.as_dict()})
    payload = {"checkpoint": str(out), "fingerprint": model_fingerprint(model), **report.as_dict()}
    if as_json:
        emit_json(payload)
        return
    click.echo(f"imported {report.mapped} tensors from {their_file} into {out}")
    click.echo(f"ignored {len(report.ignored)} unused tensors; {len(report.unexpected)} without counterpart")
    for note in report.notes:
        click.echo(f"note: {note}")
