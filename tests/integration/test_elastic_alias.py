"""Aliases against a real Elasticsearch: every index is reached through its alias, an older
teran-es's concrete index keeps working, bad states (alias on two indexes, a red index) are
refused with what to do, and a rebuild switches the alias atomically under search load, or
leaves it where it was when it fails."""

from __future__ import annotations

import threading
import time

import pytest

from teran_es.index.base import IndexUnavailableError, SurrogateDocument
from teran_es.index.elastic_alias import AliasConflictError
from teran_es.index.elastic_rebuild import RebuildError, rebuild_behind_alias
from teran_es.index.elastic_server import create_index
from teran_es.index.es_queries import index_definition
from teran_es.index.mappings import load_mapping

pytestmark = pytest.mark.elasticsearch

META = {"quantizer_fingerprint": "quant-aaaa", "model_fingerprint": "model-bbbb"}
QUERY = {"shared": 1.0}


def docs(n: int, frequency: int) -> list[SurrogateDocument]:
    """``n`` documents that all hold the term ``shared`` ``frequency`` times: every one scores
    ``frequency`` for QUERY, so a result's scores tell which build answered."""
    return [SurrogateDocument(id=f"img{i:04d}", terms={"shared": frequency, f"own{i}": 1}, caption=f"#{i}")
            for i in range(n)]


def aliases_of(es_admin, name: str) -> list[str]:
    return sorted(es_admin.indices.get_alias(name=name)) if es_admin.indices.exists_alias(name=name) else []


def test_a_new_index_is_an_alias_on_its_first_generation(open_es_index, es_admin, index_name):
    index = open_es_index(index_name, meta=META)
    assert aliases_of(es_admin, index_name) == [f"{index_name}-000001"]
    assert index.target.concrete == f"{index_name}-000001" and not index.target.legacy
    index.add(docs(30, 1))
    index.refresh()
    assert index.count() == 30 and len(index.search(QUERY, 50)) == 30
    assert index.size_on_disk() > 0
    # reopening finds the alias, not a second index
    assert open_es_index(index_name, create=False, meta=META).target.concrete == f"{index_name}-000001"


def test_an_older_concrete_index_keeps_working_and_a_rebuild_makes_it_an_alias(
    open_es_index, es_admin, es_config, index_name
):
    create_index(es_admin, index_name, es_config, META, "test")  # what teran-es made before aliases
    legacy = open_es_index(index_name, meta=META)
    assert legacy.target.legacy and aliases_of(es_admin, index_name) == []
    legacy.add(docs(20, 1))
    legacy.refresh()
    report = rebuild_behind_alias(legacy, META, lambda new: (len(docs(20, 2)), new.add(docs(20, 2)).failed))
    assert report.switched and report.count == 20 and report.new_index == f"{index_name}-000001"
    assert aliases_of(es_admin, index_name) == [f"{index_name}-000001"]  # the old index went in the switch
    again = open_es_index(index_name, create=False, meta=META)
    assert {h.score for h in again.search(QUERY, 50)} == {2.0}


def test_an_alias_on_two_indexes_is_refused_naming_both(open_es_index, es_admin, es_config, index_name):
    open_es_index(index_name, meta=META)
    second = f"{index_name}-000002"
    create_index(es_admin, second, es_config, META, "test", alias=index_name)
    with pytest.raises(AliasConflictError, match=f"{index_name}-000001, {second}.*POST _aliases"):
        open_es_index(index_name, create=False, meta=META)


def test_a_red_index_is_refused_with_what_to_do(open_es_index, es_admin, index_name):
    # A teran-es index whose only shard may live on a node that does not exist: it stays red.
    definition = index_definition(load_mapping(), META, shards=1, replicas=0)
    definition["settings"]["index"]["routing.allocation.require._name"] = "no-such-node"
    es_admin.indices.create(index=f"{index_name}-000001", aliases={index_name: {}}, wait_for_active_shards="0",
                            **definition)
    with pytest.raises(IndexUnavailableError, match="is red: 1 primary shard.*Start the nodes that are down"):
        open_es_index(index_name, create=False, meta=META)


def test_missing_index_or_alias_says_to_ingest_first(open_es_index, index_name):
    with pytest.raises(IndexUnavailableError, match="does not exist.*ingest first"):
        open_es_index(index_name, create=False)


def test_rebuild_under_search_load_switches_atomically_and_a_failed_one_changes_nothing(
    open_es_index, es_admin, index_name
):
    old = open_es_index(index_name, meta=META)
    old.add(docs(200, 1))
    old.refresh()
    searcher = open_es_index(index_name, create=False, meta=META)  # a long-lived searching client
    answers: list[frozenset[float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search_loop():
        while not stop.is_set():
            try:
                hits = searcher.search(QUERY, 200)
                answers.append(frozenset(h.score for h in hits) | ({-1.0} if len(hits) != 200 else set()))
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=search_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # A rebuild that fails half way: the alias stays, the partial index is removed.
        def failing(new):
            new.add(docs(100, 2))
            raise OSError("the disk filled up")

        with pytest.raises(RebuildError, match="still points at.*-000001.*partial.*-000002.*was deleted"):
            rebuild_behind_alias(old, META, failing)
        assert aliases_of(es_admin, index_name) == [f"{index_name}-000001"]
        assert not es_admin.indices.exists(index=f"{index_name}-000002")

        # One whose count check fails (it sent more than the index holds): nothing moves either.
        with pytest.raises(RebuildError, match="holds 200 documents, but 201 were sent"):
            rebuild_behind_alias(old, META, lambda new: (201, new.add(docs(200, 2)).failed))
        assert aliases_of(es_admin, index_name) == [f"{index_name}-000001"]

        # A good one, filled slowly while the searches run.
        def slow_fill(new):
            batch = docs(200, 3)
            failed = 0
            for start in range(0, 200, 40):
                failed += new.add(batch[start : start + 40]).failed
                time.sleep(0.2)
            return 200, failed

        report = rebuild_behind_alias(old, META, slow_fill)
        time.sleep(1.0)  # searches after the switch
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert report.switched and report.old_removed
    assert aliases_of(es_admin, index_name) == [report.new_index]
    assert not es_admin.indices.exists(index=f"{index_name}-000001")
    assert errors == []
    # every answer came whole from one build: all 200 hits, all with the old score or all the new
    assert set(answers) <= {frozenset({1.0}), frozenset({3.0})}, set(answers) - {frozenset({1.0}), frozenset({3.0})}
    assert frozenset({1.0}) in answers and frozenset({3.0}) in answers


def test_the_old_index_outlives_the_switch_by_the_grace_period(open_es_index, es_admin, index_name, monkeypatch):
    """Searches that resolved the alias just before the switch finish on the old index: it is
    deleted only after the grace period, by which time the alias already points at the new one."""
    from teran_es.index import elastic_rebuild

    old = open_es_index(index_name, meta=META)
    old.add(docs(10, 1))
    old.refresh()
    seen = []

    def grace(seconds):
        seen.append((seconds, es_admin.indices.exists(index=f"{index_name}-000001"), aliases_of(es_admin, index_name)))

    monkeypatch.setattr(elastic_rebuild.time, "sleep", grace)
    report = rebuild_behind_alias(old, META, lambda new: (10, new.add(docs(10, 2)).failed), grace_seconds=2.5)
    assert seen == [(2.5, True, [f"{index_name}-000002"])]  # old index still there, alias already moved
    assert report.old_removed and not es_admin.indices.exists(index=f"{index_name}-000001")
