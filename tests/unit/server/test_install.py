"""Fetching and unpacking the distribution: Maven retries, pinned digests, atomic unpacking."""

from __future__ import annotations

import os
import zipfile

import pytest

from teran_es.server import install
from teran_es.server.errors import LocalServerError
from teran_es.server.state import server_paths


def test_extract_keeps_executable_bits_and_install_is_atomic(tmp_path, monkeypatch):
    paths = server_paths(tmp_path / "cache")
    paths.downloads.mkdir(parents=True)
    archive = paths.downloads / "elasticsearch-0.0.1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        script = zipfile.ZipInfo("elasticsearch-0.0.1/bin/elasticsearch")
        script.external_attr = 0o100755 << 16
        zf.writestr(script, "#!/bin/sh\n")
        config = zipfile.ZipInfo("elasticsearch-0.0.1/config/elasticsearch.yml")
        config.external_attr = 0o100644 << 16
        zf.writestr(config, "# empty\n")
    monkeypatch.setattr(install.shutil, "which", lambda name: None)  # Maven must not be needed: the zip is cached
    home = install.install("0.0.1", paths, log=lambda _m: None)
    assert home == paths.home("0.0.1")
    assert os.access(home / "bin" / "elasticsearch", os.X_OK)
    assert not os.access(home / "config" / "elasticsearch.yml", os.X_OK)
    assert [p.name for p in paths.dist.iterdir()] == ["elasticsearch-0.0.1"]  # no staging left behind
    assert install.install("0.0.1", paths, log=lambda _m: None) == home  # unpacked once


def test_download_without_maven_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    with pytest.raises(LocalServerError, match="apt-get install maven"):
        install.download("9.5.4", server_paths(tmp_path), log=lambda _m: None)


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
    monkeypatch.setattr(install.shutil, "which", lambda name: mvn)
    monkeypatch.setattr(install, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(install, "PINNED_SHA256", {"0.0.1": hashlib.sha256(payload).hexdigest()})
    messages = []
    target = install.download("0.0.1", server_paths(tmp_path / "cache"), log=messages.append)
    assert target.read_bytes() == payload
    flags = [line.split()[2] for line in calls.read_text().splitlines()]
    assert flags == ["-C"] * install.FETCH_ATTEMPTS + ["-c"]  # strict attempts first, then one unchecked
    assert any("pinned" in m for m in messages)


def test_download_deletes_an_unchecked_fetch_whose_digest_differs(tmp_path, monkeypatch):
    mvn, _ = fake_maven(tmp_path, zip_bytes(), checksums_served=False)
    monkeypatch.setattr(install.shutil, "which", lambda name: mvn)
    monkeypatch.setattr(install, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(install, "PINNED_SHA256", {"0.0.1": "0" * 64})
    paths = server_paths(tmp_path / "cache")
    with pytest.raises(LocalServerError, match="is not the pinned"):
        install.download("0.0.1", paths, log=lambda _m: None)
    assert not (paths.downloads / "elasticsearch-0.0.1.zip").exists()


def test_download_without_checksums_or_a_pinned_digest_is_refused(tmp_path, monkeypatch):
    mvn, calls = fake_maven(tmp_path, zip_bytes(), checksums_served=False)
    monkeypatch.setattr(install.shutil, "which", lambda name: mvn)
    monkeypatch.setattr(install, "FETCH_BACKOFF_S", 0.0)
    monkeypatch.setattr(install, "PINNED_SHA256", {})
    with pytest.raises(LocalServerError, match="after 3 attempts.*start` again"):
        install.download("0.0.1", server_paths(tmp_path / "cache"), log=lambda _m: None)
    assert all(" -C " in f" {line} " for line in calls.read_text().splitlines())  # never unchecked


def test_download_with_checksums_served_needs_one_strict_fetch(tmp_path, monkeypatch):
    mvn, calls = fake_maven(tmp_path, zip_bytes(), checksums_served=True)
    monkeypatch.setattr(install.shutil, "which", lambda name: mvn)
    install.download("0.0.1", server_paths(tmp_path / "cache"), log=lambda _m: None)
    assert [line.split()[2] for line in calls.read_text().splitlines()] == ["-C"]
