"""Load on `teran-es serve`: concurrent clients searching the served OpenMoji collection over
HTTP, on each backend, against the same searches made through the library directly.

    python benchmarks/bench_serve.py                          # 8 clients x 60 s, per backend and mode
    python benchmarks/bench_serve.py --duration 10 --backends embedded      # a smoke run

Three modes per backend, one after the other, with the same client count, the same queries
(OpenMoji test captions) and the same k and candidates:

- ``server``: a real `teran-es serve` process; each client is a thread with its own
  keep-alive HTTP connection sending ``GET /api/search`` back to back (a request counts as an
  error unless it answers 200 with hits).
- ``library``: the same searches through ``Searcher.search`` in this process, the clients
  sharing one searcher behind one lock, as the server's worker threads do: the difference to
  ``server`` is what HTTP, JSON and the web framework cost.
- ``first_stage``: ``benchmarks/bench_load.py``'s streams (a process each, the index opened
  read-only) sending the same queries' first stage to the index alone: no text encoding, no
  rerank.

The collection is the one `teran-es demo` builds (run it first). The Elasticsearch run indexes
the demo's stored regions into an index of its own (``bench-serve-<random>``), deleted at the end.
Loopback only. The server, the clients and Elasticsearch share this machine's cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import loopback_url, run_load  # noqa: E402  (benchmarks/bench_load.py)
from common import command_from_options, machine_info, write_results  # noqa: E402  (benchmarks/common.py)

from teran_es.surrogate.terms import region_hits_needed  # noqa: E402

ERROR_SAMPLES = 5
SHARED_BOX_NOTE = (
    "Measured on a shared machine: other jobs (up to four sessions' tests and builds) ran on the same "
    "cores during this run, so absolute figures are low and noisy; compare the modes side by side "
    "(same run, same queries), and rerun on an idle machine for absolute numbers."
)


# --------------------------------------------------------------------------- the collection


def demo_config():
    """The pipeline of `teran-es demo`'s OpenMoji work directory (SystemExit when not built)."""
    from teran_es.collections.openmoji import default_collection_dir
    from teran_es.config import default_cache_dir
    from teran_es.demo import committed_openmoji_checkpoint, openmoji_demo_config

    root = default_cache_dir() / "demo" / "openmoji"
    checkpoint = committed_openmoji_checkpoint() or root / "train" / "best"
    config = openmoji_demo_config(root, default_collection_dir(), checkpoint)
    if not (config.resolved_workdir() / "quantizer.npz").is_file():
        raise SystemExit(f"no demo collection at {config.resolved_workdir()}: run `teran-es demo` first")
    config.ingest.device = config.search.device = "cpu"
    return config


def elasticsearch_config(base, url: str, workdir: Path):
    """``base`` on Elasticsearch in ``workdir``: the stored regions copied, then indexed from the
    store (no image is encoded again). Returns the config; its index is the caller's to delete."""
    import dataclasses

    from teran_es.config import save_config
    from teran_es.features.image_table import iter_collection_images
    from teran_es.indexer import Ingestor

    source = base.resolved_workdir()
    workdir.mkdir(parents=True)
    shutil.copytree(source / "store", workdir / "store")
    shutil.copy(source / "quantizer.npz", workdir / "quantizer.npz")
    config = dataclasses.replace(
        base,
        workdir=str(workdir),
        index=dataclasses.replace(base.index, backend="elasticsearch", name=f"bench-serve-{uuid.uuid4().hex[:10]}"),
        elasticsearch=dataclasses.replace(
            base.elasticsearch, url=url, dead_letter_path=str(workdir / "dead-letter.jsonl"), request_timeout=120
        ),
    )
    save_config(config, workdir / "config.toml")
    started = time.perf_counter()
    with Ingestor(config) as ingestor:
        report = ingestor.ingest(iter_collection_images(base.data.path), batch_size=256)
    if report.encoded or report.index_failed or report.total_in_index != report.total_in_store:
        raise RuntimeError(f"indexing the demo's store into Elasticsearch went wrong: {report.to_dict()}")
    print(f"  elasticsearch: {report.indexed_from_store} images indexed from the store in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return config


def test_captions(config, count: int, seed: int) -> list[str]:
    from teran_es.features.image_table import iter_collection_images

    captions = sorted({c for image in iter_collection_images(config.data.path, "test") for c in image.captions})
    random.Random(seed).shuffle(captions)
    return captions[:count]


# --------------------------------------------------------------------------- measuring


def summarize(latencies_ms: list[float], errors: int, samples: list[str], wall: float, clients: int) -> dict[str, Any]:
    values = np.array(latencies_ms, dtype=np.float64)
    summary: dict[str, Any] = {
        "clients": clients,
        "wall_s": round(wall, 2),
        "requests": int(values.size),
        "errors": int(errors),
        "error_samples": samples[:ERROR_SAMPLES],
        "throughput_rps": round(values.size / wall, 2) if wall > 0 else 0.0,
    }
    if values.size:
        summary["latency_ms"] = {
            name: round(float(np.percentile(values, q)), 2) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))
        }
        summary["latency_ms"]["mean"] = round(float(values.mean()), 2)
        summary["latency_ms"]["max"] = round(float(values.max()), 2)
    return summary


