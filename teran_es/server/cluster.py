"""A local multi-node Elasticsearch cluster on 127.0.0.1: ``teran-es elasticsearch start --nodes N``.

Every node runs from the same unpacked distribution as the single-node server, with its own
data, log and temporary directories (``<cache>/elasticsearch/cluster-<version>/node-<i>``),
its own HTTP and transport ports, the transport ports of all nodes as ``discovery.seed_hosts``
and all node names as ``cluster.initial_master_nodes`` (every node may be elected master and
holds data). The cluster is recorded in the same state file as a single server, with one
``NodeState`` per node, so ``status``, ``local_url`` and ``stop`` of ``process.py`` cover it;
``cluster_status`` reports node by node, ``restart_node`` starts one stopped node again (the
fault tests kill nodes). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from teran_es.server.errors import LocalServerError
from teran_es.server.health import http_get_json
from teran_es.server.install import ELASTICSEARCH_VERSION, install
from teran_es.server.java import JavaHome, find_java, required_java_major
from teran_es.server.process import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    _drop_root_prefix,
    _heap_options,
    _locked,
    _now,
    _process_start_ticks,
    _running_state,
    _terminate,
    free_port,
    log_tail,
    pid_alive,
    status,
)
from teran_es.server.state import NodeState, ServerPaths, ServerState, read_state, server_paths, write_state

CLUSTER_NAME = "teran-es-cluster"
DEFAULT_CLUSTER_HEAP = "512m"
MAX_NODES = 9


def node_names(count: int) -> list[str]:
    """``["node-1", ..., "node-<count>"]``; ``count`` must be 1..MAX_NODES."""
    if not 1 <= count <= MAX_NODES:
        raise LocalServerError(f"a local cluster has 1 to {MAX_NODES} nodes, not {count}; use --nodes 1 to {MAX_NODES}")
    return [f"node-{i}" for i in range(1, count + 1)]


def node_settings(
    node: NodeState, all_nodes: Sequence[NodeState], cluster_name: str = CLUSTER_NAME
) -> dict[str, str]:
    """The ``-E`` settings of one node of the cluster made of ``all_nodes`` (pure)."""
    return {
        "cluster.name": cluster_name,
        "node.name": node.name,
        "network.host": "127.0.0.1",
        "http.port": str(node.http_port),
        "transport.port": str(node.transport_port),
        "discovery.seed_hosts": ",".join(f"127.0.0.1:{n.transport_port}" for n in all_nodes),
        # Read only when the cluster forms for the first time (an empty data directory).
        "cluster.initial_master_nodes": ",".join(n.name for n in all_nodes),
        "path.data": node.data_dir,
        "path.logs": node.logs_dir,
        "xpack.security.enabled": "false",
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "true",
    }


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_http_ports(count: int, first: int, is_free: Callable[[int], bool] = port_is_free) -> list[int]:
    """HTTP ports for ``count`` nodes: ``first, first+1, ...`` when ``first`` is given (each must be
    free), else free ones picked by the system."""
    if first == 0:
        return [free_port() for _ in range(count)]
    ports = list(range(first, first + count))
    if ports[-1] > 65535:
        raise LocalServerError(f"ports {first}..{ports[-1]} do not all exist; choose a lower --port")
    taken = [p for p in ports if not is_free(p)]
    if taken:
        raise LocalServerError(
            f"port{'s' if len(taken) > 1 else ''} {', '.join(map(str, taken))} on 127.0.0.1 "
            f"{'are' if len(taken) > 1 else 'is'} taken; a {count}-node cluster needs ports {first}..{ports[-1]}. "
            "Choose another --port, or --port 0 to pick free ones."
        )
    return ports


@dataclass
class NodeStatus:
    """One node as ``cluster_status`` found it."""

    name: str
    url: str
    pid: int
    alive: bool
    answers: bool
    version: str | None


@dataclass
class ClusterStatus:
    """Node by node, plus what the cluster says of itself (asked of any node that answers)."""

    nodes: list[NodeStatus]
    health: str | None
    master: str | None
    number_of_nodes: int | None

    @property
    def running(self) -> bool:
        return self.health is not None


def cluster_status(cache_dir: str | os.PathLike[str] | None = None) -> ClusterStatus | None:
    """The recorded cluster's status, or None when the state file records no cluster."""
    state = read_state(cache_dir)
    if state is None or not state.nodes:
        return None
    nodes: list[NodeStatus] = []
    for node in state.nodes:
        alive = pid_alive(node.pid, node.pid_start_ticks)
        info = http_get_json(f"{node.url}/_nodes/_local?filter_path=nodes.*.version", timeout=10.0) if alive else None
        version = next((n.get("version") for n in (info or {}).get("nodes", {}).values()), None)
        nodes.append(NodeStatus(node.name, node.url, node.pid, alive, info is not None, version))
    health = master = count = None
    for node in nodes:
        if not node.answers:
            continue
        body = http_get_json(f"{node.url}/_cluster/health?timeout=1s", timeout=3.0)
        if body is None:
            continue
        health, count = body.get("status"), body.get("number_of_nodes")
        masters = http_get_json(f"{node.url}/_nodes/_master?filter_path=nodes.*.name", timeout=3.0)
        master = next((n.get("name") for n in (masters or {}).get("nodes", {}).values()), None)
        break
    return ClusterStatus(nodes, health, master, count)


