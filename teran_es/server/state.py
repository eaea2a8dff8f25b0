"""Where the local server lives on disk, and the state file that describes a started one.

The cache directory holds the downloaded distribution, its unpacked copy, one data
directory per version, logs and ``state.json``. The state file is written by ``start`` once
the node answers, read by the CLI, the index layer and the tests, and removed by ``stop``.
Standard library only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from teran_es.config import default_cache_dir

STATE_FILE_NAME = "state.json"


@dataclass(frozen=True)
class ServerPaths:
    """Where the local server keeps its downloads, installs, data, logs and state."""

    root: Path

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE_NAME

    @property
    def console_log(self) -> Path:
        return self.logs / "console.log"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def home(self, version: str) -> Path:
        return self.dist / f"elasticsearch-{version}"

    def data(self, version: str) -> Path:
        # One data directory per version: an older server cannot read a newer one's files.
        return self.root / f"data-{version}"

    def node(self, version: str, name: str) -> Path:
        """A cluster node's own directory (``data``, ``logs``, ``tmp`` below it), per version."""
        return self.root / f"cluster-{version}" / name


def server_paths(cache_dir: str | os.PathLike[str] | None = None) -> ServerPaths:
    """The local server's directories under ``cache_dir`` (default: the teran-es cache)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return ServerPaths(base / "elasticsearch")


@dataclass
class NodeState:
    """One node of a local cluster: enough to reach it, stop it by pid and start it again."""

    name: str
    url: str
    pid: int
    pid_start_ticks: int | None
    http_port: int
    transport_port: int
    data_dir: str
    logs_dir: str
    console_log: str


@dataclass
class ServerState:
    """What ``start`` wrote: enough to reach, describe and stop the server.

    For a local cluster (``start --nodes N``) the top-level fields describe its first node and
    ``nodes`` lists every node (the first included); a single node has ``nodes == []``.
    """

    url: str
    pid: int
    pid_start_ticks: int | None
    version: str
    java_home: str
    java_version: str
    home: str
    data_dir: str
    logs_dir: str
    console_log: str
    http_port: int
    transport_port: int
    heap: str
    started_at: str
    nodes: list[NodeState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [n if isinstance(n, NodeState) else NodeState(**n) for n in self.nodes]


def read_state(cache_dir: str | os.PathLike[str] | None = None) -> ServerState | None:
    """The recorded state, or None when there is no state file or it cannot be read."""
    path = server_paths(cache_dir).state_file
    try:
        data = json.loads(path.read_text())
        return ServerState(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_state(paths: ServerPaths, state: ServerState) -> None:
    """Replace the state file (written aside, then renamed: readers never see half of it)."""
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(paths.state_file)
