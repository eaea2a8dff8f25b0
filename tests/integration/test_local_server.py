"""`teran-es elasticsearch start|status|url|stop` for real: a second, small server in a temporary
cache (the unpacked distribution is borrowed from the real cache, so nothing is downloaded)."""

from __future__ import annotations

import json
import os

import pytest

from teran_es.cli import main
from teran_es.server.health import http_get_json, server_version
from teran_es.server.install import ELASTICSEARCH_VERSION
from teran_es.server.process import pid_alive, stop
from teran_es.server.state import server_paths

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    installed = server_paths().home(ELASTICSEARCH_VERSION)
    if not (installed / "bin" / "elasticsearch").is_file():
        if os.environ.get("TERAN_ES_REQUIRE_ELASTICSEARCH") == "1":
            pytest.fail(f"Elasticsearch {ELASTICSEARCH_VERSION} is not unpacked in {installed.parent}")
        pytest.skip(f"Elasticsearch {ELASTICSEARCH_VERSION} is not unpacked in {installed.parent}")
    cache = tmp_path / "cache"
    paths = server_paths(cache)
    paths.dist.mkdir(parents=True)
    (paths.dist / installed.name).symlink_to(installed, target_is_directory=True)
    monkeypatch.setenv("TERAN_ES_CACHE", str(cache))
    yield paths
    stop(cache)  # whatever the test did


def test_start_status_url_stop(private_cache, capsys):
    assert main(["elasticsearch", "status"]) == 3
    assert capsys.readouterr().out.strip() == "stopped"

    assert main(["elasticsearch", "start", "--heap", "512m", "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["started"] is True and started["version"] == ELASTICSEARCH_VERSION
    assert started["heap"] == "-Xms512m -Xmx512m"
    assert http_get_json(f"{started['url']}/_cluster/health")["status"] in ("green", "yellow")
    assert server_version(started["url"]) == ELASTICSEARCH_VERSION

    # Starting again is a no-op that prints the same URL.
    assert main(["elasticsearch", "start"]) == 0
    assert capsys.readouterr().out.strip() == started["url"]
    assert main(["elasticsearch", "url"]) == 0
    assert capsys.readouterr().out.strip() == started["url"]
    assert main(["elasticsearch", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] and status["pid"] == started["pid"] and status["health"] in ("green", "yellow")

    assert main(["elasticsearch", "stop"]) == 0
    assert not pid_alive(started["pid"])
    assert http_get_json(f"{started['url']}/_cluster/health", timeout=2) is None
    assert not private_cache.state_file.exists()
    assert main(["elasticsearch", "status"]) == 3
    assert main(["elasticsearch", "url"]) == 1
    assert main(["elasticsearch", "stop"]) == 0  # nothing to stop is fine
