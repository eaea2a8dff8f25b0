"""One node against three: a local Elasticsearch cluster holding a scale collection's index.

    python benchmarks/bench_cluster.py --images 10000          # ~5 min on a small machine
    python benchmarks/bench_cluster.py --images 100000

For each layout (1 node: 3 shards, no replica; 3 nodes: 3 shards, 1 replica), a fresh local
cluster (`teran-es elasticsearch start --nodes N`, in a cache directory of its own, the same
heap per node) gets the collection's cell first-stage documents (the quantizer cached by
benchmarks/bench_scale.py), then:

* ingest: images per second of the bulk indexing (the documents are made once beforehand);
* bytes per image on each node (primaries and replicas, merged to one segment per shard copy);
* 8 query streams for ``--seconds`` (after every query ran once, single stream, to warm the
  caches): first-stage queries (K candidates) of the collection's captions, each stream its own
  client over all nodes: throughput and p50/p95/p99;
* 3 nodes only: a node is SIGKILLed (not the master), and once the cluster has noticed
  (yellow) the 8 streams run again: throughput and latency with a node lost, and errors.

Writes benchmarks/results/cluster-<N>.json with the machine. Every node started is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_collection as sc  # noqa: E402
from common import command_line, machine_info, write_results  # noqa: E402
from scale_pipeline import IndexSetting, Stopwatch, candidates, documents, fit_quantizer  # noqa: E402

from teran_es.config import ElasticsearchConfig, default_cache_dir  # noqa: E402
from teran_es.index.base import IndexError_  # noqa: E402
from teran_es.index.elastic import ElasticIndex  # noqa: E402
from teran_es.server.cluster import start_cluster  # noqa: E402
from teran_es.server.health import http_get_json  # noqa: E402
from teran_es.server.install import ELASTICSEARCH_VERSION  # noqa: E402
from teran_es.server.process import pid_alive, stop  # noqa: E402
from teran_es.server.state import server_paths  # noqa: E402

FINGERPRINT = "072e65205455"  # the OpenMoji model the scale collections were made with
STREAMS = 8
LAYOUTS = {"1 node": (1, 3, 0), "3 nodes": (3, 3, 1)}  # nodes, shards, replicas
CELLS = {10_000: 16384, 100_000: 65536}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000, choices=sorted(CELLS))
    parser.add_argument("--k", type=int, default=100, help="candidates per query (first stage)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each 8-stream run")
    parser.add_argument("--heap", default="512m", help="JVM heap per node")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def private_cache() -> Path:
    """A cache directory for the benchmark's clusters, borrowing the installed distribution."""
    installed = server_paths().home(ELASTICSEARCH_VERSION)
    if not (installed / "bin" / "elasticsearch").is_file():
        raise SystemExit(f"Elasticsearch {ELASTICSEARCH_VERSION} is not unpacked in {installed.parent}: "
                         "run `teran-es elasticsearch start` once")
    root = Path(tempfile.mkdtemp(prefix="teran-bench-cluster-"))
    dist = server_paths(root).dist
    dist.mkdir(parents=True)
    (dist / installed.name).symlink_to(installed, target_is_directory=True)
    return root


def bytes_per_node(url: str, index: str) -> dict[str, int]:
    """Store bytes of ``index``'s shard copies (primaries and replicas) on each node."""
    shards = http_get_json(f"{url}/_cat/shards/{index}?format=json&bytes=b&h=node,store,prirep", timeout=30) or []
    per_node: dict[str, int] = {}
    for shard in shards:
        if shard.get("node"):
            per_node[shard["node"]] = per_node.get(shard["node"], 0) + int(shard.get("store") or 0)
    return per_node


