"""``teran-es make-synthetic``: write a seeded synthetic dataset and a tiny text backbone."""

from __future__ import annotations

import click

from teran_es.cli.common import emit_json, json_option, os_error_message


@click.command("make-synthetic")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", "train_images", type=int, default=2000, show_default=True, help="Training images.")
@click.option("--val-images", type=int, default=200, show_default=True)
@click.option("--test-images", type=int, default=200, show_default=True)
@click.option("--feature-dim", type=int, default=32, show_default=True, help="Region feature size.")
@click.option("--noise", type=float, default=0.35, show_default=True, help="Region noise (higher = harder).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--no-text-backbone", is_flag=True, help="Do not write the tiny random BERT (OUT/text-backbone)."
)
@json_option
def make_synthetic(
    out: str,
    train_images: int,
    val_images: int,
    test_images: int,
    feature_dim: int,
    noise: float,
    seed: int,
    no_text_backbone: bool,
    as_json: bool,
) -> None:
    """Write OUT/synthetic.parquet (train/val/test, 5 captions per image) and OUT/text-backbone/."""
    from teran_es.features.synthetic import make_synthetic_dataset

    if min(train_images, val_images, test_images) < 0 or feature_dim < 1:
        raise click.UsageError("image counts must be >= 0 and --feature-dim >= 1")
    try:
        made = make_synthetic_dataset(
            out,
            train_images=train_images,
            val_images=val_images,
            test_images=test_images,
            feature_dim=feature_dim,
            seed=seed,
            noise=noise,
            text_backbone=not no_text_backbone,
        )
    except OSError as exc:  # OUT cannot be written (a file in the way, no permission, a full disk)
        raise click.ClickException(f"cannot write the dataset: {os_error_message(exc)}") from None
    payload = {
        "data": str(made.data_path),
        "text_backbone": str(made.text_backbone) if made.text_backbone else None,
        "images": made.counts,
        "feature_dim": feature_dim,
        "seed": seed,
    }
    if as_json:
        emit_json(payload)
        return
    counts = ", ".join(f"{n} {split}" for split, n in made.counts.items())
    click.echo(f"wrote {made.data_path} ({counts} images)")
    if made.text_backbone:
        click.echo(f"wrote {made.text_backbone} (tiny random BERT for model.text_backbone)")
