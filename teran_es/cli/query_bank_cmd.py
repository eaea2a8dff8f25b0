"""``teran-es query-bank``: give a trained model a query bank (or take it away)."""

from __future__ import annotations

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError
from teran_es.model.bank import DEFAULT_BANK_SIZE, DEFAULT_BETA


@click.command("query-bank")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--beta", type=float, default=DEFAULT_BETA, show_default=True,
              help="Strength of the normaliser: towards the bank's mean score as it nears 0, its maximum as it grows.")
@click.option("--size", type=click.IntRange(min=0), default=DEFAULT_BANK_SIZE, show_default=True,
              help="How many distinct training captions (a seeded sample; 0 = all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--data", "data_path", default=None,
              help="The emoji collection the model was trained on (default: the checkpoint's data.path).")
@click.option("--captions", "captions_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Take the training captions from this file (UTF-8, one per line) instead.")
@click.option("--remove", is_flag=True, help="Remove the checkpoint's bank: search then ranks by the plain score.")
@json_option
def query_bank(checkpoint: str, beta: float, size: int, seed: int, data_path: str | None,
               captions_file: str | None, remove: bool, as_json: bool) -> None:
    """Write a query bank into CHECKPOINT: training captions against which every image is scored
    once, at ingest; search subtracts each image's soft maximum over them (docs/generalisation.md).

    Collections ingested with the model before get their normalisers at their next
    `teran-es ingest`; until then search computes them as queries need them."""
    from teran_es.bank_builder import attach_bank, bank_from_lines, emoji_training_bank

    if remove and (captions_file or data_path):
        raise click.UsageError("--remove takes no captions (--captions, --data)")
    if captions_file and data_path:
        raise click.UsageError("give the captions with --captions or --data, not both")
    try:
        if remove:
            path = attach_bank(checkpoint, None)
            payload = {"checkpoint": checkpoint, "removed": str(path)}
        else:
            if captions_file:
                with open(captions_file, encoding="utf-8") as fh:
                    bank = bank_from_lines(fh, beta, size, seed, source=f"{captions_file}, seed {seed}")
            else:
                bank = emoji_training_bank(checkpoint, beta, size, seed, data_path)
            path = attach_bank(checkpoint, bank)
            payload = {"checkpoint": checkpoint, "file": str(path), "texts": len(bank.texts), "beta": bank.beta,
                       "source": bank.source, "fingerprint": bank.fingerprint}
    except (TeranError, FileNotFoundError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json(payload)
    elif remove:
        click.echo(f"removed the query bank of {checkpoint}")
    else:
        click.echo(f"wrote {payload['texts']} texts at beta {payload['beta']:g} to {path} ({bank.source})")
