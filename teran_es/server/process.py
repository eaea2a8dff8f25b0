"""Starting, watching and stopping the local single-node Elasticsearch process.

A local cluster (``cluster.py``) is recorded in the same state file; ``status``, ``local_url``
and ``stop`` here cover all of its nodes.

``start`` unpacks the distribution when needed (``install.py``), finds a Java (``java.py``),
launches the node detached on 127.0.0.1 with free ports and security off, waits until it
answers healthy and only then records it in the state file (``state.py``). ``status`` and
``local_url`` read that file and check that the recorded process still runs; ``stop`` ends
the node's whole process group. Standard library only: this module must not import
``elasticsearch``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from teran_es.server.errors import LocalServerError
from teran_es.server.health import cluster_health, is_healthy
from teran_es.server.install import ELASTICSEARCH_VERSION, install
from teran_es.server.java import find_java, required_java_major
from teran_es.server.state import ServerPaths, ServerState, read_state, server_paths, write_state

DEFAULT_HEAP = "1g"
DEFAULT_MIN_HEAP = "512m"
DEFAULT_START_TIMEOUT = 180.0
DEFAULT_STOP_TIMEOUT = 60.0


@contextlib.contextmanager
def _locked(paths: ServerPaths) -> Iterator[None]:
    """Serialise start/stop of the same cache directory across processes."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock_file, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when given, is the process started at ``start_ticks``."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own exited child (start and stop in one process, as in tests).
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat_path = Path(f"/proc/{pid}/stat")
    if stat_path.exists():
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = stat_path.read_text()
            if raw[raw.rindex(")") + 2 :].split()[0] == "Z":
                return False
        if start_ticks is not None and _process_start_ticks(pid) != start_ticks:
            return False
    return True


def _drop_root_prefix() -> list[str]:
    """Elasticsearch refuses to run as root. As root, run it in a user namespace where it
    appears as an ordinary user while keeping file access to the root-owned cache."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare:
        for prefix in ([unshare, "--user", "--map-user=1000", "--map-group=1000"], [unshare, "--user"]):
            probe = subprocess.run([*prefix, "true"], capture_output=True)
            if probe.returncode == 0:
                return prefix
    raise LocalServerError(
        "Elasticsearch refuses to run as root, and this system does not allow user namespaces "
        "(`unshare --user`). Run `teran-es elasticsearch start` as an ordinary user, or set "
        "ELASTICSEARCH_URL to a server you already have."
    )


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log (read from its last 64 KiB), for error messages."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- status


def local_url(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The URL of the local server when its recorded process still runs (no HTTP round trip)."""
    state = read_state(cache_dir)
    if state is None:
        return None
    urls = [url for url, pid, ticks in _members(state) if pid_alive(pid, ticks)]
    # A cluster answers on every live node: the client spreads requests and fails over among them.
    return ",".join(urls) or None


def _members(state: ServerState) -> list[tuple[str, int, int | None]]:
    """(url, pid, start ticks) of each recorded node: the one server, or every node of a cluster."""
    if not state.nodes:
        return [(state.url, state.pid, state.pid_start_ticks)]
    return [(n.url, n.pid, n.pid_start_ticks) for n in state.nodes]


@dataclass
class ServerStatus:
    """What ``status`` found: whether the recorded process lives and its HTTP port answers."""

    running: bool
    pid_alive: bool
    http_ok: bool
    url: str | None
    version: str | None
    pid: int | None
    state_file: str
    console_log: str | None
    health: str | None


def status(cache_dir: str | os.PathLike[str] | None = None) -> ServerStatus:
    """Running means: the recorded process is alive AND the HTTP port answers. For a cluster:
    some node is alive and answers (``cluster.cluster_status`` reports node by node)."""
    paths = server_paths(cache_dir)
    state = read_state(cache_dir)
    if state is None:
        return ServerStatus(False, False, False, None, None, None, str(paths.state_file), None, None)
    live = [(url, pid) for url, pid, ticks in _members(state) if pid_alive(pid, ticks)]
    url, pid = live[0] if live else (state.url, state.pid)
    health = cluster_health(url) if live else None
    return ServerStatus(
        running=bool(live) and health is not None,
        pid_alive=bool(live),
        http_ok=health is not None,
        url=url,
        version=state.version,
        pid=pid,
        state_file=str(paths.state_file),
        console_log=state.console_log,
        health=health,
    )


