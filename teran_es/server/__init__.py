"""Servers teran-es can run for you: a local single-node Elasticsearch for development and tests.

``java.py`` finds a Java, ``install.py`` fetches and unpacks the distribution, ``process.py``
starts, watches and stops the node, ``health.py`` asks it how it is, and ``state.py`` is the
state file that says where it runs.
"""

from teran_es.server.errors import LocalServerError
from teran_es.server.install import ELASTICSEARCH_VERSION
from teran_es.server.java import find_java
from teran_es.server.process import ServerStatus, local_url, start, status, stop
from teran_es.server.state import ServerState, read_state

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
