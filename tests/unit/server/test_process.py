"""Starting and stopping the node: heap options, settings, pid checks, status without a server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from teran_es.server import process
from teran_es.server.errors import LocalServerError
from teran_es.server.state import ServerState, server_paths, write_state


@pytest.mark.parametrize(
    ("heap", "options"),
    [("1g", "-Xms512m -Xmx1g"), ("512m", "-Xms512m -Xmx512m"), ("768m", "-Xms512m -Xmx768m"), ("2G", "-Xms512m -Xmx2G")],
)
def test_heap_options(heap, options):
    assert process._heap_options(heap) == options


@pytest.mark.parametrize("heap", ["lots", "1t", "100m"])
def test_bad_heaps_are_refused(heap):
    with pytest.raises(LocalServerError):
        process._heap_options(heap)


def test_server_settings_keep_the_server_local_and_writable(tmp_path):
    args = process._server_settings(server_paths(tmp_path), "9.5.4", 19200, 19300)
    settings = dict(a.split("=", 1) for a in args[1::2])
    assert args[0::2] == ["-E"] * len(settings)
    assert settings["network.host"] == "127.0.0.1"
    assert settings["discovery.type"] == "single-node"
    assert settings["xpack.security.enabled"] == "false"
    assert settings["cluster.routing.allocation.disk.threshold_enabled"] == "false"
    assert settings["path.data"].startswith(str(tmp_path)) and settings["path.logs"].startswith(str(tmp_path))
    assert (settings["http.port"], settings["transport.port"]) == ("19200", "19300")


def test_extra_server_settings_override_the_defaults_for_a_secured_test_server(tmp_path):
    extra = {"xpack.security.enabled": "true", "thread_pool.write.queue_size": "2"}
    args = process._server_settings(server_paths(tmp_path), "9.5.4", 19200, 19300, extra)
    settings = dict(a.split("=", 1) for a in args[1::2])
    assert settings["xpack.security.enabled"] == "true" and settings["thread_pool.write.queue_size"] == "2"
    assert settings["network.host"] == "127.0.0.1"  # still local


def test_pid_alive_tells_running_dead_zombie_and_reused_pids_apart():
    me = os.getpid()
    assert process.pid_alive(me)
    assert process.pid_alive(me, process._process_start_ticks(me))
    assert not process.pid_alive(me, (process._process_start_ticks(me) or 0) + 1)  # another process with my pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat_file = f"/proc/{child.pid}/stat"
    deadline = time.monotonic() + 10
    # Wait (without reaping) until the child has exited and is a zombie.
    while time.monotonic() < deadline and " Z " not in open(stat_file).read():
        time.sleep(0.01)
    assert not process.pid_alive(child.pid)  # a zombie is not alive (and pid_alive reaps our own child)
    assert not os.path.exists(stat_file)
    assert not process.pid_alive(0)


def test_log_tail(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert "no log" in process.log_tail(tmp_path / "missing.log")


def test_status_and_stop_without_a_server(tmp_path):
    current = process.status(tmp_path)
    assert not current.running and current.url is None
    assert process.stop(tmp_path) is None


def test_a_recorded_server_whose_process_is_gone_is_not_running(tmp_path):
    paths = server_paths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    state = ServerState(url="http://127.0.0.1:1", pid=2**22 + 7, pid_start_ticks=None, version="9.5.4",
                        java_home="/j", java_version="25", home="/h", data_dir="/d", logs_dir="/l",
                        console_log="/l/console.log", http_port=1, transport_port=2, heap="-Xmx1g",
                        started_at="now")
    write_state(paths, state)
    current = process.status(tmp_path)
    assert not current.running and not current.pid_alive and current.url == "http://127.0.0.1:1"
    assert process.local_url(tmp_path) is None
    assert process.stop(tmp_path) is None  # recorded but not running: just clears the state
    assert not paths.state_file.exists()