def _cluster_formed(url: str, count: int) -> bool:
    body = http_get_json(f"{url}/_cluster/health?wait_for_nodes={count}&timeout=1s", timeout=5.0)
    return bool(body) and body.get("number_of_nodes") == count and body.get("status") in ("green", "yellow")


def _launch(
    java: JavaHome, home: Path, heap_opts: str, node: NodeState, settings: Mapping[str, str]
) -> subprocess.Popen:
    """Start one node detached (its own session and process group); its console goes to its log."""
    node_dir = Path(node.data_dir).parent
    tmp = node_dir / "tmp"
    for directory in (Path(node.data_dir), Path(node.logs_dir), tmp):
        directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(ES_JAVA_HOME=java.path, ES_JAVA_OPTS=heap_opts, ES_TMPDIR=str(tmp))
    env.pop("ES_PATH_CONF", None)
    cmd = [*_drop_root_prefix(), str(home / "bin" / "elasticsearch")]
    for key, value in settings.items():
        cmd += ["-E", f"{key}={value}"]
    with open(node.console_log, "ab") as console:
        console.write(f"\n=== teran-es start {_now()}: {' '.join(cmd)}\n".encode())
        console.flush()
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                cwd=node.logs_dir, env=env, start_new_session=True)


def start_cluster(
    nodes: int,
    version: str = ELASTICSEARCH_VERSION,
    port: int = 0,
    heap: str = DEFAULT_CLUSTER_HEAP,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    log: Callable[[str], None] = print,
) -> tuple[ServerState, bool]:
    """Start a local cluster of ``nodes`` nodes (or find the recorded one running).

    Returns its state (the first node's fields at the top, every node in ``nodes``) and whether
    it was started now. HTTP ports are ``port, port+1, ...`` (each must be free) or free ones
    when ``port`` is 0. It is recorded only once all nodes have joined and it is yellow or
    green; on failure every node started is stopped again.
    """
    names = node_names(nodes)
    paths = server_paths(cache_dir)
    with _locked(paths):
        state = _running_state(cache_dir, paths)
        if state is not None:
            if len(state.nodes or [state]) != nodes:
                raise LocalServerError(
                    f"a local Elasticsearch with {len(state.nodes) or 1} node(s) already runs at {status(cache_dir).url}; "
                    "stop it first (`teran-es elasticsearch stop`)"
                )
            return state, False
        heap_opts = _heap_options(heap)
        http_ports = choose_http_ports(nodes, port)  # refused before anything is fetched or started
        java = find_java(required_java_major(version))
        home = install(version, paths, log)
        members = []
        for name, http_port in zip(names, http_ports, strict=True):
            node_dir = paths.node(version, name)
            members.append(NodeState(
                name=name, url=f"http://127.0.0.1:{http_port}", pid=0, pid_start_ticks=None,
                http_port=http_port, transport_port=free_port(), data_dir=str(node_dir / "data"),
                logs_dir=str(node_dir / "logs"), console_log=str(node_dir / "logs" / "console.log"),
            ))
        log(f"starting a {nodes}-node Elasticsearch {version} cluster (Java {java.version}, heap {heap} each) "
            f"on 127.0.0.1:{http_ports[0]}..{http_ports[-1]} ...")
        procs: list[subprocess.Popen] = []
        try:
            for i, member in enumerate(members):
                proc = _launch(java, home, heap_opts, member, node_settings(member, members))
                procs.append(proc)
                members[i] = replace(member, pid=proc.pid, pid_start_ticks=_process_start_ticks(proc.pid))
            _wait_formed(procs, members, nodes, timeout)
        except BaseException:
            for member in members:
                if member.pid:
                    with contextlib.suppress(LocalServerError):
                        _terminate(member.pid, member.pid_start_ticks, DEFAULT_STOP_TIMEOUT)
            raise
        first = members[0]
        state = ServerState(
            url=first.url, pid=first.pid, pid_start_ticks=first.pid_start_ticks, version=version,
            java_home=java.path, java_version=java.version, home=str(home), data_dir=first.data_dir,
            logs_dir=first.logs_dir, console_log=first.console_log, http_port=first.http_port,
            transport_port=first.transport_port, heap=heap_opts, started_at=_now(), nodes=members,
        )
        write_state(paths, state)
        return state, True


