"""Options and helpers shared by the verbs (config loading, JSON output, errors)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from teran_es.config import ConfigError, PipelineConfig, load_config

pipeline_option = click.option(
    "--pipeline",
    "pipeline_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Pipeline TOML file (pipelines/NAME.toml). Defaults are used when omitted.",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="Override one setting of the pipeline, e.g. --set search.candidates=300 (repeatable).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def load_pipeline(
    pipeline_path: str | None,
    overrides: tuple[str, ...],
    checkpoint: str | None = None,
    backend: str | None = None,
) -> PipelineConfig:
    """Load the pipeline config with the verb's --set, --checkpoint and --backend applied,
    turning schema errors into a clean CLI error."""
    try:
        config = load_config(pipeline_path, list(overrides))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if checkpoint:
        config.checkpoint = checkpoint
    if backend:
        config.index.backend = backend
    return config


def emit_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def os_error_message(exc: OSError) -> str:
    """``strerror (path)`` of a system error, e.g. "No space left on device (/data/work/store)"."""
    path = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{path}"
