"""The local cluster's pure parts: node names, per-node settings, port choice, and the state
file of a cluster (read back whole; ``status``/``local_url``/``stop`` see every node)."""

from __future__ import annotations

import socket

import pytest

from teran_es.server.cluster import choose_http_ports, cluster_status, node_names, node_settings
from teran_es.server.errors import LocalServerError
from teran_es.server.process import local_url, status, stop
from teran_es.server.state import NodeState, ServerState, read_state, server_paths, write_state


def _node(i: int, pid: int = 2**22 + 7) -> NodeState:
    return NodeState(name=f"node-{i}", url=f"http://127.0.0.1:{9200 + i}", pid=pid, pid_start_ticks=None,
                     http_port=9200 + i, transport_port=9300 + i, data_dir=f"/c/node-{i}/data",
                     logs_dir=f"/c/node-{i}/logs", console_log=f"/c/node-{i}/logs/console.log")


def test_node_names_and_their_bounds():
    assert node_names(3) == ["node-1", "node-2", "node-3"]
    for bad in (0, -1, 10):
        with pytest.raises(LocalServerError, match="1 to 9"):
            node_names(bad)


def test_node_settings_name_every_node_as_seed_and_initial_master():
    nodes = [_node(i) for i in (1, 2, 3)]
    settings = node_settings(nodes[1], nodes)
    assert settings["node.name"] == "node-2"
    assert settings["http.port"] == "9202" and settings["transport.port"] == "9302"
    assert settings["discovery.seed_hosts"] == "127.0.0.1:9301,127.0.0.1:9302,127.0.0.1:9303"
    assert settings["cluster.initial_master_nodes"] == "node-1,node-2,node-3"
    assert settings["path.data"] == "/c/node-2/data" and settings["path.logs"] == "/c/node-2/logs"
    assert "discovery.type" not in settings  # single-node discovery would refuse to form a cluster
    # one directory per node: no two nodes share data or logs
    all_settings = [node_settings(n, nodes) for n in nodes]
    assert len({s["path.data"] for s in all_settings}) == 3
    assert len({s["path.logs"] for s in all_settings}) == 3


def test_http_ports_consecutive_from_the_given_one_and_a_taken_one_refused():
    assert choose_http_ports(3, 40000, is_free=lambda p: True) == [40000, 40001, 40002]
    with pytest.raises(LocalServerError, match="port 40001 on 127.0.0.1 is taken"):
        choose_http_ports(3, 40000, is_free=lambda p: p != 40001)
    with pytest.raises(LocalServerError, match="do not all exist"):
        choose_http_ports(3, 65534, is_free=lambda p: True)
    picked = choose_http_ports(3, 0)
    assert len(set(picked)) == 3


def test_a_really_taken_port_is_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with pytest.raises(LocalServerError, match=f"port {taken} "):
            choose_http_ports(1, taken)


def test_cluster_state_round_trip_and_dead_nodes(tmp_path):
    paths = server_paths(tmp_path)
    paths.root.mkdir(parents=True)
    nodes = [_node(i) for i in (1, 2, 3)]  # pids that do not exist
    first = nodes[0]
    state = ServerState(url=first.url, pid=first.pid, pid_start_ticks=None, version="9.5.4", java_home="/j",
                        java_version="25", home="/h", data_dir=first.data_dir, logs_dir=first.logs_dir,
                        console_log=first.console_log, http_port=first.http_port,
                        transport_port=first.transport_port, heap="-Xmx512m", started_at="now", nodes=nodes)
    write_state(paths, state)
    assert read_state(tmp_path) == state
    assert local_url(tmp_path) is None
    assert not status(tmp_path).running
    found = cluster_status(tmp_path)
    assert found is not None and not found.running
    assert [n.alive for n in found.nodes] == [False, False, False]
    assert stop(tmp_path) is None and read_state(tmp_path) is None
