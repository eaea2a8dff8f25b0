"""ElasticIndex's server checks and error messages, with a stand-in client (no server)."""

from __future__ import annotations

import elasticsearch
import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig

from teran_es.config import ElasticsearchConfig
from teran_es.index.base import IndexError_, IndexUnavailableError
from teran_es.index.elastic import CLIENT_VERSION, ElasticIndex, server_version_of, translated_errors

CLIENT_MAJOR = int(CLIENT_VERSION.split(".")[0])


def api_error(cls, status: int, body: object):
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=NodeConfig("http", "localhost", 9200))
    return cls(message=str(body), meta=meta, body=body)


class FakeNodes:
    def __init__(self, version):
        self._version = version

    def info(self, **kwargs):
        return {"nodes": {"n1": {"version": self._version}}}


class FakeClient:
    """Answers only the server check: ``GET /`` (or its error) and the local node's info."""

    def __init__(self, info, nodes_version=None):
        self._info = info
        self.nodes = FakeNodes(nodes_version)
        self.closed = False

    def info(self):
        if isinstance(self._info, Exception):
            raise self._info
        return self._info

    def close(self):
        self.closed = True


def test_a_server_of_another_major_version_is_refused():
    client = FakeClient(info={"version": {"number": f"{CLIENT_MAJOR - 1}.19.3"}})
    with pytest.raises(IndexUnavailableError, match="major versions must match"):
        ElasticIndex.open(ElasticsearchConfig(), "images", client=client)
    assert not client.closed  # a client the caller passed in stays the caller's


def test_an_older_server_rejecting_the_compatibility_header_is_explained():
    error = api_error(elasticsearch.BadRequestError, 400,
                      {"error": {"type": "media_type_header_exception", "reason": "Invalid media-type value"}})
    with pytest.raises(IndexUnavailableError, match=f"older than Elasticsearch {CLIENT_MAJOR}"):
        ElasticIndex.open(ElasticsearchConfig(), "images", client=FakeClient(info=error))


def test_the_version_comes_from_node_info_where_root_is_not_served():
    error = api_error(elasticsearch.ApiError, 405, {"error": "Incorrect HTTP method for uri [/]", "status": 405})
    assert server_version_of(FakeClient(info=error, nodes_version="9.5.4")) == "9.5.4"


def test_an_unreachable_server_says_how_to_start_one():
    error = elasticsearch.ConnectionError("Connection refused")
    with pytest.raises(IndexUnavailableError, match="teran-es elasticsearch start"):
        ElasticIndex.open(ElasticsearchConfig(), "images", client=FakeClient(info=error))


@pytest.mark.parametrize(
    ("error", "kind", "phrase"),
    [
        (api_error(elasticsearch.AuthenticationException, 401, {"error": "x"}), IndexUnavailableError,
         "ELASTICSEARCH_API_KEY"),
        (api_error(elasticsearch.AuthorizationException, 403, {"error": {"type": "security_exception"}}),
         IndexUnavailableError, "Grant the role"),
        (api_error(elasticsearch.NotFoundError, 404, {"error": {"type": "index_not_found_exception"}}),
         IndexUnavailableError, "does not exist"),
        (api_error(elasticsearch.ApiError, 413, {"error": "too large"}), IndexError_, "bulk_chunk_bytes"),
        (elasticsearch.ConnectionTimeout("timed out"), IndexUnavailableError, "request_timeout"),
    ],
)
def test_client_errors_become_index_errors_that_say_what_to_do(error, kind, phrase):
    with pytest.raises(kind, match=phrase):
        with translated_errors("doing something", "http://es:9200", "images"):
            raise error
