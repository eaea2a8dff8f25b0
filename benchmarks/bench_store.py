"""Feature store benchmark: ingest speed, bytes per image, get_many latency, Parquet vs Arrow IPC.

    python benchmarks/bench_store.py                      # 20,000 images x 36 x 1024, every dtype
    python benchmarks/bench_store.py --images 2000 --dtypes fp16

Synthetic, seeded data: a pool of random unit vectors is generated once and re-used under new
ids (the store does not compress, so content does not change sizes or copy costs). Latencies are
measured with a warm page cache (the store was just written), after warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from teran_es.store import FeatureStore
from teran_es.store.shard import shard_file_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_results  # noqa: E402  (benchmarks/common.py)

RESULTS = Path(__file__).resolve().parent / "results" / "store.json"


@dataclass
class SyntheticRegions:
    """Seeded unit region vectors, ``regions`` per image, served in batches under fresh ids."""

    images: int
    regions: int
    dim: int
    pool_images: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        pool = rng.standard_normal((self.pool_images, self.regions, self.dim), dtype=np.float32)
        pool /= np.linalg.norm(pool, axis=2, keepdims=True)
        self.pool = pool

    def ids(self) -> list[str]:
        return [f"img-{k:08d}" for k in range(self.images)]

    def batches(self, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        all_ids = self.ids()
        for begin in range(0, self.images, batch_size):
            chunk = all_ids[begin : begin + batch_size]
            picks = np.arange(begin, begin + len(chunk)) % self.pool_images
            yield chunk, self.pool[picks]


def timed_runs(run: Callable[[int], Any], repeats: int, warmup: int) -> np.ndarray:
    """Milliseconds of ``run(i)`` for ``repeats`` calls after ``warmup`` untimed ones."""
    for i in range(warmup):
        run(i)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        run(warmup + i)
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times)


def summary(times_ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times_ms, 50)), 2),
        "p95_ms": round(float(np.percentile(times_ms, 95)), 2),
        "min_ms": round(float(times_ms.min()), 2),
        "runs": len(times_ms),
    }


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def bench_dtype(
    data: SyntheticRegions, dtype: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Write the whole collection with one dtype, then time reads of it."""
    path = workdir / f"store-{dtype}"
    start = time.perf_counter()
    with FeatureStore.open(
        path, create=True, dim=data.dim, dtype=dtype, model_fingerprint="bench", shard_size=args.shard_size
    ) as store:
        for ids, regions in data.batches(args.batch_size):
            store.add(ids, regions)
    write_s = time.perf_counter() - start

    start = time.perf_counter()
    store = FeatureStore.open(path, model_fingerprint="bench")
    open_ms = (time.perf_counter() - start) * 1e3
    all_ids = data.ids()
    rng = np.random.default_rng(1)
    queries = [[all_ids[k] for k in rng.choice(data.images, args.queries, replace=False)] for _ in range(64)]
    latency = timed_runs(lambda i: store.get_many(queries[i % len(queries)]), args.repeats, warmup=3)

    start = time.perf_counter()
    scanned = sum(len(ids) for ids, _, _ in store.iter_batches(batch_size=args.queries))
    scan_s = time.perf_counter() - start
    disk = directory_bytes(path)
    store.close()
    shutil.rmtree(path)
    return {
        "write_images_per_s": round(data.images / write_s, 1),
        "write_mb_per_s": round(disk / write_s / 1e6, 1),
        "bytes_on_disk": disk,
        "bytes_per_image": round(disk / data.images, 1),
        "open_ms": round(open_ms, 1),
        f"get_many_{args.queries}": summary(latency),
        "scan_images_per_s": round(scanned / scan_s, 1),
    }


def bench_output_floor(data: SyntheticRegions, args: argparse.Namespace) -> dict[str, float]:
    """Time to allocate and write the float32 result alone: no gather can beat it on this machine."""
    shape = (args.queries, data.regions, data.dim)
    return summary(timed_runs(lambda i: np.zeros(shape, np.float32).fill(1.0), args.repeats, warmup=3))


