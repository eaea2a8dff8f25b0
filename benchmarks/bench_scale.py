"""Search at scale, side by side with the peers: 10k, 100k and 1M images whose region
embeddings have the statistics of the OpenMoji model's own, 1,000 real test captions as queries.

    python benchmarks/bench_scale.py --quick                 # 10k images, 100 queries, few configurations (< 5 min)
    python benchmarks/bench_scale.py --sizes 10000,100000,1000000
    python benchmarks/bench_scale.py --sizes 100000 --backends embedded --peers exact --json

Per size: the collection (benchmarks/scale_collection.py: built once, cached under
``<cache>/bench/scale-<model>-<N>-seed<seed>``, with the exact MrSw top-100 of every query);
feature stores (fp16, int8); for every index setting (pooling, gamma, doc_gamma, Q) and backend
(embedded, Elasticsearch) a quantizer and an index; then for every candidate count K and
store dtype: recall@10 and recall@100 of recall + exact rerank against the exact lists
(tie-tolerant), latency p50/p95 of the recall and rerank stages, single queries and batches.
Ingest is timed per stage (model encoding, measured on the real images; store writing;
surrogate quantisation; indexing). Stores, quantizers and indexes are reused by later runs with
the same configuration; reused measurements say ``"fresh": false`` (``--fresh`` rebuilds stores and
indexes; delete the collection's directory to rebuild the collection itself). Peers: the exact scan
(the reranker over the whole store; CPU, and GPU when there is one) and, when importable,
benchmarks/peers/faiss_peer.py and fast_plaid_peer.py, whose candidates get the same rerank.

Writes benchmarks/results/scale-<N>.json (scale-quick.json with --quick) and two PNG plots per
size (recall@10 vs latency, recall@10 vs bytes per image).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_collection as sc  # noqa: E402
import scale_peers  # noqa: E402
import scale_pipeline as sp  # noqa: E402
import scale_report  # noqa: E402
from common import RESULTS_DIR, command_line, machine_info, repo_relative, write_results  # noqa: E402

from teran_es.config import default_cache_dir  # noqa: E402
from teran_es.index import IndexError_  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("embedded", "elasticsearch")
PEERS = ("exact", "faiss", "fast-plaid")
FULL = {
    "sizes": "10000,100000,1000000",
    "queries": 1000,
    "first_stages": "cells,scalar",
    "cells": "0",
    "codebooks": "2",
    "nprobes": "64,128",
    "poolings": "sum",
    "gammas": "64",
    "q_factors": "50",
    "candidates": "100,300,1000",
    "dtypes": "fp16,int8",
}
QUICK = {
    "sizes": "10000",
    "queries": 100,
    "first_stages": "cells,scalar",
    "cells": "16384",
    "codebooks": "2",
    "nprobes": "32,64",
    "poolings": "sum",
    "gammas": "64",
    "q_factors": "50",
    "candidates": "100,1000",
    "dtypes": "fp16,int8",
}
# cells = 0: the cells per codebook that suit the collection size (about 64 regions per cell).
AUTO_CELLS = ((30_000, 16_384), (300_000, 65_536), (float("inf"), 262_144))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k images, 100 queries, 2 settings x 2 K x 2 dtypes, both backends, the peers")
    parser.add_argument("--sizes", help=f"collection sizes (default {FULL['sizes']})")
    parser.add_argument("--queries", type=int, help="queries (default 1000; 100 with --quick)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--first-stages", help="cells,scalar (default both)")
    parser.add_argument("--cells", help="cells per codebook, cells first stage (0 = by size: 16k, 64k, 256k; 16384 with --quick)")
    parser.add_argument("--codebooks", help="codebooks of the cells first stage (default 2)")
    parser.add_argument("--nprobes", help="cells probed per word and codebook, measured on one index (default 64,128)")
    parser.add_argument("--cell-sample", type=int, default=10, help="fitting vectors per cell and codebook")
    parser.add_argument("--poolings", help="scalar first stage: max,sum,region (default sum)")
    parser.add_argument("--gammas", help="scalar first stage: components kept per region vector (default 64)")
    parser.add_argument("--doc-gamma-factor", type=int, default=4, help="doc_gamma = factor x gamma for pooled documents")
    parser.add_argument("--q-factors", help="Q, the tf of a value at the top of the calibrated range (default 50)")
    parser.add_argument("--candidates", help="K, candidates reranked (default 100,300,1000; 100,1000 with --quick)")
    parser.add_argument("--dtypes", help="feature store dtypes (default fp16,int8)")
    parser.add_argument("--batch-size", type=int, default=16, help="queries per batch in the batched measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed queries before each timed loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "openmoji-minilm"))
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--exact-queries", type=int, default=50, help="most queries timed on the exact-scan peer")
    parser.add_argument("--exact-budget-s", type=float, help="stop timing the exact scan after this long (default 60; 10 with --quick)")
    parser.add_argument("--es-url", default="", help="default: $ELASTICSEARCH_URL, else the local server")
    parser.add_argument("--fresh", action="store_true", help="rebuild stores and indexes instead of reusing them")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.exact_budget_s is None:
        args.exact_budget_s = 10.0 if args.quick else 60.0
    return args


def say(message: str) -> None:
    """Progress messages go to stderr: stdout holds the table, or the JSON summary."""
    print(message, file=sys.stderr, flush=True)


def _list(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in str(text).split(",") if x.strip()]


def cells_for(size: int, asked: int) -> int:
    return asked or next(cells for limit, cells in AUTO_CELLS if size <= limit)


def settings_of(args: argparse.Namespace, size: int) -> list[sp.IndexSetting]:
    out = []
    stages = _list(args.first_stages)
    if "cells" in stages:
        for cells, codebooks in itertools.product(_list(args.cells, int), _list(args.codebooks, int)):
            n_cells = cells_for(size, cells)
            out.append(sp.IndexSetting(kind="cells", cells=n_cells, codebooks=codebooks, sample_size=args.cell_sample * n_cells, seed=args.seed))
    if "scalar" in stages:
        for pooling, gamma, q in itertools.product(_list(args.poolings), _list(args.gammas, int), _list(args.q_factors, float)):
            doc_gamma = gamma * args.doc_gamma_factor if pooling != "region" else 0
            out.append(sp.IndexSetting(kind="scalar", pooling=pooling, gamma=gamma, doc_gamma=doc_gamma, q_factor=q, seed=args.seed))
    return out


def elasticsearch_url(explicit: str) -> tuple[str | None, str]:
    """(url, how it was found) or (None, why there is none)."""
    if explicit:
        return explicit, "--es-url"
    if os.environ.get("ELASTICSEARCH_URL"):
        return os.environ["ELASTICSEARCH_URL"], "ELASTICSEARCH_URL"
    from teran_es.server.process import status

    local = status()
    if local.running:
        return local.url, f"local server ({local.state_file})"
    return None, "neither ELASTICSEARCH_URL nor a running local server: run `teran-es elasticsearch start`"


def library_versions() -> dict[str, str | None]:
    """Installed versions from the package metadata (nothing is imported: fast-plaid, for one,
    crashes when imported next to this project's torch)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in ("elasticsearch", "faiss-cpu", "faiss-gpu", "fast-plaid", "matplotlib", "pyarrow", "scipy", "threadpoolctl"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


# ------------------------------------------------------------------------- per size


def load_collection(args, n_images: int, fingerprint: str, progress: bool) -> tuple[sc.ScaleCollection, dict[str, Any]]:
    from teran_es.collections.openmoji import build_openmoji
    from teran_es.model.checkpoint import load_checkpoint

    t = time.perf_counter()
    real, real_fresh = sc.real_embeddings(
        default_cache_dir(),
        fingerprint,
        load_model=lambda: load_checkpoint(args.checkpoint)[0],
        collection=lambda: build_openmoji(progress=progress),
        progress=progress,
    )
    real_s = time.perf_counter() - t
    recipe = sc.RegionRecipe(n_images=n_images, seed=args.seed)
    directory = sc.collection_dir(default_cache_dir(), fingerprint, n_images, args.seed)
    t = time.perf_counter()
    collection, done = sc.build_collection(
        real, recipe, directory, args.queries, model_fingerprint=fingerprint, progress=progress
    )
    info = {
        "path": str(directory),
        "real_embeddings": {"fresh": real_fresh, "wall_seconds": round(real_s, 3), **real.info},
        "built_this_run": done["built"],
        "build_wall_seconds": round(time.perf_counter() - t, 3),
        **{k: v for k, v in collection.manifest.items() if k not in ("queries", "real")},
        "queries": {k: v for k, v in collection.manifest["queries"].items() if k not in ("texts", "caption_indices")},
        "query_examples": collection.query_texts[:10],
    }
    return collection, info


def run_size(args, n_images: int, fingerprint: str, es: tuple[str | None, str], progress: bool) -> dict[str, Any]:
    started = time.perf_counter()
    stages: dict[str, float] = {}
    collection, collection_info = load_collection(args, n_images, fingerprint, progress)
    stages["collection (real embeddings + synthesis + exact lists, or the cache)"] = round(time.perf_counter() - started, 1)
    say(
        f"collection: {n_images:,} images, {collection.n_queries} queries "
        f"({'built' if collection_info['built_this_run'] else 'cached'}) at {collection.path}"
    )
    stores: dict[str, Any] = {}
    store_info: dict[str, Any] = {}
    t = time.perf_counter()
    for dtype in _list(args.dtypes):
        stores[dtype], store_info[dtype] = sp.build_store(collection, dtype, fingerprint, args.fresh, progress)
    stages["feature stores"] = round(time.perf_counter() - t, 1)
    indexes_started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    indexes: dict[str, Any] = {}
    backends = _list(args.backends)
    url, how = es
    for setting in settings_of(args, n_images):
        say(f"{setting.key}: fit or reuse the first stage ...")
        encoder, fit = sp.fit_quantizer(collection, setting)
        for backend in backends:
            key = f"{backend}/{setting.key}"
            if backend == "elasticsearch" and url is None:
                indexes[key] = {"skipped": how}
                continue
            say(f"{key}: ingest or reuse ...")
            try:
                if backend == "embedded":
                    index, ingest = sp.open_embedded(collection, setting, encoder, args.fresh, progress)
                else:
                    index, ingest = sp.open_elasticsearch(collection, setting, encoder, url, args.fresh, progress)
            except IndexError_ as exc:
                indexes[key] = {"skipped": f"{type(exc).__name__}: {exc}"}
                say(f"{key}: skipped ({exc})")
                continue
            measure_started = time.perf_counter()
            try:
                nprobes = _list(args.nprobes, int) if setting.kind == "cells" else []
                measured = sp.measure_setting(collection, index, encoder, stores, _list(args.candidates, int), args.batch_size, args.warmup, key, progress, nprobes)
                if backend == "elasticsearch":
                    ingest = sp.finish_elasticsearch(index, collection, ingest)
            except IndexError_ as exc:  # e.g. the server went away during the measurement
                indexes[key] = {"failed": f"{type(exc).__name__}: {exc}", "ingest": ingest}
                say(f"{key}: failed ({exc})")
                continue
            finally:
                index.close()
            indexes[key] = {
                "setting": setting.describe(),
                "quantizer": fit,
                "ingest": ingest,
                "where": how if backend == "elasticsearch" else None,
                "measure_wall_seconds": round(time.perf_counter() - measure_started, 1),
            }
            for row in measured:
                store_bytes = store_info[row["store_dtype"]]["bytes_per_image"]
                index_bytes = round(ingest["bytes"] / n_images, 1)
                rows.append(
                    {
                        "backend": backend,
                        "setting_key": setting.key,
                        "label": setting.label,
                        **setting.describe(),
                        **row,
                        "bytes_per_image": {"index": index_bytes, "store": store_bytes, "total": round(index_bytes + store_bytes, 1)},
                    }
                )
            best = max(measured, key=lambda r: r["recall_at_10"])
            say(f"{key}: best R@10 {best['recall_at_10']:.3f} (K={best['candidates']}, {best['store_dtype']})")
    stages["indexes: ingest and measurement"] = round(time.perf_counter() - indexes_started, 1)
    t = time.perf_counter()
    exact = run_exact(args, collection, stores, progress)
    stages["exact scan"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    peers = run_peers(args, collection, stores, store_info, progress)
    stages["peers"] = round(time.perf_counter() - t, 1)
    result = {
        "images": n_images,
        "queries": collection.n_queries,
        "collection": collection_info,
        "stores": store_info,
        "ingest": ingest_summary(collection_info, store_info, indexes),
        "indexes": indexes,
        "rows": rows,
        "exact_scan": exact,
        "peers": peers,
    }
    result["peer_comparison"] = scale_report.compare_peers(rows, peers)
    rates = {key: value["ingest"]["index_images_per_s"] for key, value in indexes.items() if "ingest" in value}
    result["headline"] = scale_report.headline(rows, exact.get("cpu", {}), n_images, rates)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["stage_wall_seconds"] = stages
    for store in stores.values():
        store.close()
    return result


def run_exact(args, collection, stores, progress: bool) -> dict[str, Any]:
    if "exact" not in _list(args.peers):
        return {}
    store = stores.get("fp16") or next(iter(stores.values()))
    out = {}
    say("exact scan (CPU) ...")
    out["cpu"] = sp.measure_exact_scan(collection, store, "cpu", args.exact_queries, args.exact_budget_s, args.batch_size, progress)
    if torch.cuda.is_available():
        say("exact scan (GPU) ...")
        out["gpu"] = sp.measure_exact_scan(collection, store, "cuda", args.exact_queries, args.exact_budget_s, args.batch_size, progress)
        out["gpu"]["name"] = torch.cuda.get_device_name(0)
    else:
        out["gpu"] = {"skipped": "torch.cuda.is_available() is False on this machine"}
    out["cpu"]["store_dtype"] = store.dtype
    return out


def run_peers(args, collection, stores, store_info, progress: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    store = stores.get("fp16") or next(iter(stores.values()))
    for name in _list(args.peers):
        if name == "exact":
            continue
        if name not in scale_peers.MODULES:
            out[name] = {"skipped": f"unknown peer (known: exact, {', '.join(scale_peers.MODULES)})"}
            continue
        say(f"peer {name} ...")
        result = scale_peers.run_peer(name, collection, store, _list(args.candidates, int), args.threads, args.quick, progress)
        if "rows" in result:
            peer_bytes = scale_peers.peer_bytes(result["build"])
            for row in result["rows"]:
                row["bytes_per_image"] = (
                    None if peer_bytes is None else round(peer_bytes / collection.n_images + store_info[store.dtype]["bytes_per_image"], 1)
                )
        else:
            say(f"peer {name}: {result.get('skipped') or result.get('failed')}")
        out[name] = result
    return out


def ingest_summary(collection_info, store_info, indexes) -> dict[str, Any]:
    """Images per second of each ingest stage, and where each number was measured."""
    real = collection_info["real_embeddings"]
    per_index = {}
    for key, value in indexes.items():
        if "ingest" in value:
            i = value["ingest"]
            per_index[key] = {
                "quantize_images_per_s": i["quantize_images_per_s"],
                "index_images_per_s": i["index_images_per_s"],
                "merge_seconds": i.get("merge_seconds"),
                "fresh": i["fresh"],
            }
    return {
        "encode_images_per_s": real.get("encode_images_per_s"),
        "encode_note": "the model encoding the real OpenMoji images (pixels -> regions) on "
        f"{real.get('device')} with {real.get('torch_threads')} thread(s), measured {real.get('measured_at')}; "
        "synthetic images are not encoded by the model",
        "encode_fresh": real["fresh"],
        "store_images_per_s": {d: {"images_per_s": s["images_per_s"], "fresh": s["fresh"]} for d, s in store_info.items()},
        "per_index": per_index,
    }


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    from teran_es.model.checkpoint import read_meta

    unknown = set(_list(args.backends)) - set(BACKENDS) or set(_list(args.peers)) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown backends or peers: {', '.join(sorted(unknown))}")
    progress = not args.no_progress
    fingerprint = read_meta(args.checkpoint)["fingerprint"]
    es = elasticsearch_url(args.es_url) if "elasticsearch" in _list(args.backends) else (None, "not asked for")
    summaries = {}
    for n_images in _list(args.sizes, int):
        result = run_size(args, n_images, fingerprint, es, progress)
        name = "scale-quick" if args.quick else f"scale-{n_images}"
        payload = {
            "benchmark": "scale",
            "command": command_line(__file__, argv),
            "configuration": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "settings": [s.describe() for s in settings_of(args, n_images)],
            "model": {"checkpoint": args.checkpoint, "fingerprint": fingerprint},
            "machine": machine_info(library_versions=library_versions()),
            "tie_tolerance": sp.TIE_TOLERANCE,
            "latency_definition": "seconds of the call, per query (single) or per batch; recall stage = surrogate "
            "query encoding + index search; rerank stage = exact MrSw over the candidates read from the feature store; "
            "query text encoding by the model is not included (the words are precomputed)",
            **result,
        }
        args.out_dir.mkdir(parents=True, exist_ok=True)
        payload["plots"] = scale_report.plot(
            result["rows"], result["peers"], result["exact_scan"].get("cpu", {}), f"{n_images:,} images, {result['queries']} queries", args.out_dir / name
        )
        payload["total_wall_seconds"] = round(time.perf_counter() - started, 1)
        path = write_results(name, payload, args.out_dir / f"{name}.json")
        summaries[n_images] = {"path": repo_relative(path), "headline": result["headline"], "wall_seconds": result["wall_seconds"]}
        if not args.json:
            print(scale_report.table(result))
            print(f"wrote {path} and {', '.join(payload['plots'])}")
    total = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps({"total_wall_seconds": total, "sizes": summaries}, indent=2, default=str))
    else:
        print(f"total wall time {total} s")
    return {"total_wall_seconds": total, "sizes": summaries}


if __name__ == "__main__":
    main()