def query_streams(config: ElasticsearchConfig, name: str, encoder, queries, k: int, per_image: int,
                  seconds: float) -> dict[str, Any]:
    """STREAMS threads, each with its own client, searching for ``seconds``."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def run(stream: int) -> None:
        with ElasticIndex.open(config, name, create=False) as index:
            i = stream
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                try:
                    candidates(index, encoder, queries[i % len(queries)], k, per_image)
                    with lock:
                        latencies.append(time.perf_counter() - t)
                except IndexError_ as exc:
                    with lock:
                        errors.append(str(exc)[:200])
                i += STREAMS

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(s,)) for s in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "streams": STREAMS, "seconds": round(elapsed, 1), "queries": len(latencies), "errors": len(errors),
        "first_errors": errors[:3], "qps": round(len(latencies) / elapsed, 1),
        **{f"p{p}_ms": round(float(np.percentile(ms, p)), 1) if ms.size else None for p in (50, 95, 99)},
    }


def wait_for(url_list: list[str], status: str, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for url in url_list:
            body = http_get_json(f"{url}/_cluster/health?wait_for_status={status}&timeout=2s", timeout=5)
            if body and body.get("status") == status and not body.get("timed_out"):
                return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"the cluster did not turn {status} within {timeout}s")


def measure_layout(label: str, collection, encoder, docs, args, queries) -> dict[str, Any]:
    nodes, shards, replicas = LAYOUTS[label]
    cache = private_cache()
    try:
        t = time.perf_counter()
        state, _ = start_cluster(nodes, heap=args.heap, cache_dir=cache, log=lambda line: print(line, file=sys.stderr))
        start_seconds = time.perf_counter() - t
        members = state.nodes
        urls = [n.url for n in members]
        config = ElasticsearchConfig(url=",".join(urls), shards=shards, replicas=replicas, request_timeout=600)
        name = f"teran-bench-cluster-{collection.n_images}"
        with ElasticIndex.open(config, name, meta={"quantizer_fingerprint": encoder.fingerprint}) as index:
            t = time.perf_counter()
            report = index.add(docs)
            index.refresh()
            index_seconds = time.perf_counter() - t
            if report.failed:
                raise RuntimeError(f"{report.failed} documents rejected")
            to_green = wait_for(urls, "green")
            index.force_merge(1)  # one segment per shard copy: sizes comparable across layouts
            index.flush()
            time.sleep(11)  # the server caches store statistics for 10 s
            per_node = bytes_per_node(urls[0], name)
        per_image = collection.regions.shape[1]
        result: dict[str, Any] = {
            "nodes": nodes, "shards": shards, "replicas": replicas, "heap": args.heap,
            "cluster_start_seconds": round(start_seconds, 1),
            "ingest": {"images": collection.n_images, "documents": report.indexed,
                       "index_seconds": round(index_seconds, 2),
                       "images_per_s": round(collection.n_images / index_seconds, 1),
                       "seconds_to_green_after": round(to_green, 1)},
            "bytes_per_image_per_node": {n: round(b / collection.n_images, 1) for n, b in sorted(per_node.items())},
            "bytes_per_image_all_nodes": round(sum(per_node.values()) / collection.n_images, 1),
        }
        print(f"{label}: ingest {result['ingest']}", file=sys.stderr)
        t = time.perf_counter()
        with ElasticIndex.open(config, name, create=False) as index:  # every query once: warm caches and JIT
            for query in queries:
                candidates(index, encoder, query, args.k, per_image)
        result["warmup_seconds"] = round(time.perf_counter() - t, 1)
        result["streams"] = query_streams(config, name, encoder, queries, args.k, per_image, args.seconds)
        print(f"{label}: 8 streams {result['streams']}", file=sys.stderr)
        if nodes > 1:
            masters = http_get_json(f"{urls[0]}/_nodes/_master?filter_path=nodes.*.name", timeout=5) or {}
            master = next((n["name"] for n in masters.get("nodes", {}).values()), None)
            victim = next(n for n in reversed(members) if n.name != master)
            t = time.perf_counter()
            os.killpg(victim.pid, signal.SIGKILL)
            while pid_alive(victim.pid):
                time.sleep(0.1)
            live = [n.url for n in members if n.name != victim.name]
            noticed = wait_for(live, "yellow")
            result["node_lost"] = {"killed": victim.name, "seconds_to_yellow": round(time.perf_counter() - t, 1),
                                   "waited_s": round(noticed, 1)}
            result["streams_after_node_lost"] = query_streams(config, name, encoder, queries, args.k, per_image,
                                                              args.seconds)
            print(f"{label}: 8 streams, a node lost {result['streams_after_node_lost']}", file=sys.stderr)
        return result
    finally:
        with contextlib.suppress(Exception):
            stop(cache)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory = sc.collection_dir(default_cache_dir(), FINGERPRINT, args.images, args.seed)
    collection = sc.load_collection(directory)
    if collection is None:
        raise SystemExit(f"no scale collection of {args.images} images cached under {directory.parent}: "
                         f"run `python benchmarks/bench_scale.py --sizes {args.images}` once")
    cells = CELLS[args.images]
    setting = IndexSetting(kind="cells", cells=cells, codebooks=2, sample_size=10 * cells)
    encoder, _ = fit_quantizer(collection, setting)
    queries = [encoder.query(words) for words in collection.query_words]
    # the documents are made once (timed apart), so both layouts index the same list
    clock = Stopwatch()
    docs = list(documents(collection, encoder, clock, "documents"))
    print(f"made {len(docs)} documents in {clock.seconds:.1f} s", file=sys.stderr)
    results = {}
    for label in LAYOUTS:
        results[label] = measure_layout(label, collection, encoder, docs, args, queries)
    one, three = results["1 node"], results["3 nodes"]
    payload = {
        "benchmark": "cluster",
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "collection": {"images": collection.n_images, "path": str(collection.path), "queries": len(queries),
                       "first_stage": setting.describe(), "k": args.k},
        "layouts": results,
        "side_by_side": {
            "ingest_images_per_s": {"1 node": one["ingest"]["images_per_s"], "3 nodes": three["ingest"]["images_per_s"],
                                    "ratio_3_to_1": round(three["ingest"]["images_per_s"] / one["ingest"]["images_per_s"], 2)},
            "qps_8_streams": {"1 node": one["streams"]["qps"], "3 nodes": three["streams"]["qps"],
                              "3 nodes, one lost": three["streams_after_node_lost"]["qps"],
                              "ratio_3_to_1": round(three["streams"]["qps"] / one["streams"]["qps"], 2)},
            "p99_ms_8_streams": {"1 node": one["streams"]["p99_ms"], "3 nodes": three["streams"]["p99_ms"],
                                 "3 nodes, one lost": three["streams_after_node_lost"]["p99_ms"]},
            "bytes_per_image_all_nodes": {"1 node": one["bytes_per_image_all_nodes"],
                                          "3 nodes": three["bytes_per_image_all_nodes"]},
        },
    }
    path = write_results(f"cluster-{args.images}", payload)
    print(json.dumps(payload["side_by_side"], indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
