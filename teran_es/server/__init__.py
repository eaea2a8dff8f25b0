"""Servers teran-es can run for you: a local single-node Elasticsearch for development and tests."""

from teran_es.server.local_elasticsearch import (
    ELASTICSEARCH_VERSION,
    LocalServerError,
    ServerState,
    ServerStatus,
    find_java,
    local_url,
    read_state,
    start,
    status,
    stop,
)

__all__ = [
    "ELASTICSEARCH_VERSION",
    "LocalServerError",
    "ServerState",
    "ServerStatus",
    "find_java",
    "local_url",
    "read_state",
    "start",
    "status",
    "stop",
]