def run_clients(clients: int, duration: float, one_request) -> dict[str, Any]:
    """``clients`` threads calling ``one_request(client, position)`` back to back for ``duration``
    seconds; each call returns None or an error string."""
    latencies: list[float] = []
    errors = [0]
    samples: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(number: int) -> None:
        barrier.wait()
        position = number * 997
        mine: list[float] = []
        while time.monotonic() < deadline[0]:
            begin = time.perf_counter()
            try:
                problem = one_request(number, position)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the client goes on
                problem = f"{type(exc).__name__}: {exc}"
            position += 1
            if problem:
                with lock:
                    errors[0] += 1
                    if len(samples) < ERROR_SAMPLES:
                        samples.append(problem)
                continue
            mine.append((time.perf_counter() - begin) * 1e3)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + duration
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout=duration + 300)
    return summarize(latencies, errors[0], samples, time.monotonic() - started, clients)


def measure_server(config_path: Path, workdir: Path, queries: list[str], args) -> dict[str, Any]:
    """``args.streams`` HTTP clients against a `teran-es serve` process of ``workdir``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-c", "import sys; from teran_es.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--pipeline", str(config_path), "--workdir", str(workdir), "--port", str(port),
               "--device", "cpu", "--lazy-captions"]  # no caption encoding during the load
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(port, process, Path(log.name))
        local = threading.local()

        def one_request(client: int, position: int) -> str | None:
            if not hasattr(local, "connection"):
                local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=args.request_timeout)
            query = urllib.parse.urlencode(
                {"q": queries[position % len(queries)], "k": args.k, "candidates": args.candidates}
            )
            try:
                local.connection.request("GET", f"/api/search?{query}")
                response = local.connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                local.connection.close()
                del local.connection
                raise
            if response.status != 200:
                return f"HTTP {response.status}: {body[:200]!r}"
            if not json.loads(body)["hits"]:
                return "no hits"
            return None

        for i in range(args.warmup):
            one_request(0, i)
        return run_clients(args.streams, args.duration, one_request)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def wait_until_up(port: int, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"teran-es serve exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"teran-es serve did not come up in {timeout} s")


def measure_library(config, queries: list[str], args) -> dict[str, Any]:
    """The same searches through the library: one searcher, one lock, ``args.streams`` threads."""
    from teran_es.searcher import Searcher

    searcher = Searcher.open(config, device="cpu")
    lock = threading.Lock()

    def one_request(client: int, position: int) -> str | None:
        with lock:
            result = searcher.search(queries[position % len(queries)], k=args.k, candidates=args.candidates)
        return None if result.hits else "no hits"

    try:
        for i in range(args.warmup):
            one_request(0, i)
        return run_clients(args.streams, args.duration, one_request)
    finally:
        searcher.close()


def measure_first_stage(config, queries: list[str], args) -> dict[str, Any]:
    """bench_load.py's streams over the same queries' first stage (the index alone)."""
    from teran_es.searcher import Searcher

    searcher = Searcher.open(config, device="cpu")
    try:
        index_queries = [searcher.first_stage_query(*searcher.encode_query(q)) for q in queries]
        if config.index.backend == "embedded":
            target = str(Path(config.index.path) if config.index.path else config.resolved_workdir() / "index")
        else:
            target = f"{config.elasticsearch.url}|{config.resolved_index_name()}"
        # A first stage of region documents over-fetches them; the searcher asks for this many.
        k = region_hits_needed(args.candidates, config.data.max_regions) if searcher.quantizer.region_documents else args.candidates
    finally:
        searcher.close()
    load_args = argparse.Namespace(
        streams=args.streams, duration=args.duration, k=k, max_queries_per_stream=10**7,
        request_timeout=args.request_timeout, grace=120.0,
    )
    summary = run_load(config.index.backend, target, index_queries, load_args)
    return {
        "clients": summary["streams"],
        "wall_s": summary["wall_s"],
        "requests": summary["queries"],
        "errors": summary["errors"],
        "error_samples": summary["error_samples"],
        "throughput_rps": summary["throughput_qps"],
        "latency_ms": summary.get("latency_ms"),
        "k": k,
    }


def ratios(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    server, library = modes.get("server"), modes.get("library")
    if not server or not library or not server.get("latency_ms") or not library.get("latency_ms"):
        return {}
    return {
        "server_over_library_throughput": round(server["throughput_rps"] / library["throughput_rps"], 3)
        if library["throughput_rps"] else None,
        "server_minus_library_p50_ms": round(server["latency_ms"]["p50"] - library["latency_ms"]["p50"], 2),
        "server_over_library_p50": round(server["latency_ms"]["p50"] / library["latency_ms"]["p50"], 3),
    }


# --------------------------------------------------------------------------- the run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per backend and mode")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--queries", type=int, default=300, help="distinct test captions the clients cycle through")
    parser.add_argument("--warmup", type=int, default=5, help="requests before the clock starts")
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--backends", default="embedded,elasticsearch")
    parser.add_argument("--modes", default="server,library,first_stage")
    parser.add_argument("--es-url", default="", help="default: $ELASTICSEARCH_URL, else the local server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None, help="default: benchmarks/results/serve.json")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.duration <= 0:
        parser.error("--streams and --duration must be positive")
    return args


def main(argv=None) -> int:
    from teran_es.config import save_config

    args = parse_args(argv)
    base = demo_config()
    queries = test_captions(base, args.queries, args.seed)
    modes = [m for m in args.modes.split(",") if m]
    results: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    es_config = None
    try:
        for backend in [b for b in args.backends.split(",") if b]:
            if backend == "embedded":
                config = base
                config_path = scratch / "embedded.toml"
                save_config(config, config_path)
            else:
                es_config = config = elasticsearch_config(base, loopback_url(args.es_url), scratch / "es-work")
                config_path = config.resolved_workdir() / "config.toml"
            measured: dict[str, Any] = {}
            for mode in modes:
                print(f"  {backend} / {mode}: {args.streams} clients for {args.duration:.0f} s ...", flush=True)
                load_before = [round(x, 2) for x in os.getloadavg()]
                if mode == "server":
                    measured[mode] = measure_server(config_path, config.resolved_workdir(), queries, args)
                elif mode == "library":
                    measured[mode] = measure_library(config, queries, args)
                else:
                    measured[mode] = measure_first_stage(config, queries, args)
                m = measured[mode]
                m["load_average_before"] = load_before  # 1, 5, 15 minutes: what else ran on the cores
                print(f"    {m['throughput_rps']} req/s, p50 {m.get('latency_ms', {}).get('p50')} ms, "
                      f"errors {m['errors']}", flush=True)
            results[backend] = {**measured, "ratios": ratios(measured)}
    finally:
        if es_config is not None:
            from teran_es.index.elastic import ElasticIndex

            with ElasticIndex.open(es_config.elasticsearch, es_config.resolved_index_name(), create=False) as index:
                index.delete_index()
        shutil.rmtree(scratch, ignore_errors=True)
    payload = {
        "benchmark": "serve",
        "command": command_from_options(__file__, args),
        "machine": machine_info(shared=True),
        "note": SHARED_BOX_NOTE,
        "collection": {"name": "openmoji (teran-es demo)", "images": None, "queries": len(queries)},
        "settings": {"clients": args.streams, "duration_s": args.duration, "k": args.k, "candidates": args.candidates},
        "results": results,
    }
    from teran_es.store import FeatureStore

    with FeatureStore.open(base.resolved_workdir() / "store") as store:
        payload["collection"]["images"] = len(store)
    print(f"wrote {write_results('serve', payload, args.json_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