# --------------------------------------------------------------------------- start / stop


def _heap_options(heap: str) -> str:
    if not re.fullmatch(r"\d+[mMgG]", heap):
        raise LocalServerError(f"heap {heap!r} must look like 512m or 1g")
    size_mb = int(heap[:-1]) * (1024 if heap[-1] in "gG" else 1)
    if size_mb < 256:
        raise LocalServerError(f"heap {heap} is too small for Elasticsearch (at least 256m)")
    min_heap = heap if size_mb <= 512 else DEFAULT_MIN_HEAP
    return f"-Xms{min_heap} -Xmx{heap}"


def _server_settings(
    paths: ServerPaths,
    version: str,
    http_port: int,
    transport_port: int,
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    settings = {
        "cluster.name": "teran-es-local",
        "node.name": "teran-es-local",
        "discovery.type": "single-node",  # also turns bootstrap checks into warnings
        "network.host": "127.0.0.1",
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(paths.data(version)),
        "path.logs": str(paths.logs),
        "xpack.security.enabled": "false",
        # A nearly full developer disk must not turn indexes read-only (flood-stage watermark).
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "true",
    }
    settings.update(extra or {})
    args: list[str] = []
    for key, value in settings.items():
        args += ["-E", f"{key}={value}"]
    return args

def _running_state(cache_dir, paths: ServerPaths) -> ServerState | None:
    """Under the start lock: the state of a server (or cluster) that already answers, or None
    once a stale state file is removed; a server process that runs but does not answer is
    refused, as starting another beside it would fight over its ports and data."""
    current = status(cache_dir)
    if current.running:
        state = read_state(cache_dir)
        assert state is not None
        return state
    if current.pid_alive:
        raise LocalServerError(
            f"a local Elasticsearch (pid {current.pid}) is running but does not answer at {current.url}; "
            f"see {current.console_log}, or run `teran-es elasticsearch stop` first."
        )
    paths.state_file.unlink(missing_ok=True)
    return None



def start(
    version: str = ELASTICSEARCH_VERSION,
    port: int = 0,
    heap: str = DEFAULT_HEAP,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    log: Callable[[str], None] = print,
    *,
    settings: Mapping[str, str] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    ready: Callable[[str], bool] | None = None,
) -> tuple[ServerState, bool]:
    """Start the local server (or find it running). Returns its state and whether it was started now.

    The defaults give the plain development server. For a server with security on (tests):
    ``settings`` are extra ``-E`` settings that override the defaults; ``config_dir`` becomes
    ES_PATH_CONF (a config directory of its own, holding keystore, users and certificates,
    so the shared distribution is left alone); ``ready(url)`` replaces the anonymous health
    check, which such a server answers with 401. The URL is https:// when
    ``xpack.security.http.ssl.enabled`` is true. ``status`` probes anonymously, so it reports
    such a server as not answering.
    """
    paths = server_paths(cache_dir)
    with _locked(paths):
        state = _running_state(cache_dir, paths)
        if state is not None:
            return state, False

        java = find_java(required_java_major(version))
        home = install(version, paths, log)
        heap_opts = _heap_options(heap)
        http_port = port or free_port()
        transport_port = free_port()
        for directory in (paths.data(version), paths.logs, paths.tmp):
            directory.mkdir(parents=True, exist_ok=True)

        env = dict(os.environ)
        env.update(ES_JAVA_HOME=java.path, ES_JAVA_OPTS=heap_opts, ES_TMPDIR=str(paths.tmp))
        env.pop("ES_PATH_CONF", None)  # use the distribution's own config directory ...
        if config_dir is not None:
            env["ES_PATH_CONF"] = str(Path(config_dir).absolute())  # ... unless given one
        cmd = [*_drop_root_prefix(), str(home / "bin" / "elasticsearch"),
               *_server_settings(paths, version, http_port, transport_port, settings)]
        log(f"starting Elasticsearch {version} (Java {java.version} from {java.source}) on 127.0.0.1:{http_port} ...")
        with open(paths.console_log, "ab") as console:
            console.write(f"\n=== teran-es start {_now()}: {' '.join(cmd)}\n".encode())
            console.flush()
            # Own session: the server outlives the CLI and ignores the terminal's signals.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                    cwd=paths.logs, env=env, start_new_session=True)
        tls = str((settings or {}).get("xpack.security.http.ssl.enabled", "false")).lower() == "true"
        url = f"{'https' if tls else 'http'}://127.0.0.1:{http_port}"
        is_ready = ready or is_healthy
        state = ServerState(
            url=url, pid=proc.pid, pid_start_ticks=_process_start_ticks(proc.pid), version=version,
            java_home=java.path, java_version=java.version, home=str(home), data_dir=str(paths.data(version)),
            logs_dir=str(paths.logs), console_log=str(paths.console_log), http_port=http_port,
            transport_port=transport_port, heap=heap_opts, started_at=_now(),
        )
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise LocalServerError(
                    f"Elasticsearch exited with code {proc.returncode} while starting. "
                    f"Last lines of {paths.console_log}:\n{log_tail(paths.console_log)}"
                )
            if is_ready(url):
                break
            if time.monotonic() > deadline:
                _terminate(proc.pid, state.pid_start_ticks, DEFAULT_STOP_TIMEOUT)
                raise LocalServerError(
                    f"Elasticsearch did not become healthy at {url} within {timeout:.0f}s; stopped it. "
                    f"Last lines of {paths.console_log}:\n{log_tail(paths.console_log)}"
                )
            time.sleep(0.5)
        write_state(paths, state)
        return state, True


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies excluded): the launcher may exit
    before the server JVM it started has finished shutting down and released its data directory."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _terminate(pid: int, start_ticks: int | None, timeout: float) -> None:
    """SIGTERM the server's process group (launcher and server JVM) and wait for all of it to
    exit; SIGKILL what is left after ``timeout``."""
    current = _process_start_ticks(pid)
    if current is not None and start_ticks is not None and current != start_ticks:
        return  # the pid belongs to another process now: ours and its group are long gone
    # A group's id is not reused while any member lives, so the group is ours even after the
    # launcher (its leader) has exited.
    group = _is_group_leader(pid) or _group_alive(pid)
    if not pid_alive(pid, start_ticks) and not (group and _group_alive(pid)):
        return

    def alive() -> bool:
        return _group_alive(pid) if group else pid_alive(pid, start_ticks)

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            (os.killpg if group else os.kill)(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid_alive(pid, start_ticks)  # reaps the launcher when it is our own child
        if not alive():
            return
        time.sleep(0.2)
    send(signal.SIGKILL)
    for _ in range(50):
        pid_alive(pid, start_ticks)
        if not alive():
            return
        time.sleep(0.1)
    raise LocalServerError(f"process group {pid} survived SIGKILL")


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def stop(cache_dir: str | os.PathLike[str] | None = None, timeout: float = DEFAULT_STOP_TIMEOUT) -> ServerState | None:
    """Stop the server that ``start`` recorded (by its pid) and remove the state file.
    Returns the state of the server that was stopped, or None when none was recorded/running."""
    paths = server_paths(cache_dir)
    with _locked(paths):
        state = read_state(cache_dir)
        if state is None:
            paths.state_file.unlink(missing_ok=True)
            return None
        members = _members(state)
        was_alive = any(pid_alive(pid, ticks) for _, pid, ticks in members)
        for _, pid, ticks in members:  # every node of a cluster, each by its own pid
            _terminate(pid, ticks, timeout)
        paths.state_file.unlink(missing_ok=True)
        return state if was_alive else None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