def _wait_formed(procs: Sequence[subprocess.Popen], members: Sequence[NodeState], count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for proc, member in zip(procs, members, strict=True):
            if proc.poll() is not None:
                raise LocalServerError(
                    f"Elasticsearch node {member.name} exited with code {proc.returncode} while starting. "
                    f"Last lines of {member.console_log}:\n{log_tail(Path(member.console_log))}"
                )
        if any(_cluster_formed(m.url, count) for m in members):
            return
        if time.monotonic() > deadline:
            raise LocalServerError(
                f"the {count} nodes did not form a healthy cluster within {timeout:.0f}s; stopped them. "
                f"Last lines of {members[0].console_log}:\n{log_tail(Path(members[0].console_log))}"
            )
        time.sleep(1.0)


def restart_node(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    heap: str | None = None,
) -> NodeState:
    """Start the recorded cluster's node ``name`` again (same ports and directories) after it
    stopped or was killed; returns it once the cluster counts all its nodes again."""
    paths: ServerPaths = server_paths(cache_dir)
    with _locked(paths):
        state = read_state(cache_dir)
        if state is None or not state.nodes:
            raise LocalServerError("no local cluster is recorded; start one with `teran-es elasticsearch start --nodes 3`")
        by_name = {n.name: n for n in state.nodes}
        if name not in by_name:
            raise LocalServerError(f"the local cluster has no node {name!r} (it has {', '.join(by_name)})")
        node = by_name[name]
        if pid_alive(node.pid, node.pid_start_ticks):
            raise LocalServerError(f"node {name} (pid {node.pid}) still runs; stop it before restarting it")
        java = find_java(required_java_major(state.version))
        heap_opts = _heap_options(heap) if heap else state.heap
        proc = _launch(java, Path(state.home), heap_opts, node, node_settings(node, state.nodes))
        node = replace(node, pid=proc.pid, pid_start_ticks=_process_start_ticks(proc.pid))
        state.nodes = [node if n.name == name else n for n in state.nodes]
        if state.nodes[0].name == name:
            state.pid, state.pid_start_ticks = node.pid, node.pid_start_ticks
        write_state(paths, state)
        _wait_formed([proc], [node], len(state.nodes), timeout)
        return node
