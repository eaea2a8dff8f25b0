"""The alias's pure parts: generation names, the next build's name, and the refusal of a
cluster whose nodes run different major versions (named)."""

from __future__ import annotations

import pytest

from teran_es.config import ElasticsearchConfig
from teran_es.index.base import IndexUnavailableError
from teran_es.index.elastic import CLIENT_VERSION, ElasticIndex
from teran_es.index.elastic_alias import generation_name, generation_of, next_generation
from teran_es.index.elastic_server import mixed_major_versions

MAJOR = int(CLIENT_VERSION.split(".")[0])


def test_generation_names_round_trip_and_the_next_one_follows_the_highest():
    assert generation_name("images", 1) == "images-000001"
    assert generation_of("images", "images-000042") == 42
    for other in ("images", "images-42", "images-000001-x", "imagesx-000001", "other-000001"):
        assert generation_of("images", other) is None
    assert next_generation("images", []) == "images-000001"
    assert next_generation("images", ["images", "images-000002", "images-000007", "images-x"]) == "images-000008"
    # a name with regex characters is matched literally
    assert generation_of("a.b", "axb-000001") is None and generation_of("a.b", "a.b-000003") == 3
    with pytest.raises(ValueError):
        generation_name("images", 0)


def test_mixed_major_versions_name_the_odd_nodes():
    assert mixed_major_versions({"n1": f"{MAJOR}.5.4", "n2": f"{MAJOR}.1.0"}, MAJOR) is None
    problem = mixed_major_versions({"n1": f"{MAJOR}.5.4", "old-node": f"{MAJOR - 1}.19.3"}, MAJOR)
    assert problem is not None and f"old-node runs {MAJOR - 1}.19.3" in problem and "n1" not in problem


class _Nodes:
    def __init__(self, versions):
        self._versions = versions

    def info(self, **kwargs):
        return {"nodes": {f"id{i}": {"name": n, "version": v} for i, (n, v) in enumerate(self._versions.items())}}


class _Client:
    """Answers the server check only: ``GET /`` and the nodes' versions."""

    def __init__(self, versions):
        self.nodes = _Nodes(versions)

    def info(self):
        return {"version": {"number": f"{MAJOR}.5.4"}}


def test_a_cluster_mixing_major_versions_is_refused_by_node_name():
    client = _Client({"es-a": f"{MAJOR}.5.4", "es-b": f"{MAJOR + 1}.0.0", "es-c": f"{MAJOR}.5.4"})
    with pytest.raises(IndexUnavailableError, match=f"mixes major versions: es-b runs {MAJOR + 1}.0.0"):
        ElasticIndex.open(ElasticsearchConfig(), "images", client=client)
