"""Integration fixtures: a real Elasticsearch, found via ELASTICSEARCH_URL or the local server
started by `teran-es elasticsearch start`. Without one the tests skip, unless
TERAN_ES_REQUIRE_ELASTICSEARCH=1 (the test command sets it), where they fail."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import uuid

import pytest

REQUIRE_ENV = "TERAN_ES_REQUIRE_ELASTICSEARCH"


def _find_server() -> tuple[str | None, str]:
    """(url, how it was found or why none was)."""
    if os.environ.get("ELASTICSEARCH_URL"):
        return os.environ["ELASTICSEARCH_URL"], "ELASTICSEARCH_URL"
    from teran_es.server.process import status

    local = status()
    if local.running:
        return local.url, f"local server ({local.state_file})"
    if local.pid_alive:
        return None, f"the local server (pid {local.pid}) does not answer at {local.url}"
    return None, f"neither ELASTICSEARCH_URL nor a running local server ({local.state_file})"


@pytest.fixture(scope="session")
def es_url() -> str:
    url, how = _find_server()
    if url is None:
        message = f"no Elasticsearch for the integration tests: {how}. Run `teran-es elasticsearch start`."
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_ENV}=1 makes this an error)", pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def es_shared_config(es_url):
    """The connection settings of ``es_config`` for module- or session-scoped fixtures (one
    ingest shared by a module's tests); shared, so treat it as read-only."""
    from teran_es.config import ElasticsearchConfig

    # Small bulk chunks so that even the small test corpora go through several requests.
    return ElasticsearchConfig(url=es_url, bulk_chunk_docs=200, msearch_batch=16)


@pytest.fixture
def es_config(es_shared_config):
    """A copy of the connection settings that a test may change."""
    return dataclasses.replace(es_shared_config)


@pytest.fixture
def index_name() -> str:
    return f"teran-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def es_admin(es_url):
    """A raw client for set-up and clean-up that must not depend on the code under test."""
    from elasticsearch import Elasticsearch

    from teran_es.config import ElasticsearchConfig
    from teran_es.index.connection import resolve_connection

    client = Elasticsearch(**resolve_connection(ElasticsearchConfig(url=es_url)).client_kwargs())
    yield client
    client.close()


@pytest.fixture
def open_es_index(es_config, es_admin, tmp_path):
    """Factory: ``open_es_index(name=None, **kwargs)`` opens (creating) a uniquely named index
    with ``ElasticIndex.open``; every index name it saw is deleted at the end of the test."""
    from teran_es.index.elastic import ElasticIndex

    opened: list = []
    names: set[str] = set()

    def open_index(name: str | None = None, config=None, **kwargs):
        name = name or f"teran-test-{uuid.uuid4().hex[:12]}"
        names.add(name)
        kwargs.setdefault("dead_letter_path", tmp_path / "dead-letter.jsonl")
        index = ElasticIndex.open(config or es_config, name, **kwargs)
        opened.append(index)
        return index

    yield open_index
    for index in opened:
        index.close()
    for name in names:
        for concrete in es_admin.indices.get(index=name, ignore_unavailable=True):  # the alias's indexes
            es_admin.indices.delete(index=concrete)


@pytest.fixture(scope="session")
def server_cache_with_distribution():
    """Function ``(directory) -> directory``: makes ``directory`` the cache of a second local
    server, borrowing the unpacked distribution from the real cache by a symlink (so nothing
    is downloaded). A second server can be killed, restarted or configured (security on)
    without touching the session's server."""
    from teran_es.server.install import ELASTICSEARCH_VERSION
    from teran_es.server.state import server_paths

    installed = server_paths().home(ELASTICSEARCH_VERSION)
    if not (installed / "bin" / "elasticsearch").is_file():
        message = f"Elasticsearch {ELASTICSEARCH_VERSION} is not unpacked in {installed.parent}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    def prepare(directory):
        paths = server_paths(directory)
        paths.dist.mkdir(parents=True)
        (paths.dist / installed.name).symlink_to(installed, target_is_directory=True)
        return directory

    return prepare


@pytest.fixture
def private_server_cache(server_cache_with_distribution, tmp_path):
    """The cache directory of a second local server for this test; whatever runs from it is
    stopped at the end."""
    from teran_es.server.process import stop

    cache = server_cache_with_distribution(tmp_path / "server-cache")
    yield cache
    stop(cache)


CLUSTER_NODES = 3
CLUSTER_HEAP = "256m"  # three nodes on a small CI machine; enough for the fault tests' collections


@pytest.fixture(scope="session")
def es_cluster(server_cache_with_distribution, tmp_path_factory):
    """A real 3-node local cluster (`teran-es elasticsearch start --nodes 3`) in a cache directory
    of its own, started once for the session and stopped (every node) at its end. Yields
    ``(state, cache_dir)``; tests may kill nodes and must restart them (``cluster.restart_node``)."""
    from teran_es.server.cluster import start_cluster
    from teran_es.server.process import stop

    cache = server_cache_with_distribution(tmp_path_factory.mktemp("cluster") / "server-cache")
    try:
        state, _ = start_cluster(CLUSTER_NODES, heap=CLUSTER_HEAP, cache_dir=cache, log=lambda _line: None)
        yield state, cache
    finally:
        stop(cache)


class KillWhenIndexed(threading.Thread):
    """SIGKILLs the process group ``pid`` (launcher and server JVM) as soon as the node stats at
    ``stats_url`` report ``after`` indexing operations: it polls the counter, so the kill lands
    while bulk requests are streaming in. ``killed_at`` is the count it saw (None: no kill)."""

    def __init__(self, pid: int, stats_url: str, after: int):
        super().__init__(daemon=True)
        self.pid, self.stats_url, self.after = pid, stats_url, after
        self.killed_at: int | None = None
        self._done = threading.Event()

    def run(self) -> None:
        from teran_es.server.health import http_get_json

        while not self._done.is_set():
            body = http_get_json(self.stats_url, timeout=1.0) or {}
            total = sum(n["indices"]["indexing"]["index_total"] for n in body.get("nodes", {}).values())
            if total >= self.after:
                os.killpg(self.pid, signal.SIGKILL)
                self.killed_at = total
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


@pytest.fixture(scope="session")
def kill_when_indexed():
    """``KillWhenIndexed(pid, stats_url, after)``, for the fault tests of one node and of a cluster."""
    return KillWhenIndexed
