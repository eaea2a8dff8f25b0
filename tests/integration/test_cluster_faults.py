"""Faults against a real 3-node cluster (the session's ``es_cluster``: three local nodes, each a
real Elasticsearch process, from `teran-es elasticsearch start --nodes 3`).

* A data node SIGKILLed in the middle of an ingest: the ingest finishes or a re-run does, and
  the index then holds exactly the store's images, once each.
* A node SIGKILLed while 8 query streams run against an index with 1 replica: queries keep
  answering; errors and p99 latency before, during (until green again) and after; the node is
  restarted and the cluster returns to green.
* The alias switched (a rebuild) under 8 query streams: no query fails, none mixes the builds.
* The master SIGKILLed: another node is elected and ingest resumes.

The kills are real SIGKILLs of a node's whole process group. Each test restarts what it killed.
Measured numbers are printed (run with ``-s``) and written to ``cluster-faults-<test>.json`` in
the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from teran_es.config import ElasticsearchConfig, load_config
from teran_es.features.columnar import ColumnarReader
from teran_es.features.synthetic import make_synthetic_dataset, tiny_model_overrides
from teran_es.index import IndexError_
from teran_es.index.base import SurrogateDocument
from teran_es.index.elastic import ElasticIndex
from teran_es.index.elastic_rebuild import rebuild_behind_alias
from teran_es.indexer import Ingestor
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model
from teran_es.server.cluster import restart_node
from teran_es.server.health import http_get_json
from teran_es.server.process import pid_alive
from teran_es.server.state import NodeState, read_state
from teran_es.store import FeatureStore
from teran_es.workdir import Artifacts

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]

IMAGES = 1500
STREAMS = 8
VOCAB = 400


# --------------------------------------------------------------------------- cluster helpers


def live_nodes(cache) -> list[NodeState]:
    state = read_state(cache)
    assert state is not None and state.nodes
    return [n for n in state.nodes if pid_alive(n.pid, n.pid_start_ticks)]


def urls(cache) -> str:
    return ",".join(n.url for n in read_state(cache).nodes)


def master_name(cache) -> str | None:
    for node in live_nodes(cache):
        body = http_get_json(f"{node.url}/_nodes/_master?filter_path=nodes.*.name", timeout=2.0)
        for found in (body or {}).get("nodes", {}).values():
            return found.get("name")
    return None


def kill(node: NodeState) -> None:
    """SIGKILL the node's process group (launcher and JVM) and wait until its port is closed."""
    with contextlib.suppress(ProcessLookupError):  # already killed (kill_when_indexed)
        os.killpg(node.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while pid_alive(node.pid) or http_get_json(f"{node.url}/_cluster/health", timeout=1.0) is not None:
        assert time.monotonic() < deadline, f"{node.name} survived SIGKILL"
        time.sleep(0.2)


HEALTH_RANK = {"red": 0, "yellow": 1, "green": 2}


def wait_for_health(cache, status: str, timeout: float = 180.0) -> float:
    """Seconds until the cluster (asked of any live node) reports ``status`` or better: a wait for
    yellow is also met by green, as Elasticsearch's own ``wait_for_status`` is."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for node in live_nodes(cache):
            body = http_get_json(f"{node.url}/_cluster/health?wait_for_status={status}&timeout=2s", timeout=5.0)
            if body and HEALTH_RANK.get(body.get("status"), -1) >= HEALTH_RANK[status] and not body.get("timed_out"):
                return time.monotonic() - start
        time.sleep(0.5)
    # a wait that timed out answers 408 (no body): ask once more without waiting, for the message
    now = next((b for n in live_nodes(cache) if (b := http_get_json(f"{n.url}/_cluster/health", timeout=5.0))), None)
    raise AssertionError(f"the cluster did not turn {status} within {timeout:.0f}s; "
                         f"health now {json.dumps(now)}; {unassigned_explained(cache)}")


def unassigned_explained(cache) -> str:
    """Why the first unassigned shard is unassigned (Elasticsearch's allocation explain), for a
    failure message; empty when every shard is assigned or no node answers."""
    for node in live_nodes(cache):
        body = http_get_json(f"{node.url}/_cluster/allocation/explain?filter_path=index,shard,primary,"
                             f"current_state,unassigned_info,allocate_explanation", timeout=5.0)
        if body:
            return f"allocation explain {json.dumps(body)}"
    return ""


def restart(cache, name: str) -> float:
    """Start the killed node again; seconds until the cluster is green."""
    start = time.monotonic()
    restart_node(name, cache_dir=cache, timeout=240)
    wait_for_health(cache, "green")
    return time.monotonic() - start


def non_master(cache) -> NodeState:
    master = master_name(cache)
    return next(n for n in reversed(live_nodes(cache)) if n.name != master)


def report(tmp_path, name: str, numbers: dict) -> None:
    print(f"\n[cluster-faults] {name}: {json.dumps(numbers, sort_keys=True)}")
    (tmp_path / f"cluster-faults-{name}.json").write_text(json.dumps(numbers, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def cluster(es_cluster):
    state, cache = es_cluster
    wait_for_health(cache, "green")
    return SimpleNamespace(cache=cache, config=ElasticsearchConfig(url=urls(cache), bulk_chunk_docs=100,
                                                                   shards=3, replicas=1))


@pytest.fixture
def cluster_index(cluster):
    """Factory: an index of ``n`` random documents (3 shards, 1 replica) on the cluster; deleted after."""
    opened: list[ElasticIndex] = []

    def make(n: int = 3000, replicas: int = 1, name: str | None = None) -> ElasticIndex:
        config = replace(cluster.config, replicas=replicas)
        index = ElasticIndex.open(config, name or f"teran-cluster-{uuid.uuid4().hex[:10]}", meta={})
        opened.append(index)
        if n:
            assert index.add(random_docs(n)).failed == 0
            index.refresh()
        if replicas:
            # The faults below assume every shard has a started replica to promote. Creating the
            # index waits for primaries only; a replica still recovering when its primary's node
            # is killed cannot take over and leaves the index red.
            health = index.client.options(ignore_status=408).cluster.health(
                index=index.name, wait_for_status="green", wait_for_no_initializing_shards=True, timeout="120s")
            assert health["status"] == "green" and not health["timed_out"], dict(health)
        return index

    yield make
    for index in opened:
        index.delete_index()
        index.close()


def random_docs(n: int, seed: int = 0, frequency: int | None = None) -> list[SurrogateDocument]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        terms = rng.choice(VOCAB, size=20, replace=False)
        docs.append(SurrogateDocument(
            id=f"img{i:06d}",
            terms={f"t{t}": int(frequency or rng.integers(1, 100)) for t in terms},
            caption=f"#{i}",
        ))
    return docs


def random_queries(n: int, seed: int = 1) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [{f"t{t}": float(rng.random()) for t in rng.choice(VOCAB, size=8, replace=False)} for _ in range(n)]


class QueryStreams:
    """``STREAMS`` threads, each searching in a loop with its own client; every answer or error is
    recorded with its time, to be cut into phases afterwards."""

    def __init__(self, config: ElasticsearchConfig, name: str, k: int = 100, check=None, queries=None):
        self.samples: list[tuple[float, float, bool]] = []  # (finished at, seconds, ok)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._check = check
        self._queries = queries
        self._indexes = [ElasticIndex.open(config, name, create=False) for _ in range(STREAMS)]
        self._threads = [threading.Thread(target=self._run, args=(i, k), daemon=True) for i in range(STREAMS)]

    def _run(self, stream: int, k: int) -> None:
        queries = self._queries or random_queries(50, seed=stream)
        i = 0
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                hits = self._indexes[stream].search(queries[i % len(queries)], k)
                ok = self._check(hits) if self._check else True
                error = None if ok else f"mixed answer: {len(hits)} hits, scores {sorted({h.score for h in hits})}"
            except IndexError_ as exc:
                ok, error = False, str(exc)[:200]
            done = time.perf_counter()
            with self._lock:
                self.samples.append((done, done - t, ok))
                if error:
                    self.errors.append(error)
            i += 1

    def __enter__(self) -> QueryStreams:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        for index in self._indexes:
            index.close()

    def phase(self, start: float, end: float) -> dict:
        picked = [(s, ok) for done, s, ok in self.samples if start <= done < end]
        ok = np.array([s for s, good in picked if good]) * 1000
        return {
            "queries": len(picked),
            "errors": sum(1 for _, good in picked if not good),
            "qps": round(len(picked) / max(end - start, 1e-9), 1),
            "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok.size else None,
            "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok.size else None,
        }


# --------------------------------------------------------------------------- the faults


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """IMAGES synthetic images, a tiny random checkpoint and the overrides of a pipeline."""
    root = tmp_path_factory.mktemp("cluster-collection")
    data = make_synthetic_dataset(root / "data", train_images=IMAGES, val_images=0, test_images=0, seed=5)
    overrides = [
        *tiny_model_overrides(data.text_backbone),
        f"checkpoint={root / 'checkpoint'}",
        "quantizer.gamma=16",
        "quantizer.doc_gamma=64",
        "quantizer.sample_size=2000",
        "store.shard_size=256",
        "ingest.device=cpu",
        "elasticsearch.bulk_chunk_docs=50",
        "elasticsearch.shards=3",
        "elasticsearch.replicas=1",
        "index.backend=elasticsearch",
    ]
    torch.manual_seed(0)
    save_checkpoint(build_model(load_config(None, overrides).model).eval(), root / "checkpoint",
                    load_config(None, overrides))
    records = list(ColumnarReader(data.data_path).iter_records())
    return SimpleNamespace(overrides=overrides, records=records, ids=[r.image_id for r in records])


def test_status_and_url_see_every_node(cluster):
    from click.testing import CliRunner

    from teran_es.cli import cli
    from teran_es.server.cluster import cluster_status
    from teran_es.server.process import local_url

    deadline = time.monotonic() + 90  # a node busy with the previous work may answer late
    while True:
        found = cluster_status(cluster.cache)
        if (found and all(n.answers for n in found.nodes)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert found is not None and found.running and found.number_of_nodes == 3
    assert [n.name for n in found.nodes] == ["node-1", "node-2", "node-3"]
    assert all(n.alive and n.answers for n in found.nodes) and found.master in {n.name for n in found.nodes}
    assert local_url(cluster.cache) == urls(cluster.cache)
    result = CliRunner(env={"TERAN_ES_CACHE": str(cluster.cache)}).invoke(cli, ["elasticsearch", "status"])
    assert result.exit_code == 0, result.output
    assert "3 of 3 nodes joined" in result.output and result.output.count(": running at http://127.0.0.1:") == 3


def test_data_node_killed_mid_ingest_then_rerun_is_exact(cluster, collection, tmp_path, kill_when_indexed):
    name = f"teran-cluster-ingest-{uuid.uuid4().hex[:8]}"
    config = load_config(None, [*collection.overrides, f"workdir={tmp_path / 'work'}", f"index.name={name}",
                                f"elasticsearch.url={urls(cluster.cache)}"])
    victim = non_master(cluster.cache)
    ask = next(n.url for n in live_nodes(cluster.cache) if n.name != victim.name)
    # the cluster's indexing counter starts where earlier tests left it
    stats = f"{ask}/_nodes/stats/indices/indexing?filter_path=nodes.*.indices.indexing.index_total"
    before = http_get_json(stats)
    base = sum(n["indices"]["indexing"]["index_total"] for n in (before or {}).get("nodes", {}).values())
    killer = kill_when_indexed(victim.pid, stats, after=base + IMAGES // 2)  # primaries and replicas both count
    first_error = None
    try:
        with Ingestor(config) as ingestor:
            killer.start()
            try:
                first = ingestor.ingest(collection.records)
            except IndexError_ as exc:  # the ingest may stop; a re-run must finish it
                first, first_error = None, str(exc)[:200]
    finally:
        killer.stop()
        kill_seen = killer.killed_at is not None
        if kill_seen:
            kill(victim)
            seconds_to_green = restart(cluster.cache, victim.name)
    assert kill_seen, "the ingest finished before the node could be killed"
    with Ingestor(config) as ingestor:
        again = ingestor.ingest(collection.records)
    assert again.index_failed == 0 and again.total_in_store == IMAGES
    # exact: the index holds one document per stored image with terms, nothing else, nothing twice
    store = FeatureStore.open(Artifacts(config).store)
    try:
        stored = sorted(store.ids())
    finally:
        store.close()
    assert stored == sorted(collection.ids)
    with ElasticIndex.open(config.elasticsearch, name, create=False) as index:
        index.refresh()
        present = index.existing_ids(stored)
        assert index.count() == len(present) == again.total_in_index
        assert len(present) > 0.95 * IMAGES
        from elasticsearch import helpers

        ids = [h["_id"] for h in helpers.scan(index.client, index=name, query={"query": {"match_all": {}}},
                                              _source=False)]
        index.delete_index()
    assert len(ids) == len(set(ids)) == len(present) and set(ids) <= set(stored)
    report(tmp_path, "kill-mid-ingest", {
        "images": IMAGES, "killed": victim.name, "ops_at_kill": killer.killed_at - base,
        "first_run_finished": first is not None, "first_run_error": first_error,
        "rerun_indexed": again.indexed, "rerun_skipped_existing": again.skipped_existing,
        "documents": len(ids), "seconds_restart_to_green": round(seconds_to_green, 1),
    })


def test_node_killed_under_eight_query_streams_keeps_answering(cluster, cluster_index, tmp_path):
    index = cluster_index(3000, replicas=1)
    victim = non_master(cluster.cache)
    with QueryStreams(cluster.config, index.name) as streams:
        t0 = time.perf_counter()
        time.sleep(5)
        t_kill = time.perf_counter()
        kill(victim)
        time.sleep(5)
        t_restart = time.perf_counter()
        seconds_to_green = restart(cluster.cache, victim.name)
        t_green = time.perf_counter()
        time.sleep(5)
        t_end = time.perf_counter()
    phases = {
        "before": streams.phase(t0, t_kill),
        "node_down": streams.phase(t_kill, t_restart),
        "restarting": streams.phase(t_restart, t_green),
        "after_green": streams.phase(t_green, t_end),
    }
    report(tmp_path, "kill-under-8-streams", {"killed": victim.name, "documents": 3000, "k": 100,
                                             "seconds_restart_to_green": round(seconds_to_green, 1),
                                             "first_errors": streams.errors[:3], **phases})
    down = phases["node_down"]
    assert down["queries"] > 0 and down["errors"] <= 0.05 * down["queries"], streams.errors[:3]
    assert phases["after_green"]["errors"] == 0 and phases["after_green"]["queries"] > 0


def shared_docs(n: int, frequency: int) -> list[SurrogateDocument]:
    """Documents that all hold the term ``shared`` ``frequency`` times: each scores ``frequency``
    for ``{"shared": 1}``, so an answer's scores say which build it came from."""
    return [SurrogateDocument(id=f"img{i:06d}", terms={"shared": frequency, f"own{i}": 1}) for i in range(n)]


def test_alias_switched_under_eight_query_streams_no_failure_no_mix(cluster, cluster_index, tmp_path):
    n = 1000
    old = cluster_index(0, replicas=1)
    assert old.add(shared_docs(n, 1)).failed == 0
    old.refresh()
    builds_seen: list[frozenset] = []

    def whole(hits) -> bool:
        scores = frozenset(h.score for h in hits)
        builds_seen.append(scores)
        return len(hits) == n and scores in (frozenset({1.0}), frozenset({3.0}))

    with QueryStreams(cluster.config, old.name, k=n, check=whole, queries=[{"shared": 1.0}]) as streams:
        time.sleep(2)
        t_switch = time.perf_counter()
        result = rebuild_behind_alias(old, {}, lambda new: (n, new.add(shared_docs(n, 3)).failed))
        t_done = time.perf_counter()
        time.sleep(3)
    assert result.switched and result.count == n
    report(tmp_path, "alias-switch-under-8-streams", {
        "documents": n, "rebuild_seconds": round(t_done - t_switch, 1), "queries": len(streams.samples),
        "old_build_answers": builds_seen.count(frozenset({1.0})),
        "new_build_answers": builds_seen.count(frozenset({3.0})),
        "errors": len(streams.errors), "first_errors": streams.errors[:3],
    })
    assert streams.errors == []
    assert frozenset({1.0}) in builds_seen and frozenset({3.0}) in builds_seen


def test_master_killed_another_is_elected_and_ingest_resumes(cluster, cluster_index, tmp_path):
    index = cluster_index(500, replicas=1)
    old_master = master_name(cluster.cache)
    node = next(n for n in live_nodes(cluster.cache) if n.name == old_master)
    t_kill = time.perf_counter()
    kill(node)
    new_master = None
    while new_master in (None, old_master):
        assert time.perf_counter() - t_kill < 120, "no new master within 120 s"
        time.sleep(0.2)
        new_master = master_name(cluster.cache)
    elected_after = time.perf_counter() - t_kill
    # every primary has a live copy again (a replica promoted) once the cluster is yellow
    primaries_back_after = wait_for_health(cluster.cache, "yellow", timeout=120) + elected_after
    more = random_docs(1000)[500:]
    t = time.perf_counter()
    attempts, errors = 0, []
    while True:  # an ingest cut short is finished by running it again (ids are stable)
        attempts += 1
        try:
            added = index.add(more)
            break
        except IndexError_ as exc:
            errors.append(str(exc)[:200])
            assert attempts < 3, errors
    index.refresh()
    ingest_seconds = time.perf_counter() - t
    assert added.failed == 0 and index.count() == 1000
    seconds_to_green = restart(cluster.cache, old_master)
    report(tmp_path, "master-killed", {
        "old_master": old_master, "new_master": new_master, "seconds_to_new_master": round(elected_after, 1),
        "seconds_to_yellow": round(primaries_back_after, 1), "ingest_attempts": attempts, "ingest_errors": errors,
        "ingest_500_after_seconds": round(ingest_seconds, 2), "seconds_restart_to_green": round(seconds_to_green, 1),
    })
    assert new_master != old_master
