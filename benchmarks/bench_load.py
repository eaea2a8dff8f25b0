"""Concurrent query load: query streams running side by side against a 100k-image index, on
each backend; errors, latency percentiles and throughput.

    python benchmarks/bench_load.py                 # 100,000 images, 8 streams x 120 s per backend
    python benchmarks/bench_load.py --quick         # the same, 20 s per backend
    python benchmarks/bench_load.py --docs 5000 --duration 5 --backends embedded   # a smoke run

Documents and queries are bench_index.py's seeded synthetic surrogate text (about 300 terms
per image, queries of about 200 weighted terms). Each stream is a process of its own with
its own connection (Elasticsearch: its own client; embedded: the index opened read-only, as
searchers open it), sending queries back to back; all streams are released together once
each has opened the index and sent a few warm-up queries. Latency is timed per query in the
stream; throughput is the queries answered over the wall time from release to the last
stream's end. Errors are counted and the first few kept (expected: none).

Bounded in count and time: a stream stops at ``--duration`` seconds or ``--max-queries-per-stream``
queries, whichever comes first, and streams still running ``--grace`` seconds after that are
terminated (and counted as errors). Loopback only: the Elasticsearch URL must be 127.0.0.1,
localhost or ::1. The server shares this machine's cores with the streams.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import SyntheticSurrogateCorpus  # noqa: E402  (benchmarks/bench_index.py)
from common import command_from_options, machine_info, write_results  # noqa: E402  (benchmarks/common.py)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WARMUP_QUERIES = 3
ERROR_SAMPLES = 5
QUICK_SECONDS = 20.0


# --------------------------------------------------------------------------- one stream (a process)


def _open_for_queries(backend: str, target: str, request_timeout: float):
    if backend == "embedded":
        from teran_es.index.embedded import EmbeddedIndex

        return EmbeddedIndex.open(target, create=False, read_only=True)
    from teran_es.config import ElasticsearchConfig
    from teran_es.index.elastic import ElasticIndex

    url, name = target.rsplit("|", 1)
    return ElasticIndex.open(ElasticsearchConfig(url=url, request_timeout=request_timeout), name, create=False)


def query_stream(
    stream: int,
    backend: str,
    target: str,
    queries: list[dict[str, float]],
    k: int,
    duration: float,
    max_queries: int,
    request_timeout: float,
    barrier: Any,
    results: Any,
) -> None:
    """Open the index, warm up, wait for the others, then query until the time or count is up;
    put one summary dict on ``results``."""
    outcome: dict[str, Any] = {"stream": stream, "latencies_ms": [], "errors": 0, "error_samples": []}
    try:
        index = _open_for_queries(backend, target, request_timeout)
        for i in range(WARMUP_QUERIES):
            index.search(queries[(stream + i) % len(queries)], k)
        barrier.wait(timeout=600)
        started = time.monotonic()
        deadline = started + duration
        position = stream * 997  # streams walk the query list from different places
        while time.monotonic() < deadline and len(outcome["latencies_ms"]) + outcome["errors"] < max_queries:
            query = queries[position % len(queries)]
            position += 1
            begin = time.perf_counter()
            try:
                hits = index.search(query, k)
                if not hits:
                    raise AssertionError("a query that matches documents returned no hits")
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the stream goes on
                outcome["errors"] += 1
                if len(outcome["error_samples"]) < ERROR_SAMPLES:
                    outcome["error_samples"].append(f"{type(exc).__name__}: {exc}")
                continue
            outcome["latencies_ms"].append((time.perf_counter() - begin) * 1e3)
        outcome["started"], outcome["ended"] = started, time.monotonic()
        index.close()
    except Exception:  # noqa: BLE001 - a stream that cannot run is reported, not lost
        outcome["errors"] += 1
        outcome["error_samples"].append(traceback.format_exc(limit=3))
        barrier.abort()
    results.put(outcome)


# --------------------------------------------------------------------------- the run


def run_load(backend: str, target: str, queries: list[dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    """``args.streams`` streams against one index; the summary of what they saw."""
    context = multiprocessing.get_context("spawn")  # a clean process per stream, nothing inherited
    barrier = context.Barrier(args.streams + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=query_stream,
            args=(s, backend, target, queries, args.k, args.duration, args.max_queries_per_stream,
                  args.request_timeout, barrier, results),
            daemon=True,
        )
        for s in range(args.streams)
    ]
    for process in processes:
        process.start()
    print(f"  {backend}: {args.streams} streams opening the index and warming up ...", flush=True)
    try:
        barrier.wait(timeout=600)
        print(f"  {backend}: released; running for {args.duration:.0f} s ...", flush=True)
    except threading.BrokenBarrierError:
        print(f"  {backend}: a stream could not start; collecting what the streams said", flush=True)
    released = time.monotonic()
    outcomes = []
    collect_until = released + args.duration + args.grace
    while len(outcomes) < len(processes) and time.monotonic() < collect_until:
        try:
            outcomes.append(results.get(timeout=1.0))
        except queue.Empty:
            continue
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
    unfinished = len(processes) - len(outcomes)
    return summarize(outcomes, unfinished, args)


def summarize(outcomes: list[dict[str, Any]], unfinished: int, args: argparse.Namespace) -> dict[str, Any]:
    latencies = np.array([x for o in outcomes for x in o["latencies_ms"]], dtype=np.float64)
    errors = sum(o["errors"] for o in outcomes) + unfinished
    samples = [s for o in outcomes for s in o["error_samples"]][:ERROR_SAMPLES]
    if unfinished:
        samples.append(f"{unfinished} streams did not finish within the grace time and were terminated")
    timed = [o for o in outcomes if "started" in o]
    wall = (max(o["ended"] for o in timed) - min(o["started"] for o in timed)) if timed else float("nan")
    summary: dict[str, Any] = {
        "streams": args.streams,
        "duration_s": args.duration,
        "wall_s": round(wall, 2),
        "queries": int(latencies.size),
        "errors": int(errors),
        "error_samples": samples,
        "throughput_qps": round(latencies.size / wall, 2) if timed and wall > 0 else 0.0,
        "per_stream_queries": sorted(len(o["latencies_ms"]) for o in outcomes),
    }
    if latencies.size:
        summary["latency_ms"] = {
            "p50": round(float(np.percentile(latencies, 50)), 2),
            "p95": round(float(np.percentile(latencies, 95)), 2),
            "p99": round(float(np.percentile(latencies, 99)), 2),
            "mean": round(float(latencies.mean()), 2),
            "max": round(float(latencies.max()), 2),
        }
    return summary


def build_embedded(corpus: SyntheticSurrogateCorpus, directory: Path) -> dict[str, Any]:
    from teran_es.index.embedded import EmbeddedIndex

    start = time.perf_counter()
    with EmbeddedIndex.open(directory, meta={"quantizer_fingerprint": "bench-load"}) as index:
        report = index.add(corpus.documents(progress="embedded ingest"))
        index.merge()  # one segment, as a collection being served would be
        count = index.count()
    if report.failed or count != corpus.docs:
        raise RuntimeError(f"embedded: {report.failed} documents failed, {count} indexed of {corpus.docs}")
    return {"seconds": round(time.perf_counter() - start, 1), "documents": count}


def build_elasticsearch(corpus: SyntheticSurrogateCorpus, url: str, name: str, workdir: Path) -> dict[str, Any]:
    from teran_es.config import ElasticsearchConfig
    from teran_es.index.elastic import ElasticIndex

    start = time.perf_counter()
    config = ElasticsearchConfig(url=url, bulk_chunk_docs=1000, request_timeout=600)
    with ElasticIndex.open(
        config, name, meta={"quantizer_fingerprint": "bench-load"}, dead_letter_path=workdir / "dead-letter.jsonl"
    ) as index:
        report = index.add(corpus.documents(progress="elasticsearch ingest"))
        index.refresh()
        index.force_merge(1)
        count = index.count()
        version = index.server_version
    if report.failed or count != corpus.docs:
        raise RuntimeError(f"elasticsearch: {report.failed} documents failed, {count} indexed of {corpus.docs}")
    return {"seconds": round(time.perf_counter() - start, 1), "documents": count, "server_version": version}


def delete_elasticsearch_index(url: str, name: str) -> None:
    from teran_es.config import ElasticsearchConfig
    from teran_es.index.elastic import ElasticIndex

    with ElasticIndex.open(ElasticsearchConfig(url=url), name, create=False) as index:
        index.delete_index()


def loopback_url(url: str) -> str:
    """The Elasticsearch URL to use (default: the local server), refused unless it is on loopback."""
    if not url:
        from teran_es.config import ElasticsearchConfig
        from teran_es.index.connection import resolve_connection

        url = resolve_connection(ElasticsearchConfig()).url
    host = urllib.parse.urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing {url}: this load test runs against a loopback server only ({', '.join(LOOPBACK_HOSTS)})")
    return url


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--terms-per-doc", type=int, default=300)
    parser.add_argument("--dim", type=int, default=1024, help="vector dimension: the vocabulary has 2*dim terms")
    parser.add_argument("--queries", type=int, default=1000, help="distinct queries the streams cycle through")
    parser.add_argument("--query-terms", type=int, default=200)
    parser.add_argument("--k", type=int, default=100, help="hits per query")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None, help="seconds of load per backend (default 120)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:.0f} s of load per backend")
    parser.add_argument("--max-queries-per-stream", type=int, default=100_000)
    parser.add_argument("--grace", type=float, default=120.0, help="seconds past the duration before streams are killed")
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--backends", default="embedded,elasticsearch")
    parser.add_argument("--es-url", default="", help="default: $ELASTICSEARCH_URL, else the local server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the embedded index is built (a temp dir)")
    parser.add_argument("--json-out", type=Path, default=None, help="default: benchmarks/results/load.json")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = QUICK_SECONDS if args.quick else 120.0
    if args.streams < 1 or args.duration <= 0 or args.max_queries_per_stream < 1:
        parser.error("--streams, --duration and --max-queries-per-stream must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if set(backends) - {"embedded", "elasticsearch"}:
        raise SystemExit(f"unknown backends in {args.backends!r}")
    es_url = loopback_url(args.es_url) if "elasticsearch" in backends else ""
    started = time.perf_counter()
    load_before = machine_info()["load_average"]
    print(f"generating {args.docs} documents x {args.terms_per_doc} terms, {args.queries} queries ...", flush=True)
    corpus = SyntheticSurrogateCorpus(args.docs, args.terms_per_doc, args.dim, args.queries, args.query_terms, args.seed)
    queries = corpus.query_list()
    results: dict[str, Any] = {
        "benchmark": "load",
        "command": command_from_options(__file__, args, skip=("json_out", "workdir", "quick")),
        "settings": {
            "docs": args.docs,
            "terms_per_doc": args.terms_per_doc,
            "vocabulary": len(corpus.vocab),
            "queries": args.queries,
            "query_terms": args.query_terms,
            "k": args.k,
            "streams": args.streams,
            "stream_kind": "process",
            "duration_s": args.duration,
            "max_queries_per_stream": args.max_queries_per_stream,
            "seed": args.seed,
        },
        "load_average_before": load_before,
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-", dir=args.workdir))
    try:
        if "embedded" in backends:
            print("embedded:", flush=True)
            path = workdir / "embedded"
            build = build_embedded(corpus, path)
            results["embedded"] = {"build": build, "load": run_load("embedded", str(path), queries, args)}
            report("embedded", results["embedded"]["load"])
            shutil.rmtree(path, ignore_errors=True)
        if "elasticsearch" in backends:
            print("elasticsearch:", flush=True)
            name = f"teran-bench-load-{uuid.uuid4().hex[:10]}"
            try:
                build = build_elasticsearch(corpus, es_url, name, workdir)
                load = run_load("elasticsearch", f"{es_url}|{name}", queries, args)
            finally:
                delete_elasticsearch_index(es_url, name)
            results["elasticsearch"] = {"build": build, "load": load}
            report("elasticsearch", load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"] = machine_info()
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    target = write_results("load", results, args.json_out)
    print(f"wrote {target}")
    return results


def report(backend: str, load: dict[str, Any]) -> None:
    latency = load.get("latency_ms", {})
    print(
        f"  {backend}: {load['queries']} queries, {load['errors']} errors, {load['throughput_qps']} q/s, "
        f"p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms, p99 {latency.get('p99')} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
