"""Faults during ingest, with real processes and a real server.

* Elasticsearch SIGKILLed in the middle of an ingest (a second local server, so the session's
  one is left alone), restarted on the same data directory, and the same ingest run again.
* The ingest process (`teran-es ingest`) SIGKILLed mid-way and the same command run again.
* A read-only cache or work directory, and a full disk.

After each fault the collection must hold exactly the expected images: the feature store
holds each once, the index holds one document for each of them and nothing else, and each
document is what the quantizer makes of the stored regions.

What is real and what is arranged: the kills are real SIGKILLs. The full disk is a real
1 MiB tmpfs, mounted inside a user and mount namespace (``unshare``) because mounting needs
privileges the test should not have. Read-only directories are real permission bits; root
ignores those, so when the tests run as root the command runs in a user namespace as uid
1000, where they apply.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest
import torch

from teran_es.config import load_config, save_config
from teran_es.features.columnar import ColumnarReader
from teran_es.features.synthetic import make_synthetic_dataset, tiny_model_overrides
from teran_es.index import IndexUnavailableError, open_index
from teran_es.index.es_queries import document_from_source
from teran_es.indexer import Ingestor
from teran_es.model.checkpoint import save_checkpoint
from teran_es.model.teran import build_model
from teran_es.server.health import http_get_json
from teran_es.server.process import pid_alive, start
from teran_es.server.state import ServerState
from teran_es.store import FeatureStore
from teran_es.surrogate import load_encoder
from teran_es.workdir import Artifacts

# "A few thousand images": enough for many store shards and bulk requests.
IMAGES = 2400
# `teran-es ingest` in a child process, whatever the console script is called where the tests run.
RUN_CLI = "import sys; from teran_es.cli import main; sys.exit(main(sys.argv[1:]))"
UNPRIVILEGED = ["--user", "--map-user=1000", "--map-group=1000"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A Parquet source of IMAGES synthetic images, a tiny random checkpoint and a pipeline file."""
    root = tmp_path_factory.mktemp("faults")
    data = make_synthetic_dataset(root / "data", train_images=IMAGES, val_images=0, test_images=0, seed=11)
    config = load_config(
        None,
        [
            *tiny_model_overrides(data.text_backbone),
            f"checkpoint={root / 'checkpoint'}",
            "quantizer.gamma=16",
            "quantizer.doc_gamma=64",
            "quantizer.sample_size=2000",
            "store.shard_size=256",
            "ingest.device=cpu",
            "search.device=cpu",
            "elasticsearch.bulk_chunk_docs=100",
        ],
    )
    torch.manual_seed(0)
    save_checkpoint(build_model(config.model).eval(), root / "checkpoint", config)
    records = list(ColumnarReader(data.data_path).iter_records())
    return SimpleNamespace(
        source=data.data_path,
        pipeline=save_config(config, root / "pipeline.toml"),
        records=records,
        ids=[r.image_id for r in records],
    )


def run_ingest(config, records):
    with Ingestor(config) as ingestor:
        return ingestor.ingest(records)


def cli_command(*args) -> list[str]:
    return [sys.executable, "-c", RUN_CLI, *map(str, args)]


def settings(*overrides) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def assert_collection_is_exact(config, expected_ids) -> None:
    """The store holds each expected image once; the index holds exactly one document per image
    (the count rules out extras and duplicates), equal to the quantized stored regions."""
    paths = Artifacts(config)
    quantizer = load_encoder(paths.quantizer)
    expected_ids = list(expected_ids)
    store = FeatureStore.open(paths.store)
    try:
        assert sorted(store.ids()) == sorted(expected_ids)
        assert store.stats()["rows"] == len(expected_ids), "an image was stored twice"
        expected_docs = {}
        for start in range(0, len(expected_ids), 512):
            part = expected_ids[start : start + 512]
            regions, mask = store.get_many(part)
            batch = quantizer.encode_images(regions.numpy(), mask.numpy())
            for doc_id, terms in zip(batch.ids(part), quantizer.term_dicts(batch.encoding), strict=True):
                if terms:  # the ingest leaves out images with no terms at all
                    expected_docs[doc_id] = terms
    finally:
        store.close()
    assert len(expected_docs) > 0.95 * len(expected_ids)

    index = open_index(config, create=False, read_only=True)
    try:
        index.refresh()
        assert index.count() == len(expected_docs)
        assert index.existing_ids(list(expected_docs)) == set(expected_docs)
        indexed = indexed_terms(index, config, list(expected_docs))
    finally:
        index.close()
    assert indexed == expected_docs


