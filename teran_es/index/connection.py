"""Where the Elasticsearch server is and how to authenticate (pure resolution; no client import).

Order: ``ElasticsearchConfig.url``, else ``$ELASTICSEARCH_URL``, else the local server
recorded by ``teran-es elasticsearch start``. A URL may name several nodes of one cluster,
comma-separated (the live nodes of a local cluster are given that way). Credentials come only from the environment
(variables named in the config) and are never logged or shown: ``repr`` redacts them.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teran_es.config import ElasticsearchConfig, url_without_credentials
from teran_es.index.base import IndexUnavailableError

URL_ENV = "ELASTICSEARCH_URL"
CA_CERTS_ENV = "ELASTICSEARCH_CA_CERTS"
REDACTED = "***"


class NoElasticsearchError(IndexUnavailableError):
    """No server is configured and no local one runs."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the client needs. Secrets are kept out of ``repr`` and ``describe``."""

    url: str
    source: str  # "config" | "ELASTICSEARCH_URL" | "local server (<state file>)"
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    request_timeout: float = 60.0

    @property
    def auth_kind(self) -> str:
        if self.api_key:
            return "api key"
        if self.username:
            return "basic"
        return "none"

    def describe(self) -> str:
        """A one-line, secret-free description for messages and logs."""
        return f"{url_without_credentials(self.url, REDACTED)} (from {self.source}, auth: {self.auth_kind})"

    def __repr__(self) -> str:
        return (
            f"ConnectionSettings(url={url_without_credentials(self.url, REDACTED)!r}, source={self.source!r}, "
            f"api_key={REDACTED if self.api_key else None!r}, username={self.username!r}, "
            f"password={REDACTED if self.password else None!r}, ca_certs={self.ca_certs!r}, "
            f"request_timeout={self.request_timeout!r})"
        )

    __str__ = __repr__

    @property
    def hosts(self) -> list[str]:
        """The node URLs: ``url`` may list several nodes of one cluster, comma-separated; the
        client spreads requests over them and retries another when one does not answer."""
        return [part.strip() for part in self.url.split(",") if part.strip()]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``elasticsearch.Elasticsearch`` (holds secrets: never log it)."""
        kwargs: dict[str, Any] = {"hosts": self.hosts, "request_timeout": self.request_timeout}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        elif self.username:
            kwargs["basic_auth"] = (self.username, self.password or "")
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        return kwargs


def _local_server_url() -> tuple[str | None, str]:
    # Imported here: the server modules are stdlib-only, but the index layer should not load them eagerly.
    from teran_es.server.process import local_url
    from teran_es.server.state import server_paths

    return local_url(), str(server_paths().state_file)


def resolve_connection(
    config: ElasticsearchConfig, environ: Mapping[str, str] | None = None
) -> ConnectionSettings:
    """The server to talk to, or ``NoElasticsearchError`` saying how to get one."""
    env = os.environ if environ is None else environ
    if config.url:
        url, source = config.url, "config"
    elif env.get(URL_ENV):
        url, source = env[URL_ENV], URL_ENV
    else:
        found, state_file = _local_server_url()
        if found is None:
            raise NoElasticsearchError(
                "no Elasticsearch server is configured: start one with `teran-es elasticsearch start` "
                f"or set {URL_ENV} (plus {config.api_key_env}, or {config.username_env}/{config.password_env}, "
                f"and {CA_CERTS_ENV} if needed)"
            )
        url, source = found, f"local server ({state_file})"
    for part in url.split(","):
        if urllib.parse.urlsplit(part.strip()).scheme not in ("http", "https"):
            raise NoElasticsearchError(
                f"Elasticsearch URL {url_without_credentials(part.strip(), REDACTED)!r} (from {source}) needs a "
                "scheme: http:// or https:// (several nodes of one cluster: comma-separated URLs)"
            )
    api_key = env.get(config.api_key_env) or None
    username = env.get(config.username_env) or None
    password = env.get(config.password_env) or None
    ca_certs = config.ca_certs or env.get(CA_CERTS_ENV) or None
    if ca_certs and not os.path.isfile(ca_certs):
        raise NoElasticsearchError(f"CA certificate file {ca_certs!r} does not exist")
    return ConnectionSettings(
        url=url,
        source=source,
        api_key=api_key,
        username=username,
        password=password,
        ca_certs=ca_certs,
        request_timeout=config.request_timeout,
    )
