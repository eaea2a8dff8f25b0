"""``teran-es elasticsearch start|stop|status|url``: a local single-node server for dev and tests."""

from __future__ import annotations

import dataclasses
import sys

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError
from teran_es.server import process
from teran_es.server.install import ELASTICSEARCH_VERSION

# `status` exit codes follow the LSB convention scripts know from `systemctl status`.
EXIT_NOT_RUNNING = 3


def _info(message: str) -> None:
    click.echo(message, err=True)


@click.group("elasticsearch")
def elasticsearch() -> None:
    """Run a real local Elasticsearch (single node, 127.0.0.1, security off) for development and tests.

    Data, logs and the server itself live in the cache directory ($TERAN_ES_CACHE, else
    ~/.cache/teran-es). To use your own cluster instead, set ELASTICSEARCH_URL.
    """


@elasticsearch.command()
@click.option("--version", "version", default=ELASTICSEARCH_VERSION, show_default=True,
              help="Elasticsearch version (fetched from Maven Central once).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="HTTP port on 127.0.0.1; 0 picks a free one.")
@click.option("--heap", default=process.DEFAULT_HEAP, show_default=True, help="Maximum JVM heap, e.g. 512m or 1g.")
@click.option("--timeout", type=float, default=process.DEFAULT_START_TIMEOUT, show_default=True,
              help="Seconds to wait for the cluster to become healthy.")
@json_option
def start(version: str, port: int, heap: str, timeout: float, as_json: bool) -> None:
    """Start the local server (a no-op that prints the URL when it already runs)."""
    try:
        state, started = process.start(version=version, port=port, heap=heap, timeout=timeout, log=_info)
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json({"started": started, **dataclasses.asdict(state)})
        return
    if started:
        _info(f"Elasticsearch {state.version} is up (pid {state.pid}); logs in {state.logs_dir}")
    else:
        _info(f"Elasticsearch {state.version} is already running (pid {state.pid})")
    click.echo(state.url)


@elasticsearch.command()
@click.option("--timeout", type=float, default=process.DEFAULT_STOP_TIMEOUT, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
def stop(timeout: float) -> None:
    """Stop the local server started by `start` (by its recorded pid)."""
    try:
        state = process.stop(timeout=timeout)
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    if state is None:
        _info("no local Elasticsearch was running")
    else:
        _info(f"stopped Elasticsearch {state.version} (pid {state.pid}) at {state.url}")


@elasticsearch.command()
@json_option
def status(as_json: bool) -> None:
    """Say whether the local server runs (pid alive and HTTP answering). Exit code 3 when not."""
    current = process.status()
    if as_json:
        emit_json(dataclasses.asdict(current))
    elif current.running:
        click.echo(f"running: Elasticsearch {current.version} at {current.url} (pid {current.pid}, "
                   f"health {current.health})")
    elif current.pid_alive:
        click.echo(f"starting or unhealthy: pid {current.pid} runs but {current.url} does not answer; "
                   f"see {current.console_log}")
    else:
        click.echo("stopped")
    if not current.running:
        sys.exit(EXIT_NOT_RUNNING)


@elasticsearch.command()
def url() -> None:
    """Print the local server's URL (for scripts); fail when it does not run."""
    found = process.local_url()
    if found is None:
        raise click.ClickException("no local Elasticsearch is running; start one with `teran-es elasticsearch start`")
    click.echo(found)
