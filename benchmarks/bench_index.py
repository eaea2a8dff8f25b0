"""Index backends benchmark: bulk ingest, query latency and throughput, size on disk.

    python benchmarks/bench_index.py                                   # 100,000 docs x 300 terms, 1,000 queries
    python benchmarks/bench_index.py --docs 20000 --queries 200 --backends embedded

Synthetic, seeded surrogate-text documents shaped like the quantizer's output: a vocabulary
of 2 x 1024 CReLU components (``p<i>``/``n<i>``), about 300 distinct terms per image drawn
with a mildly skewed popularity, integer frequencies 1..512 (log-normal, most of them small),
and queries of about 200 terms with float weights. The same documents and queries go into
every backend. For Elasticsearch both exact query formulations (``bool`` of boosted ``term``
clauses, and ``sparse_vector`` without pruning) are timed on the same index.

Order per backend: ingest (timed, refresh included), size on disk, merge to one segment (timed),
size again, then queries on the merged index: warm-up, single ``search`` latencies (p50/p95) and
``search_many`` throughput. A few queries are checked against a brute-force sparse dot product.
The Elasticsearch server runs on the same machine as this script and shares its cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
from tqdm import tqdm

from teran_es.index.base import IndexHit, SurrogateDocument
from teran_es.surrogate.terms import vocabulary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_from_options, machine_info, write_results  # noqa: E402  (benchmarks/common.py)

RESULTS = Path(__file__).resolve().parent / "results" / "index.json"
# The server caches its store statistics for 10 s (index.store.stats_refresh_interval).
STORE_STATS_CACHE_S = 10.5


@dataclass
class SyntheticSurrogateCorpus:
    """Seeded documents and queries; documents are kept as compact arrays and built on demand."""

    docs: int
    terms_per_doc: int
    dim: int  # the vocabulary has 2 * dim terms
    queries: int
    query_terms: int
    seed: int = 0
    term_ids: np.ndarray = field(init=False, repr=False)  # int16 [docs, terms_per_doc]
    tfs: np.ndarray = field(init=False, repr=False)  # int16 [docs, terms_per_doc]

    def __post_init__(self) -> None:
        self.vocab = vocabulary(self.dim)
        size = len(self.vocab)
        if not 1 <= self.terms_per_doc <= size or not 1 <= self.query_terms <= size:
            raise ValueError(f"terms per document and per query must be in 1..{size}")
        rng = np.random.default_rng(self.seed)
        # Mildly skewed popularity (the rotation balances components, but not perfectly).
        log_popularity = np.log(rng.permutation(np.arange(1, size + 1, dtype=np.float64) ** -0.4))
        self.term_ids = np.empty((self.docs, self.terms_per_doc), dtype=np.int16)
        batch = 2048
        for begin in range(0, self.docs, batch):
            n = min(batch, self.docs - begin)
            # Gumbel top-k: distinct terms per document, drawn in proportion to popularity.
            keys = log_popularity + rng.gumbel(size=(n, size))
            self.term_ids[begin : begin + n] = np.argpartition(-keys, self.terms_per_doc, axis=1)[
                :, : self.terms_per_doc
            ]
        self.tfs = np.clip(np.rint(rng.lognormal(3.0, 1.2, size=self.term_ids.shape)), 1, 512).astype(
            np.int16
        )
        self.query_ids = np.stack(
            [
                rng.choice(size, size=self.query_terms, replace=False, p=_softmax(log_popularity))
                for _ in range(self.queries)
            ]
        )
        self.query_weights = rng.lognormal(-0.5, 0.8, size=self.query_ids.shape)

    def doc_id(self, i: int) -> str:
        return f"img-{i:08d}"

    def document(self, i: int) -> SurrogateDocument:
        vocab = self.vocab
        terms = {
            vocab[t]: int(f) for t, f in zip(self.term_ids[i].tolist(), self.tfs[i].tolist(), strict=True)
        }
        return SurrogateDocument(id=self.doc_id(i), terms=terms, path=f"/images/{i:08d}.jpg")

    def documents(self, progress: str | None = None) -> Iterator[SurrogateDocument]:
        indices = range(self.docs)
        if progress:
            indices = tqdm(indices, desc=progress, unit="doc", mininterval=1.0)
        for i in indices:
            yield self.document(i)

    def query_list(self) -> list[dict[str, float]]:
        vocab = self.vocab
        return [
            {vocab[t]: float(w) for t, w in zip(ids.tolist(), weights.tolist(), strict=True)}
            for ids, weights in zip(self.query_ids, self.query_weights, strict=True)
        ]

    def exact_scores(self, query_numbers: Sequence[int]) -> np.ndarray:
        """Brute-force dot products [len(query_numbers), docs] in float64."""
        size = len(self.vocab)
        rows = np.repeat(np.arange(self.docs), self.terms_per_doc)
        matrix = scipy.sparse.csr_matrix(
            (self.tfs.ravel().astype(np.float64), (rows, self.term_ids.ravel().astype(np.int64))),
            shape=(self.docs, size),
        )
        weights = np.zeros((size, len(query_numbers)))
        for column, q in enumerate(query_numbers):
            weights[self.query_ids[q], column] = self.query_weights[q]
        return np.asarray((matrix @ weights).T)


def _softmax(log_weights: np.ndarray) -> np.ndarray:
    p = np.exp(log_weights - log_weights.max())
    return p / p.sum()


def latencies_ms(run: Callable[[int], Any], count: int, warmup: int) -> np.ndarray:
    for i in range(warmup):
        run(i % count)
    times = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        run(i)
        times[i] = (time.perf_counter() - start) * 1e3
    return times


def latency_summary(times_ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(times_ms, 95)), 2),
        "mean_ms": round(float(times_ms.mean()), 2),
        "max_ms": round(float(times_ms.max()), 2),
    }


def check_against_exact(
    hits: list[IndexHit], exact: np.ndarray, corpus: SyntheticSurrogateCorpus, k: int
) -> float:
    """Worst relative error of the returned scores, after checking the k-th score is the true one
    (tie-tolerant: equal-looking float32 scores may come in either order)."""
    kth_true = float(np.partition(exact, exact.size - k)[exact.size - k])
    got = np.array([h.score for h in hits])
    truth = np.array([exact[int(h.id.removeprefix("img-"))] for h in hits])
    error = float(np.max(np.abs(got - truth) / np.maximum(np.abs(truth), 1e-12)))
    if len(hits) != k or error > 1e-5 or abs(got[-1] - kth_true) > 1e-5 * abs(kth_true):
        raise AssertionError(f"results differ from the brute-force dot product (max rel. error {error:.2e})")
    return error


def measure_queries(
    index: Any, queries: list[dict[str, float]], k: int, warmup: int, label: str
) -> tuple[dict[str, Any], list[list[IndexHit]]]:
    print(f"  {label}: {len(queries)} single searches ...", flush=True)
    single = latencies_ms(lambda i: index.search(queries[i], k), len(queries), warmup)
    print(f"  {label}: search_many ...", flush=True)
    start = time.perf_counter()
    batched = index.search_many(queries, k)
    elapsed = time.perf_counter() - start
    result = {
        "search": latency_summary(single),
        "search_qps": round(len(queries) / (single.sum() / 1e3), 1),
        "search_many_qps": round(len(queries) / elapsed, 1),
        "search_many_seconds": round(elapsed, 2),
    }
    print(
        f"  {label}: p50 {result['search']['p50_ms']} ms, p95 {result['search']['p95_ms']} ms, "
        f"search_many {result['search_many_qps']} q/s",
        flush=True,
    )
    return result, batched


def ingest(index: Any, corpus: SyntheticSurrogateCorpus, label: str) -> dict[str, Any]:
    start = time.perf_counter()
    report = index.add(corpus.documents(progress=f"{label} ingest"))
    added = time.perf_counter()
    index.refresh()
    done = time.perf_counter()
    if report.failed or report.indexed != corpus.docs:
        raise RuntimeError(f"{label}: {report.failed} documents failed (see {report.dead_letter_path})")
    if index.count() != corpus.docs:
        raise RuntimeError(f"{label}: count {index.count()} != {corpus.docs}")
    return {
        "seconds": round(done - start, 2),
        "add_seconds": round(added - start, 2),
        "refresh_seconds": round(done - added, 2),
        "docs_per_s": round(corpus.docs / (done - start), 1),
    }


def verify(
    results: list[list[IndexHit]], corpus: SyntheticSurrogateCorpus, exact: np.ndarray, k: int
) -> float:
    return max(check_against_exact(results[q], exact[q], corpus, k) for q in range(exact.shape[0]))


def bench_embedded(
    args: argparse.Namespace, corpus: SyntheticSurrogateCorpus, queries, exact
) -> dict[str, Any]:
    from teran_es.index.embedded import EmbeddedIndex

    print("embedded:", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.workdir))
    try:
        index = EmbeddedIndex.open(workdir / "index", meta={"quantizer_fingerprint": "bench"})
        with index:
            out: dict[str, Any] = {"ingest": ingest(index, corpus, "embedded")}
            out["size_bytes_before_merge"] = index.size_on_disk()
            start = time.perf_counter()
            index.merge()
            out["merge_seconds"] = round(time.perf_counter() - start, 2)
            out["size_bytes"] = index.size_on_disk()
            out["queries"], batched = measure_queries(index, queries, args.k, args.warmup, "embedded")
            out["verified_queries"] = exact.shape[0]
            out["max_relative_score_error"] = verify(batched, corpus, exact, args.k)
        return out, batched
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_elasticsearch(args: argparse.Namespace, corpus: SyntheticSurrogateCorpus, queries, exact):
    from teran_es.config import ElasticsearchConfig
    from teran_es.index import es_queries
    from teran_es.index.elastic import CLIENT_VERSION, ElasticIndex

    print("elasticsearch:", flush=True)
    config = ElasticsearchConfig(url=args.es_url, bulk_chunk_docs=args.bulk_docs, request_timeout=600)
    workdir = Path(tempfile.mkdtemp(prefix="bench-index-", dir=args.workdir))
    name = f"teran-bench-{uuid.uuid4().hex[:10]}"
    index = ElasticIndex.open(
        config, name, meta={"quantizer_fingerprint": "bench"}, dead_letter_path=workdir / "dead-letter.jsonl"
    )
    try:
        out: dict[str, Any] = {
            "server_version": index.server_version,
            "client_version": CLIENT_VERSION,
            "java": _local_java(),
            "ingest": ingest(index, corpus, "elasticsearch"),
        }
        index.flush()
        time.sleep(STORE_STATS_CACHE_S)
        out["segments_before_merge"] = index.segment_count()
        out["size_bytes_before_merge"] = index.size_on_disk()
        start = time.perf_counter()
        index.force_merge(1)
        out["merge_seconds"] = round(time.perf_counter() - start, 2)
        time.sleep(STORE_STATS_CACHE_S)
        out["size_bytes"] = index.size_on_disk()
        out["formulations"] = {}
        kept: list[list[IndexHit]] = []
        for formulation in es_queries.FORMULATIONS:
            index.formulation = formulation
            measured, batched = measure_queries(
                index, queries, args.k, args.warmup, f"elasticsearch/{formulation}"
            )
            measured["max_relative_score_error"] = verify(batched, corpus, exact, args.k)
            out["formulations"][formulation] = measured
            if formulation == es_queries.DEFAULT_FORMULATION:
                kept = batched
        out["default_formulation"] = es_queries.DEFAULT_FORMULATION
        out["queries"] = out["formulations"][es_queries.DEFAULT_FORMULATION]
        out["verified_queries"] = exact.shape[0]
        return out, kept
    finally:
        if not args.keep_index:
            index.delete_index()
        index.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _local_java() -> str | None:
    from teran_es.server.state import read_state

    state = read_state()
    return f"{state.java_version} ({state.java_home})" if state else None


def overlap_at_k(a: list[list[IndexHit]], b: list[list[IndexHit]]) -> float:
    """Mean fraction of shared ids between two result lists (1.0 = same top-k up to float ties)."""
    shares = [len({h.id for h in x} & {h.id for h in y}) / max(len(x), 1) for x, y in zip(a, b, strict=True)]
    return round(float(np.mean(shares)), 5)


def ratios(results: Mapping[str, Any]) -> dict[str, float]:
    es, emb = results["elasticsearch"], results["embedded"]
    return {
        "ingest_docs_per_s_es_over_embedded": round(
            es["ingest"]["docs_per_s"] / emb["ingest"]["docs_per_s"], 3
        ),
        "search_p50_es_over_embedded": round(
            es["queries"]["search"]["p50_ms"] / emb["queries"]["search"]["p50_ms"], 3
        ),
        "search_p95_es_over_embedded": round(
            es["queries"]["search"]["p95_ms"] / emb["queries"]["search"]["p95_ms"], 3
        ),
        "search_many_qps_es_over_embedded": round(
            es["queries"]["search_many_qps"] / emb["queries"]["search_many_qps"], 3
        ),
        "size_es_over_embedded": round(es["size_bytes"] / emb["size_bytes"], 3),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--terms-per-doc", type=int, default=300)
    parser.add_argument(
        "--dim", type=int, default=1024, help="vector dimension: the vocabulary has 2*dim terms"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--query-terms", type=int, default=200)
    parser.add_argument("--k", type=int, default=100, help="hits per query")
    parser.add_argument("--warmup", type=int, default=20, help="untimed queries before timing")
    parser.add_argument("--verify", type=int, default=20, help="queries checked against brute force")
    parser.add_argument("--backends", default="embedded,elasticsearch")
    parser.add_argument("--es-url", default="", help="default: $ELASTICSEARCH_URL, else the local server")
    parser.add_argument("--bulk-docs", type=int, default=1000, help="documents per bulk request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the embedded index is built (a temp dir)")
    parser.add_argument("--keep-index", action="store_true", help="keep the Elasticsearch index afterwards")
    parser.add_argument("--json-out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"embedded", "elasticsearch"}
    if unknown:
        raise SystemExit(f"unknown backends: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    print(
        f"generating {args.docs} documents x {args.terms_per_doc} terms, {args.queries} queries ...",
        flush=True,
    )
    corpus = SyntheticSurrogateCorpus(
        args.docs, args.terms_per_doc, args.dim, args.queries, args.query_terms, args.seed
    )
    queries = corpus.query_list()
    exact = corpus.exact_scores(range(min(args.verify, args.queries)))
    results: dict[str, Any] = {
        "benchmark": "index",
        "command": command_from_options(__file__, args, skip=("json_out", "workdir")),
        "machine": machine_info(),
        "corpus": {
            "docs": args.docs,
            "terms_per_doc": args.terms_per_doc,
            "vocabulary": len(corpus.vocab),
            "queries": args.queries,
            "query_terms": args.query_terms,
            "k": args.k,
            "seed": args.seed,
            "tf_mean": round(float(corpus.tfs.mean()), 1),
            "tf_max": int(corpus.tfs.max()),
        },
    }
    hits: dict[str, list[list[IndexHit]]] = {}
    runners = {"embedded": bench_embedded, "elasticsearch": bench_elasticsearch}
    for backend in backends:
        results[backend], hits[backend] = runners[backend](args, corpus, queries, exact)
    if {"embedded", "elasticsearch"} <= set(results):
        results["ratios"] = ratios(results)
        results["top_k_overlap_between_backends"] = overlap_at_k(hits["embedded"], hits["elasticsearch"])
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    target = write_results("index", results, args.json_out)
    print(json.dumps({k: v for k, v in results.items() if k not in ("machine", "command")}, indent=2))
    print(f"wrote {target}")
    return results


if __name__ == "__main__":
    main()
