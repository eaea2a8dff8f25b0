"""The ``teran-es`` command. One module per verb; verbs load lazily so that a quick
command (``teran-es elasticsearch status``) does not pay for importing torch."""

from __future__ import annotations

import importlib
import sys

import click

# verb -> "module:attribute" (a click command). Add a line here when you add a verb.
VERBS: dict[str, str] = {
    "elasticsearch": "teran_es.cli.elasticsearch_cmd:elasticsearch",
    "train": "teran_es.cli.train_cmd:train",
    "ingest": "teran_es.cli.ingest_cmd:ingest",
    "search": "teran_es.cli.search_cmd:search",
    "demo": "teran_es.cli.demo_cmd:demo",
    "evaluate": "teran_es.cli.evaluate_cmd:evaluate",
    "make-synthetic": "teran_es.cli.synthetic_cmd:make_synthetic",
    "import-checkpoint": "teran_es.cli.import_checkpoint_cmd:import_checkpoint",
    "reproduce": "teran_es.cli.reproduce_cmd:reproduce",
    "openmoji": "teran_es.cli.openmoji_cmd:openmoji",
    "serve": "teran_es.cli.serve_cmd:serve",
    "emoji": "teran_es.cli.emoji_cmd:emoji",
    "query-bank": "teran_es.cli.query_bank_cmd:query_bank",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(VERBS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in VERBS:
            module_name, attr = VERBS[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="teran-es")
def cli() -> None:
    """teran-es: type a few words, get the matching images out of millions."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; callable from tests with an argv list."""
    try:
        cli.main(args=argv, prog_name="teran-es", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m teran_es.cli`
    sys.exit(main())
