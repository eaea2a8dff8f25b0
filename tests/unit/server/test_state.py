"""The state file: written whole, read back equal, unreadable means no state."""

from __future__ import annotations

import json

from teran_es.server.state import ServerState, read_state, server_paths, write_state


def test_state_round_trip(tmp_path):
    assert read_state(tmp_path) is None

    paths = server_paths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.state_file.write_text("{not json")
    assert read_state(tmp_path) is None

    state = ServerState(url="http://127.0.0.1:1", pid=2**22 + 7, pid_start_ticks=None, version="9.5.4",
                        java_home="/j", java_version="25", home="/h", data_dir="/d", logs_dir="/l",
                        console_log="/l/console.log", http_port=1, transport_port=2, heap="-Xmx1g",
                        started_at="now")
    write_state(paths, state)
    assert read_state(tmp_path) == state
    assert json.loads(paths.state_file.read_text())["url"] == "http://127.0.0.1:1"
