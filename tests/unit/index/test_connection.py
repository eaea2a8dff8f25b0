"""Where the server is and how to authenticate (no server)."""

from __future__ import annotations

import pytest

from teran_es.config import ElasticsearchConfig
from teran_es.index.connection import ConnectionSettings, NoElasticsearchError, resolve_connection


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_config_url_wins_over_the_environment(empty_cache):
    settings = resolve_connection(ElasticsearchConfig(url="http://cfg:9200"), {"ELASTICSEARCH_URL": "http://env:1"})
    assert settings.url == "http://cfg:9200" and settings.source == "config"


def test_environment_url_and_credentials(empty_cache, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("cert")
    env = {
        "ELASTICSEARCH_URL": "https://es.example:9243",
        "ELASTICSEARCH_API_KEY": "c2VjcmV0LWtleQ==",
        "ELASTICSEARCH_CA_CERTS": str(ca),
    }
    settings = resolve_connection(ElasticsearchConfig(request_timeout=12), env)
    assert settings.source == "ELASTICSEARCH_URL"
    kwargs = settings.client_kwargs()
    assert kwargs == {"hosts": ["https://es.example:9243"], "request_timeout": 12, "api_key": "c2VjcmV0LWtleQ==",
                      "ca_certs": str(ca)}
    assert settings.auth_kind == "api key"


def test_basic_auth_from_the_variables_the_config_names(empty_cache):
    config = ElasticsearchConfig(url="http://x:9200", username_env="MY_USER", password_env="MY_PASS")
    settings = resolve_connection(config, {"MY_USER": "elastic", "MY_PASS": "hunter2"})
    assert settings.client_kwargs()["basic_auth"] == ("elastic", "hunter2")
    assert settings.auth_kind == "basic"


def test_secrets_never_show(empty_cache):
    settings = ConnectionSettings(url="https://bob:pw123@es:9200", source="config", api_key="KEY123",
                                  username="bob", password="pw123")
    for text in (repr(settings), str(settings), settings.describe(), f"{settings!r}"):
        assert "KEY123" not in text and "pw123" not in text
    assert "https://***@es:9200" in settings.describe() and "https://***@es:9200" in repr(settings)


def test_no_server_anywhere_says_how_to_get_one(empty_cache):
    with pytest.raises(NoElasticsearchError, match="teran-es elasticsearch start.*ELASTICSEARCH_URL"):
        resolve_connection(ElasticsearchConfig(), {})


def test_the_local_state_file_is_used_when_its_process_runs(empty_cache, monkeypatch):
    import json
    import os

    from teran_es.server.process import _process_start_ticks
    from teran_es.server.state import server_paths

    paths = server_paths()
    paths.root.mkdir(parents=True)
    state = {
        "url": "http://127.0.0.1:45678", "pid": os.getpid(), "pid_start_ticks": _process_start_ticks(os.getpid()),
        "version": "9.5.4", "java_home": "/j", "java_version": "25", "home": "/h", "data_dir": "/d", "logs_dir": "/l",
        "console_log": "/l/c", "http_port": 45678, "transport_port": 45679, "heap": "-Xmx1g", "started_at": "now",
    }
    paths.state_file.write_text(json.dumps(state))
    settings = resolve_connection(ElasticsearchConfig(), {})
    assert settings.url == "http://127.0.0.1:45678"
    assert str(paths.state_file) in settings.source

    # A state file whose process is gone is not a server.
    paths.state_file.write_text(json.dumps({**state, "pid": 2**22 + 12345}))
    with pytest.raises(NoElasticsearchError):
        resolve_connection(ElasticsearchConfig(), {})


def test_bad_url_or_missing_ca_file_are_refused(empty_cache):
    with pytest.raises(NoElasticsearchError, match="scheme"):
        resolve_connection(ElasticsearchConfig(url="localhost:9200"), {})
    with pytest.raises(NoElasticsearchError, match="CA certificate"):
        resolve_connection(ElasticsearchConfig(url="https://x:9200", ca_certs="/nonexistent/ca.pem"), {})
