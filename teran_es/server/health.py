"""HTTP probes of the local node: health and version, asked without credentials.

The local server runs with security off, so these need no client library: standard library
only, and never through a proxy.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

# Direct connections only: an http_proxy in the environment must not intercept 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get_json(url: str, timeout: float = 5.0) -> dict | None:
    """GET a JSON document from the local server (no auth: security is off); None if it does not answer."""
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            return json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def cluster_health(url: str, timeout: float = 5.0) -> str | None:
    """The cluster's health colour ("green", "yellow", "red"), or None when it does not answer."""
    body = http_get_json(f"{url}/_cluster/health?timeout=1s", timeout=timeout)
    return body.get("status") if body else None


def is_healthy(url: str) -> bool:
    """Whether the cluster at ``url`` reports yellow or green within two seconds."""
    return cluster_health(url, timeout=2.0) in ("yellow", "green")


def server_version(url: str, timeout: float = 5.0) -> str | None:
    """The version the server reports (``GET /`` is not served by this minimal distribution)."""
    body = http_get_json(f"{url}/_nodes/_local?filter_path=nodes.*.version", timeout=timeout)
    for node in (body or {}).get("nodes", {}).values():
        return node.get("version")
    return None