def indexed_terms(index, config, ids) -> dict[str, dict[str, int]]:
    """The terms of every document, read back from the index."""
    if config.index.backend == "embedded":
        return {doc_id: dict(index.get(doc_id).terms) for doc_id in ids}
    from elasticsearch import Elasticsearch, helpers

    from teran_es.index.connection import resolve_connection

    client = Elasticsearch(**resolve_connection(config.elasticsearch).client_kwargs())
    try:
        hits = list(
            helpers.scan(
                client,
                index=config.resolved_index_name(),
                query={"query": {"match_all": {}}, "_source": {"includes": ["terms", "cells"], "exclude_vectors": False}},
            )
        )
    finally:
        client.close()
    assert len(hits) == len({h["_id"] for h in hits}), "a document id came back twice"
    return {h["_id"]: dict(document_from_source(h["_id"], h["_source"]).terms) for h in hits}


# --------------------------------------------------------------------------- Elasticsearch killed


def wait_until_dead(state: ServerState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    # pid_alive reaps the launcher (a child of this process); the port closes with the JVM.
    while pid_alive(state.pid) or http_get_json(f"{state.url}/_cluster/health", timeout=1.0):
        assert time.monotonic() < deadline, "the killed server is still running"
        time.sleep(0.2)


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_elasticsearch_killed_mid_ingest_then_restarted_loses_and_duplicates_nothing(
    collection, private_server_cache, tmp_path, kill_when_indexed
):
    state, _ = start(cache_dir=private_server_cache, heap="512m", log=lambda _line: None)
    config = load_config(
        collection.pipeline,
        [
            f"workdir={tmp_path / 'work'}",
            "index.backend=elasticsearch",
            "index.name=teran-fault-server-killed",
            f"elasticsearch.url={state.url}",
        ],
    )
    local_stats = f"{state.url}/_nodes/_local/stats/indices/indexing?filter_path=nodes.*.indices.indexing.index_total"
    killer = kill_when_indexed(state.pid, local_stats, after=IMAGES // 3)
    with Ingestor(config) as ingestor:
        try:
            killer.start()
            with pytest.raises(IndexUnavailableError, match="Elasticsearch"):
                ingestor.ingest(collection.records)
        finally:
            killer.stop()
    assert killer.killed_at is not None and killer.killed_at < IMAGES
    wait_until_dead(state)

    # Same port and data directory: the pipeline config stays as it was.
    restarted, started = start(
        cache_dir=private_server_cache, port=state.http_port, heap="512m", log=lambda _line: None
    )
    assert started and restarted.url == state.url and restarted.data_dir == state.data_dir
    report = run_ingest(config, collection.records)
    assert report.index_failed == 0 and report.skipped_bad == 0
    assert report.total_in_index == report.total_in_store == IMAGES
    assert report.skipped_existing + report.indexed_from_store + report.encoded == IMAGES
    assert report.skipped_existing > 0  # what was acknowledged before the kill survived it
    assert_collection_is_exact(config, collection.ids)


# --------------------------------------------------------------------------- ingest process killed


def wait_for_committed_shards(store_dir, count: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(store_dir.glob("shard-*.arrow"))) < count:
        assert proc.poll() is None, f"the ingest ended (exit {proc.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "the ingest made no progress"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def test_ingest_process_killed_mid_way_then_rerun_loses_and_duplicates_nothing(
    backend, collection, tmp_path, request
):
    from click.testing import CliRunner

    from teran_es.cli import cli

    overrides = [f"workdir={tmp_path / 'work'}", f"index.backend={backend}"]
    if backend == "elasticsearch":
        name = f"teran-fault-{uuid.uuid4().hex[:10]}"
        overrides += [f"index.name={name}", f"elasticsearch.url={request.getfixturevalue('es_url')}"]
        admin = request.getfixturevalue("es_admin")
        request.addfinalizer(lambda: [admin.indices.delete(index=concrete)
                                      for concrete in admin.indices.get(index=name, ignore_unavailable=True)])
    command = ["ingest", collection.source, "--pipeline", collection.pipeline, *settings(*overrides)]
    with open(tmp_path / "killed-ingest.log", "wb") as log:
        proc = subprocess.Popen(cli_command(*command), stdout=log, stderr=subprocess.STDOUT)
        try:
            # Killed after its first progress: two store shards committed, more in memory.
            wait_for_committed_shards(tmp_path / "work" / "store", 2, proc)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    result = CliRunner().invoke(cli, [*map(str, command), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["index_failed"] == 0
    assert report["total_in_index"] == report["total_in_store"] == IMAGES
    assert report["skipped_existing"] + report["indexed_from_store"] + report["encoded"] == IMAGES
    assert report["encoded"] < IMAGES  # the killed run's committed work was kept
    config = load_config(collection.pipeline, overrides)
    assert_collection_is_exact(config, collection.ids)


# --------------------------------------------------------------------------- read-only, full disk


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run where permission bits apply: as root, in a user namespace as uid 1000."""
    if os.geteuid() != 0:
        return command
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, *UNPRIVILEGED, "true"], capture_output=True).returncode:
        pytest.skip("running as root without user namespaces: permission bits cannot be tested")
    return [unshare, *UNPRIVILEGED, *command]


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1 with one ``Error:`` line naming the problem, and no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.mark.slow
def test_read_only_cache_directory_gives_a_clear_error(collection, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = {**os.environ, "TERAN_ES_CACHE": str(cache)}
    # No workdir in the pipeline: it goes under the cache directory.
    command = cli_command("ingest", collection.source, "--pipeline", collection.pipeline)
    proc = subprocess.run(unprivileged(command), env=env, capture_output=True, text=True, timeout=300)
    assert_clean_error(proc, "Error: ingest stopped: Permission denied", str(cache / "work"), "writable")
    assert list(cache.iterdir()) == []


@pytest.mark.slow
def test_read_only_work_directory_gives_a_clear_error_and_keeps_the_collection(collection, tmp_path):
    workdir = tmp_path / "work"
    config = load_config(collection.pipeline, [f"workdir={workdir}"])
    run_ingest(config, collection.records[:300])
    for path in [workdir, *workdir.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    command = cli_command(
        "ingest", collection.source, "--pipeline", collection.pipeline, *settings(f"workdir={workdir}")
    )
    proc = subprocess.run(unprivileged(command), capture_output=True, text=True, timeout=300)
    assert_clean_error(proc, "Error: cannot write to feature store directory", "Permission denied")
    for path in [workdir, *workdir.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    assert_collection_is_exact(config, collection.ids[:300])


def tiny_disk_available(mount_point) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", 'mount -t tmpfs tmpfs "$0"', str(mount_point)],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("disk_size", ["64k", "1m"])
def test_full_disk_stops_with_a_clear_error_and_the_same_command_resumes(collection, tmp_path, disk_size):
    """A real tmpfs of ``disk_size`` (64k fills up at the first store commit, 1m after a few
    shards and index segments) as the work directory's disk; what was written is copied out
    after the failure, and the same ingest finishes on the copy."""
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    copy.mkdir()
    if not tiny_disk_available(disk):
        pytest.skip("this kernel does not let an unprivileged user mount a tmpfs in a user namespace")
    command = cli_command(
        "ingest", collection.source, "--pipeline", collection.pipeline, *settings(f"workdir={disk / 'work'}")
    )
    # Inside the namespace: mount the tiny disk, ingest onto it, copy out what it holds.
    script = (
        'size=$0; disk=$1; copy=$2; shift 2; mount -t tmpfs -o size="$size" tmpfs "$disk" || exit 99; '
        '"$@"; status=$?; cp -a "$disk"/. "$copy"/; exit $status'
    )
    in_namespace = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    proc = subprocess.run(
        [*in_namespace, disk_size, str(disk), str(copy), *command], capture_output=True, text=True, timeout=300
    )
    assert_clean_error(proc, "Error: ingest stopped: No space left on device", "free space")

    config = load_config(collection.pipeline, [f"workdir={copy / 'work'}"])
    report = run_ingest(config, collection.records)
    assert report.total_in_index == report.total_in_store == IMAGES
    assert_collection_is_exact(config, collection.ids)