def bench_parquet_vs_ipc(data: SyntheticRegions, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One fp16 shard as Arrow IPC (memory-mapped) and as Parquet: size and cost of a random fetch."""
    images = min(args.compare_images, data.images)
    path = workdir / "compare"
    with FeatureStore.open(
        path, create=True, dim=data.dim, dtype="fp16", model_fingerprint="bench", shard_size=images
    ) as store:
        for ids, regions in data.batches(args.batch_size):
            store.add(ids, regions)
            if len(store) >= images:
                break
    ipc_file = path / shard_file_name(0)
    table = pa.ipc.open_file(pa.memory_map(str(ipc_file))).read_all()
    picks = np.random.default_rng(2).choice(images, min(args.queries, images), replace=False)
    pick_ids = [table.column("id")[int(k)].as_py() for k in picks]
    result: dict[str, Any] = {"images": images, "fetch_images": len(picks)}

    def ipc_fetch(_: int) -> None:
        with FeatureStore.open(path) as opened:
            opened.get_many(pick_ids)

    result["ipc"] = {"bytes": ipc_file.stat().st_size, "open_and_fetch": summary(timed_runs(ipc_fetch, 5, 1))}
    for compression in ("none", "zstd"):
        parquet_file = path / f"shard-{compression}.parquet"
        start = time.perf_counter()
        pq.write_table(table, parquet_file, compression=compression)
        write_ms = (time.perf_counter() - start) * 1e3

        def parquet_fetch(_: int, parquet_file: Path = parquet_file) -> None:
            # Parquet pages must be decoded before any row can be read: the whole column chunk.
            loaded = pq.read_table(parquet_file, columns=["regions"]).column("regions").combine_chunks()
            offsets = loaded.offsets.to_numpy()
            codes = loaded.values.flatten().to_numpy().reshape(-1, data.dim)
            rows = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in picks])
            torch.from_numpy(codes[rows]).float()

        result[f"parquet_{compression}"] = {
            "bytes": parquet_file.stat().st_size,
            "write_ms": round(write_ms, 1),
            "open_and_fetch": summary(timed_runs(parquet_fetch, 3, 1)),
        }
    shutil.rmtree(path)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--regions", type=int, default=36, help="regions per image")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument(
        "--dtypes", nargs="+", default=["fp32", "fp16", "int8"], choices=["fp32", "fp16", "int8"]
    )
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512, help="images per add() call")
    parser.add_argument("--queries", type=int, default=1000, help="ids per get_many call")
    parser.add_argument("--repeats", type=int, default=30, help="timed get_many calls per dtype")
    parser.add_argument("--compare-images", type=int, default=1024, help="images in the Parquet vs IPC shard")
    parser.add_argument("--workdir", type=Path, default=None, help="where stores are written (a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data = SyntheticRegions(args.images, args.regions, args.dim)
    report: dict[str, Any] = {
        "benchmark": "store",
        "machine": machine_info(pyarrow=pa.__version__),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "dtypes": {},
    }
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-store-") as tmp:
        workdir = Path(tmp)
        report["output_floor"] = bench_output_floor(data, args)
        print(
            f"floor (allocate + write {args.queries}x{args.regions}x{args.dim} float32): {report['output_floor']}"
        )
        for dtype in args.dtypes:
            report["dtypes"][dtype] = bench_dtype(data, dtype, args, workdir)
            print(dtype, json.dumps(report["dtypes"][dtype]))
        report["parquet_vs_ipc"] = bench_parquet_vs_ipc(data, args, workdir)
        print("parquet vs ipc", json.dumps(report["parquet_vs_ipc"]))
    print(f"wrote {write_results('store', report, args.out)}")
    return report


if __name__ == "__main__":
    main()
