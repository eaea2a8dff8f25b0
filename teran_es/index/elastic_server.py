"""Talking to the Elasticsearch server before and around any document: the server check (every
node on the client's major version), a concrete index's creation from the shipped mapping (with
the pipeline's fingerprints in ``_meta``) or the check of an existing one, and the translation of
client errors into ``IndexError_`` subclasses whose messages say what to do. One of the modules
that import ``elasticsearch`` (with ``elastic.py``, ``elastic_alias.py``, ``elastic_bulk.py``
and ``elastic_rebuild.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import elasticsearch
from elasticsearch import Elasticsearch

import teran_es
from teran_es.config import ElasticsearchConfig
from teran_es.index import es_queries
from teran_es.index.base import (
    TERMS_FIELD,
    IndexError_,
    IndexMismatchError,
    IndexUnavailableError,
    check_meta,
)
from teran_es.index.mappings import CURRENT_VERSION, IMAGE_INDEX, load_mapping

CLIENT_VERSION: str = elasticsearch.__versionstr__


def _major(version: str) -> int:
    return int(version.split(".")[0])


def error_summary(body: Any) -> str:
    """``type: reason`` of an Elasticsearch error body (a bulk item error or a request error)."""
    error = body.get("error", body) if isinstance(body, Mapping) else body
    if isinstance(error, Mapping):
        kind = error.get("type", "error")
        reason = error.get("reason", "")
        caused = error.get("caused_by")
        if isinstance(caused, Mapping) and caused.get("reason"):
            reason = f"{reason} (caused by {caused.get('type')}: {caused.get('reason')})"
        return f"{kind}: {reason}"
    return str(error)


class DocumentNotFound(IndexError_):
    """A ``get`` of an id that is not in the (existing) index: ``ElasticIndex.get`` answers None."""


@contextlib.contextmanager
def translated_errors(action: str, where: str, index: str | None = None) -> Iterator[None]:
    """Turn client exceptions into ``IndexError_`` subclasses with an actionable message."""
    try:
        yield
    except IndexError_:
        raise
    except elasticsearch.NotFoundError as exc:
        if isinstance(exc.body, Mapping) and exc.body.get("found") is False:
            raise DocumentNotFound(str(exc)) from None
        raise IndexUnavailableError(
            f"Elasticsearch index {index!r} does not exist on {where} ({error_summary(exc.body)}); "
            "create it by ingesting, or check the index name"
        ) from exc
    except elasticsearch.AuthenticationException as exc:
        raise IndexUnavailableError(
            f"Elasticsearch at {where} refused the credentials while {action}: authentication failed (401). "
            "Set ELASTICSEARCH_API_KEY, or ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD, to valid credentials."
        ) from exc
    except elasticsearch.AuthorizationException as exc:
        raise IndexUnavailableError(
            f"the credentials for {where} may not do this: {action} on index {index!r} (403: "
            f"{error_summary(exc.body)}). Grant the role read/write/manage on the index."
        ) from exc
    except elasticsearch.UnsupportedProductError as exc:
        raise IndexUnavailableError(f"the server at {where} is not Elasticsearch: {exc}") from exc
    except elasticsearch.ApiError as exc:
        hint = ""
        if exc.status_code == 413:
            hint = " Lower elasticsearch.bulk_chunk_bytes."
        elif exc.status_code == 429:
            hint = " The server is overloaded; retry later or lower the ingest rate."
        raise IndexError_(
            f"Elasticsearch at {where} refused {action} ({exc.status_code} {error_summary(exc.body)}).{hint}"
        ) from exc
    except elasticsearch.ConnectionTimeout as exc:
        raise IndexUnavailableError(
            f"Elasticsearch at {where} did not answer in time while {action}. Is it overloaded? "
            "Raise elasticsearch.request_timeout if it is just slow."
        ) from exc
    except elasticsearch.SSLError as exc:
        raise IndexUnavailableError(
            f"TLS failed talking to {where}: {exc.message}. Point ELASTICSEARCH_CA_CERTS (or elasticsearch.ca_certs) "
            "at the cluster's CA certificate."
        ) from exc
    except elasticsearch.ConnectionError as exc:
        raise IndexUnavailableError(
            f"cannot reach Elasticsearch at {where} while {action}: {exc.message}. Start the local one with "
            "`teran-es elasticsearch start`, or set ELASTICSEARCH_URL to a running cluster."
        ) from exc
    except elasticsearch.TransportError as exc:
        raise IndexUnavailableError(
            f"talking to Elasticsearch at {where} failed while {action}: {exc}"
        ) from exc


def server_version_of(client: Elasticsearch) -> str:
    """The server's version: ``GET /``, or the local node's info where ``/`` is not served
    (the minimal integ-test distribution answers ``GET /`` with 405)."""
    try:
        return str(client.info()["version"]["number"])
    except elasticsearch.ApiError as exc:
        if exc.status_code not in (404, 405):
            raise
    nodes = client.nodes.info(node_id="_local", filter_path="nodes.*.version")["nodes"]
    return str(next(iter(nodes.values()))["version"])


def check_server(client: Elasticsearch, where: str) -> str:
    """The server's version, after checking it answers and shares the client's major version."""
    try:
        with translated_errors("checking the server", where):
            version = server_version_of(client)
    except IndexError_ as exc:
        cause = exc.__cause__
        if isinstance(cause, elasticsearch.ApiError) and "media_type_header_exception" in str(cause.body):
            # An older server rejects the client's "compatible-with=<major>" header.
            raise IndexUnavailableError(
                f"the server at {where} is older than Elasticsearch {_major(CLIENT_VERSION)}.x, which this "
                f"client ({CLIENT_VERSION}) needs. Use a {_major(CLIENT_VERSION)}.x cluster, or "
                "`teran-es elasticsearch start`."
            ) from cause
        if isinstance(exc, IndexUnavailableError):
            raise
        raise IndexUnavailableError(f"{exc} Is the URL that of an Elasticsearch server?") from cause
    if _major(version) != _major(CLIENT_VERSION):
        raise IndexUnavailableError(
            f"the server at {where} runs Elasticsearch {version}, but this teran-es uses the {CLIENT_VERSION} "
            f"client: the major versions must match. Use a {_major(CLIENT_VERSION)}.x cluster (e.g. "
            "`teran-es elasticsearch start`), or install the matching `elasticsearch` Python package."
        )
    try:
        with translated_errors("listing the cluster's nodes", where):
            nodes = client.nodes.info(filter_path="nodes.*.name,nodes.*.version").get("nodes", {})
    except IndexUnavailableError as exc:
        if isinstance(exc.__cause__, elasticsearch.AuthorizationException):
            return version  # credentials without the `monitor` privilege: the check is skipped
        raise
    problem = mixed_major_versions(
        {str(n.get("name", node_id)): str(n["version"]) for node_id, n in nodes.items() if n.get("version")},
        _major(CLIENT_VERSION),
    )
    if problem:
        raise IndexUnavailableError(f"the cluster at {where} {problem}")
    return version


def mixed_major_versions(node_versions: Mapping[str, str], client_major: int) -> str | None:
    """What is wrong when the nodes (name -> version) do not all run ``client_major``.x, naming
    the odd ones; None when they do. (A rolling upgrade leaves a cluster in that state.)"""
    odd = {name: v for name, v in sorted(node_versions.items()) if _major(v) != client_major}
    if not odd:
        return None
    listed = ", ".join(f"{name} runs {version}" for name, version in odd.items())
    return (
        f"mixes major versions: {listed}, while this teran-es needs {client_major}.x on every node. Finish "
        f"the upgrade (or downgrade) of those nodes, or take them out of the cluster, before using it."
    )


def create_index(
    client: Elasticsearch,
    index: str,
    config: ElasticsearchConfig,
    meta: Mapping[str, Any] | None,
    where: str,
    alias: str | None = None,
) -> bool:
    """Create the concrete ``index`` from the shipped mapping with ``config``'s shards and
    replicas and ``meta`` in ``_meta`` (and ``alias`` on it, in the same request); wait until
    it is yellow. Returns False when it already existed (another process created it first)."""
    definition = es_queries.index_definition(
        load_mapping(IMAGE_INDEX, CURRENT_VERSION),
        {**dict(meta or {}), "created_by": f"teran-es {teran_es.__version__}"},
        shards=config.shards,
        replicas=config.replicas,
    )
    with translated_errors("creating the index", where, index):
        try:
            client.indices.create(
                index=index, settings=definition["settings"], mappings=definition["mappings"],
                aliases={alias: {}} if alias else None,
            )
        except elasticsearch.BadRequestError as exc:
            if "resource_already_exists_exception" not in str(exc.body):
                raise
            return False
        client.options(ignore_status=408).cluster.health(index=index, wait_for_status="yellow", timeout="30s")
    return True


def check_index(
    client: Elasticsearch, index: str, meta: Mapping[str, Any] | None, where: str, label: str | None = None
) -> dict[str, Any]:
    """Check that the concrete ``index`` is a teran-es image index whose fingerprints match
    ``meta``; returns its ``_meta``. ``label`` names it in messages (default: its name)."""
    with translated_errors("opening the index", where, index):
        mapping = client.indices.get_mapping(index=index)
    body = mapping[index]["mappings"] if index in mapping else next(iter(mapping.values()))["mappings"]
    recorded = dict(body.get("_meta") or {})
    target = f"Elasticsearch index {label or repr(index)} on {where}"
    field_type = body.get("properties", {}).get(TERMS_FIELD, {}).get("type")
    if field_type != "sparse_vector" or recorded.get("mapping") != IMAGE_INDEX:
        raise IndexMismatchError(
            f"{target} is not a teran-es image index (its {TERMS_FIELD!r} field is {field_type!r}); "
            "choose another index name, or delete that index"
        )
    if int(recorded.get("mapping_version", 0)) > CURRENT_VERSION:
        raise IndexMismatchError(
            f"{target} uses mapping version {recorded.get('mapping_version')}, newer than this teran-es knows "
            f"({CURRENT_VERSION}); upgrade teran-es"
        )
    check_meta(recorded, meta or {}, target)
    return recorded
