"""The committed OpenMoji model on the test split: exact scan versus surrogate-text recall +
exact rerank, on the embedded backend and (when a server answers) on Elasticsearch.

    python benchmarks/bench_openmoji.py                     # models/openmoji-minilm, test split
    python benchmarks/bench_openmoji.py --backends embedded --candidates 100

Two settings:
- ``test``: the 430 test images form the collection; each test caption queries them
  (the paper's protocol: R@1/5/10 both directions by the exact scan, and image retrieval
  through the pipeline). With 430 images, 1,000 candidates are the whole collection.
- ``all``: the test captions query the whole collection (~4,000 images, every split, as
  in `teran-es demo`); the other splits' images are distractors.
Writes benchmarks/results/openmoji.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, write_results  # noqa: E402

from teran_es.collections.openmoji import build_openmoji  # noqa: E402
from teran_es.config import default_cache_dir  # noqa: E402
from teran_es.evaluation import chance_recall, evaluate_model  # noqa: E402
from teran_es.features import open_image_set  # noqa: E402
from teran_es.features.image_table import iter_collection_images  # noqa: E402
from teran_es.index import IndexError_  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402
from teran_es.search_evaluation import evaluate_search_pipeline  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run_backend(model, meta, config, test_set, collection, backend, setting, candidates, progress):
    """One backend and setting; the reason instead of numbers when the backend is unavailable."""
    config.index.backend = backend
    workdir = default_cache_dir() / "bench" / f"openmoji-{meta['fingerprint'][:12]}-{setting}-{backend}"
    distractors = iter_collection_images(collection) if setting == "all" else ()
    try:
        return evaluate_search_pipeline(
            model, test_set, config, workdir, candidates=candidates, progress=progress, distractors=distractors
        )
    except IndexError_ as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "openmoji-minilm"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--candidates", default="100,1000")
    parser.add_argument("--backends", default="embedded,elasticsearch")
    parser.add_argument("--settings", default="test,all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/openmoji.json)")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other backends' and settings' results of an earlier run"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    candidates = [int(c) for c in args.candidates.split(",")]
    progress = not args.no_progress

    collection = build_openmoji(progress=progress)
    model, config, meta = load_checkpoint(args.checkpoint)
    config.data.path = str(collection)
    config.ingest.device = config.search.device = "cpu"
    test_set = open_image_set(config.data, args.split, image_size=model.config.image_size)

    t = time.perf_counter()
    exact = evaluate_model(model, test_set, progress=progress)
    exact["seconds_total"] = round(time.perf_counter() - t, 3)
    chance = chance_recall(exact["n_images"], exact["n_captions"], exact["n_captions"] / exact["n_images"])
    print(f"exact scan on {args.split}: {exact['n_images']} images, {exact['n_captions']} captions")
    for d in ("i2t", "t2i"):
        print(f"  {d}: " + "  ".join(f"R@{k} {exact[f'{d}_r{k}']:6.2f}" for k in (1, 5, 10)))
    print(f"  RSUM {exact['rsum']:.2f}")

    pipeline: dict[str, dict] = {}
    for setting in args.settings.split(","):
        for backend in args.backends.split(","):
            key = f"{setting}/{backend}"
            result = run_backend(model, meta, config, test_set, collection, backend, setting, candidates, progress)
            pipeline[key] = result
            if "skipped" in result:
                print(f"{key}: skipped ({result['skipped']})")
                continue
            print(f"{key}: {result['ingest']['images']} images, {result['queries']} queries")
            rows = [("exact scan", result["exact"])] + [
                (f"recall {n} + rerank", v) for n, v in result["candidates"].items()
            ]
            for label, values in rows:
                recalls = "  ".join(f"R@{k} {values[f't2i_r{k}']:6.2f}" for k in (1, 5, 10))
                overlap = f"  overlap@10 {values['fidelity_at_10']:.3f}" if "fidelity_at_10" in values else ""
                print(f"  {label:20s} {recalls}{overlap}")

    out_path = Path(args.out) if args.out else RESULTS_DIR / "openmoji.json"
    if args.merge and out_path.is_file():
        earlier = json.loads(out_path.read_text()).get("pipeline", {})
        pipeline = {**{k: v for k, v in earlier.items() if "skipped" not in v}, **pipeline}
    payload = {
        "benchmark": "openmoji",
        "settings": vars(args),
        "checkpoint": {"path": args.checkpoint, "fingerprint": meta["fingerprint"], "extra": meta.get("extra")},
        "quantizer": config.quantizer.__dict__,
        "machine": machine_info(),
        "exact": exact,
        "chance": chance,
        "pipeline": pipeline,
    }
    print(f"wrote {write_results('openmoji', payload, out_path)}")


if __name__ == "__main__":
    main()
