"""Rerank features from Elasticsearch against the local feature store, fetched for K candidates.

    python benchmarks/bench_rerank_fetch.py --images 10000 --queries 100

The question: can the cluster itself serve what the exact rerank needs (each candidate's
quantized region codes), so that any client can rerank, and what does it cost next to the
local store? On the scale collection (benchmarks/scale_collection.py; its cached int8 store
and cell first stage, both made by benchmarks/bench_scale.py), an index is built as
``store.location="elasticsearch"`` builds it: the shipped mapping plus ``rerank_codes``, a
``binary`` field with doc values (never indexed, kept out of ``_source``) holding the image's
int8 codes and float32 scales. Then, for each query and K in 100 and 1,000:

* ``local``: the first stage (ids only, as today), then ``FeatureStore.get_many`` of the K ids
  (the float32 regions the rerank scores);
* ``elasticsearch``: the same first-stage request with ``rerank_codes`` among its doc-value
  fields (``store.location="elasticsearch"``), then ``FetchedRegions.get_many`` of the hits
  (checked equal to the store's regions, bit for bit).

Both timed end to end (first stage + codes in memory); p50/p95 and the fetch's share. Runs
against ELASTICSEARCH_URL or the local server. Writes benchmarks/results/rerank-fetch-<N>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_collection as sc  # noqa: E402
from common import command_line, machine_info, write_results  # noqa: E402
from scale_pipeline import IndexSetting, Stopwatch, documents, fit_quantizer, runs_dir  # noqa: E402

from teran_es.config import ElasticsearchConfig, default_cache_dir  # noqa: E402
from teran_es.index import es_queries  # noqa: E402
from teran_es.index.connection import resolve_connection  # noqa: E402
from teran_es.index.mappings import load_mapping  # noqa: E402
from teran_es.store import FeatureStore  # noqa: E402
from teran_es.store.fetched import FetchedRegions  # noqa: E402
from teran_es.store.wire import pack  # noqa: E402

FINGERPRINT = "072e65205455"
CODES_FIELD = es_queries.RERANK_CODES_FIELD
CELLS = {10_000: 16384, 100_000: 65536}


def build_index(client, name: str, collection, encoder, store: FeatureStore) -> dict[str, Any]:
    from elasticsearch import helpers

    # the shipped mapping with the rerank codes, exactly as store.location="elasticsearch" creates it
    meta = {"quantizer_fingerprint": encoder.fingerprint, "rerank_codes": store.dtype}
    definition = es_queries.index_definition(load_mapping(), meta, 1, 0)
    client.indices.delete(index=name, ignore_unavailable=True)
    client.indices.create(index=name, **definition)

    def actions():
        batch: list = []
        for doc in documents(collection, encoder, Stopwatch(), None):
            batch.append(doc)
            if len(batch) == 1000:
                yield from with_codes(batch)
                batch = []
        yield from with_codes(batch)

    def with_codes(batch):
        codes, scales, mask = store.get_codes([d.id for d in batch])
        counts = mask.sum(dim=1).tolist()
        for i, doc in enumerate(batch):
            source = es_queries.document_source(doc)
            source[CODES_FIELD] = pack(codes[i].numpy(), None if scales is None else scales[i].numpy(), counts[i],
                                       store.dtype)
            yield {"_index": name, "_id": doc.id, "_source": source}

    t = time.perf_counter()
    ok, _ = helpers.bulk(client.options(request_timeout=600), actions(), chunk_size=500)
    client.indices.refresh(index=name)
    client.options(request_timeout=3600).indices.forcemerge(index=name, max_num_segments=1)
    seconds = time.perf_counter() - t
    time.sleep(11)  # store statistics are cached for 10 s
    stats = client.indices.stats(index=name, metric="store")["indices"][name]["primaries"]["store"]["size_in_bytes"]
    # per field: the codes' doc values, and the copy of the whole source (codes included) that the
    # server keeps for replica recovery until the retention lease expires (12 h by default)
    usage = client.perform_request("POST", f"/{name}/_disk_usage", params={"run_expensive_tasks": "true"},
                                   headers={"accept": "application/json"})
    fields = usage.body[name]["fields"]
    per_field = {f: int(fields[f]["total_in_bytes"]) for f in (CODES_FIELD, "_source", "_recovery_source", "cells")
                 if f in fields}
    return {"documents": ok, "seconds": round(seconds, 1), "bytes": int(stats),
            "bytes_per_image": round(int(stats) / collection.n_images, 1),
            "bytes_per_image_by_field": {f: round(b / collection.n_images, 1) for f, b in per_field.items()}}


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, choices=sorted(CELLS))
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--ks", default="100,1000")
    args = parser.parse_args(argv)
    from elasticsearch import Elasticsearch

    collection = sc.load_collection(sc.collection_dir(default_cache_dir(), FINGERPRINT, args.images, 0))
    if collection is None:
        raise SystemExit(f"no cached scale collection of {args.images} images: run benchmarks/bench_scale.py first")
    cells = CELLS[args.images]
    encoder, _ = fit_quantizer(collection, IndexSetting(kind="cells", cells=cells, codebooks=2, sample_size=10 * cells))
    store_path = runs_dir(collection) / "store-int8"
    if not (store_path / "manifest.json").is_file():
        raise SystemExit(f"no int8 store at {store_path}: run benchmarks/bench_scale.py --sizes {args.images} first")
    store = FeatureStore.open(store_path)
    settings = resolve_connection(ElasticsearchConfig())
    client = Elasticsearch(**settings.client_kwargs())
    name = f"teran-bench-rerank-codes-{args.images}-{os.getpid()}"
    try:
        built = build_index(client, name, collection, encoder, store)
        print(f"index: {built}", file=sys.stderr)
        queries = [encoder.query(collection.query_words[q]) for q in range(min(args.queries, collection.n_queries))]
        rows = []
        for k in [int(x) for x in args.ks.split(",")]:
            timings: dict[str, list[float]] = {"first_stage_only": [], "local": [], "local_fetch": [],
                                               "elasticsearch": []}
            checked = 0
            for round_ in range(2):  # the first round warms both caches and is not counted
                for query in queries:
                    body = es_queries.search_body(query, k, es_queries.DEFAULT_FORMULATION, encoder.index_field)
                    t0 = time.perf_counter()
                    ids = [h["fields"][es_queries.ID_FIELD][0] for h in client.search(index=name, body=body)["hits"]["hits"]]
                    t1 = time.perf_counter()
                    local_regions, _ = store.get_many(ids)
                    t2 = time.perf_counter()
                    with_codes = es_queries.search_body(query, k, es_queries.DEFAULT_FORMULATION, encoder.index_field,
                                                        with_codes=True)
                    t3 = time.perf_counter()
                    hits = client.search(index=name, body=with_codes)["hits"]["hits"]
                    packed = {h["fields"][es_queries.ID_FIELD][0]: h["fields"][CODES_FIELD][0] for h in hits}
                    fetched_regions, _ = FetchedRegions(packed, store.dim, store.dtype).get_many(list(packed))
                    t4 = time.perf_counter()
                    if round_ == 1:
                        timings["first_stage_only"].append(t1 - t0)
                        timings["local_fetch"].append(t2 - t1)
                        timings["local"].append(t2 - t0)
                        timings["elasticsearch"].append(t4 - t3)
                    if checked < 5 and ids:  # the cluster's regions are the store's, bit for bit
                        assert list(packed) == ids
                        assert torch.equal(fetched_regions, local_regions)
                        checked += 1
            row = {"k": k, "queries": len(queries), **{key: summary(v) for key, v in timings.items()}}
            row["elasticsearch_over_local_p50"] = round(row["elasticsearch"]["p50_ms"] / row["local"]["p50_ms"], 2)
            rows.append(row)
            print(row, file=sys.stderr)
        payload = {
            "benchmark": "rerank-fetch",
            "command": command_line(__file__, argv),
            "machine": machine_info(elasticsearch=settings.describe()),
            "collection": {"images": collection.n_images, "regions_per_image": int(collection.regions.shape[1]),
                           "dim": store.dim, "store_dtype": store.dtype},
            "index": built,
            "store_bytes_per_image": round(sum(p.stat().st_size for p in store_path.iterdir()) / collection.n_images, 1),
            "rows": rows,
        }
        path = write_results(f"rerank-fetch-{args.images}", payload)
        print(f"wrote {path}", file=sys.stderr)
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
        client.close()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
