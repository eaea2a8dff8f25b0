"""``teran-es elasticsearch start|stop|status|url``: a local server (one node, or a cluster with
``--nodes N``) for development and tests."""

from __future__ import annotations

import dataclasses
import sys

import click

from teran_es.cli.common import emit_json, json_option
from teran_es.errors import TeranError
from teran_es.server import cluster, process
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
@click.option("--heap", default=None,
              help=f"Maximum JVM heap per node, e.g. 512m or 1g [default: {process.DEFAULT_HEAP} for one node, "
              f"{cluster.DEFAULT_CLUSTER_HEAP} per node of a cluster].")
@click.option("--nodes", type=int, default=1, show_default=True,
              help="Nodes: 1 is the single-node server; 2 or more start a local cluster (ports --port, --port+1, ...).")
@click.option("--timeout", type=float, default=process.DEFAULT_START_TIMEOUT, show_default=True,
              help="Seconds to wait for the cluster to become healthy.")
@json_option
def start(version: str, port: int, heap: str | None, nodes: int, timeout: float, as_json: bool) -> None:
    """Start the local server (a no-op that prints the URL when it already runs).

    With --nodes N (N >= 2), a real N-node cluster on 127.0.0.1 from the same distribution:
    one data and log directory per node, every node master-eligible and holding data.
    """
    if nodes < 1:
        raise click.BadParameter(f"{nodes} nodes: give 1 (a single node) or more (a cluster)", param_hint="--nodes")
    try:
        if nodes == 1:
            state, started = process.start(version=version, port=port, heap=heap or process.DEFAULT_HEAP,
                                           timeout=timeout, log=_info)
        else:
            state, started = cluster.start_cluster(nodes, version=version, port=port,
                                                   heap=heap or cluster.DEFAULT_CLUSTER_HEAP,
                                                   timeout=timeout, log=_info)
    except TeranError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        emit_json({"started": started, **dataclasses.asdict(state)})
        return
    what = f"a {len(state.nodes)}-node cluster" if state.nodes else f"pid {state.pid}"
    if started:
        _info(f"Elasticsearch {state.version} is up ({what}); logs in {state.logs_dir}")
    else:
        _info(f"Elasticsearch {state.version} is already running ({what})")
    for node in state.nodes:
        _info(f"  {node.name}: {node.url} (pid {node.pid})")
    click.echo(",".join(n.url for n in state.nodes) or state.url)


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
    elif state.nodes:
        pids = ", ".join(f"{n.name} pid {n.pid}" for n in state.nodes)
        _info(f"stopped the {len(state.nodes)}-node Elasticsearch {state.version} cluster ({pids})")
    else:
        _info(f"stopped Elasticsearch {state.version} (pid {state.pid}) at {state.url}")


@elasticsearch.command()
@json_option
def status(as_json: bool) -> None:
    """Say whether the local server runs (pid alive and HTTP answering); for a cluster, node by
    node with the cluster's health and master. Exit code 3 when not running."""
    nodes = cluster.cluster_status()
    if nodes is not None:
        _cluster_status(nodes, as_json)
        return
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


def _cluster_status(found: cluster.ClusterStatus, as_json: bool) -> None:
    if as_json:
        emit_json({**dataclasses.asdict(found), "running": found.running})
    else:
        click.echo(f"cluster: health {found.health or 'unknown (no node answers)'}, "
                   f"{found.number_of_nodes if found.number_of_nodes is not None else '?'} of {len(found.nodes)} "
                   f"nodes joined, master {found.master or 'none'}")
        for node in found.nodes:
            state = "running" if node.answers else ("not answering" if node.alive else "stopped")
            click.echo(f"  {node.name}: {state} at {node.url} (pid {node.pid}"
                       f"{', ' + node.version if node.version else ''})")
    if not found.running:
        sys.exit(EXIT_NOT_RUNNING)


@elasticsearch.command()
def url() -> None:
    """Print the local server's URL (for scripts; a cluster's live nodes, comma-separated); fail when it does not run."""
    found = process.local_url()
    if found is None:
        raise click.ClickException("no local Elasticsearch is running; start one with `teran-es elasticsearch start`")
    click.echo(found)
