"""The backend registry: the one list of backends, what each owns, and the protocol they keep."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Protocol

import click
import pytest

from teran_es.config import PipelineConfig
from teran_es.errors import ConfigError
from teran_es.index import BACKENDS, ExtendedIndex, Index, dead_letter_path, open_index


def protocol_methods(protocol: type) -> set[str]:
    """The methods a protocol declares (its own and those of the protocols it extends)."""
    return {
        name
        for klass in protocol.__mro__
        if klass is not Protocol and getattr(klass, "_is_protocol", False)
        for name, member in vars(klass).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


@pytest.mark.parametrize("verb", ["ingest", "search", "evaluate", "reproduce"])
def test_the_cli_offers_exactly_the_registered_backends(verb):
    from teran_es.cli import VERBS

    module_name, attr = VERBS[verb].split(":")
    command = getattr(__import__(module_name, fromlist=[attr]), attr)
    (option,) = [p for p in command.params if p.name == "backend"]
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == list(BACKENDS)


def test_the_core_is_what_the_library_calls_and_the_extension_the_rest():
    assert protocol_methods(Index) == {"meta", "add", "search", "get_many", "existing_ids", "count", "refresh", "close"}
    assert protocol_methods(ExtendedIndex) - protocol_methods(Index) == {"search_many", "get", "delete"}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("protocol", [Index, ExtendedIndex])
def test_every_backend_class_has_the_methods_of_both_protocols(backend, protocol):
    index_class = BACKENDS[backend].index_class()
    missing = sorted(m for m in protocol_methods(protocol) if not callable(getattr(index_class, m, None)))
    assert missing == []


def test_an_open_embedded_index_is_an_index_and_an_extended_one(tmp_path):
    config = PipelineConfig(workdir=str(tmp_path / "work"))
    index = open_index(config)
    try:
        assert isinstance(index, Index) and isinstance(index, ExtendedIndex)
    finally:
        index.close()


def test_each_backend_owns_its_dead_letter_path(tmp_path):
    config = PipelineConfig(workdir=str(tmp_path / "work"))
    assert dead_letter_path(config) == tmp_path / "work" / "index" / "dead-letter.jsonl"
    config.index.backend = "elasticsearch"
    assert dead_letter_path(config) == tmp_path / "work" / "dead-letter.jsonl"
    config.elasticsearch.dead_letter_path = str(tmp_path / "rejected.jsonl")
    assert dead_letter_path(config) == Path(tmp_path / "rejected.jsonl")


def test_an_unknown_backend_is_a_config_error_naming_the_known_ones(tmp_path):
    config = PipelineConfig(workdir=str(tmp_path / "work"))
    config.index.backend = "solr"
    for call in (open_index, dead_letter_path):
        with pytest.raises(ConfigError, match="unknown index backend 'solr' \\(known: embedded, elasticsearch\\)"):
            call(config)
