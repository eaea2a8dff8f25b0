"""How well models generalise, side by side in one run, on the multi-source emoji collection
(`teran-es emoji build`): R@1/5/10 both directions by the exact scan, and image retrieval
through the search pipeline (cell first stage + exact rerank, embedded backend).

    python benchmarks/bench_generalisation.py --new runs/emoji-lite0/train/best
    python benchmarks/bench_generalisation.py --models old=models/openmoji-minilm --protocols openmoji

Protocols (teran_es/generalisation.py): ``unseen`` (test concepts, drawn by any artist,
against the whole collection), ``heldout`` (Twemoji's captions against all of its drawings)
and ``openmoji`` (the OpenMoji test captions against the 4,081 OpenMoji drawings, as
bench_openmoji.py's "all" setting; image -> text on the test split alone). The pipeline rows
use a seeded sample of at most --rerank-queries text queries per protocol; the exact row on
the same sample is given beside them. Writes benchmarks/results/generalisation.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, write_results  # noqa: E402

from teran_es.collections.emoji_multi import build_emoji_collection, read_rows  # noqa: E402
from teran_es.config import default_cache_dir  # noqa: E402
from teran_es.evaluation import encode_captions, encode_image_set  # noqa: E402
from teran_es.features.pixels import ImageFile, image_file_set  # noqa: E402
from teran_es.features.records import ImageCaptionSet  # noqa: E402
from teran_es.generalisation import build_protocols, group_ranks, list_ranks, recalls  # noqa: E402
from teran_es.indexer import Ingestor  # noqa: E402
from teran_es.model.alignment import chunked_scores  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402
from teran_es.region_cache import cached_region_set, frozen_pretrained_frontend  # noqa: E402
from teran_es.searcher import Searcher  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def image_set_for(model, rows, collection: Path, progress: bool) -> ImageCaptionSet:
    """Every drawing as the model takes it: cached regions of a frozen pretrained front end, or pixels."""
    files = [ImageFile(r["image_id"], str(collection / r["path"]), list(r["captions"]), r["split"]) for r in rows]
    size = model.config.image_size
    pixels = image_file_set(files, size, name="all")
    if frozen_pretrained_frontend(model) is not None:
        return cached_region_set(model, pixels, size, progress=progress)
    return pixels


def exact(model, regions, mask, protocol, progress):
    """Exact-scan ranks in both directions (t2i over the gallery, i2t over the text pool)."""
    words, word_mask = encode_captions(model, protocol.texts, progress=progress)
    scores = chunked_scores(regions[protocol.gallery], mask[protocol.gallery], words, word_mask)  # [N, Q]
    t2i = group_ranks(scores.T.numpy(), protocol.text_groups, protocol.gallery_groups)
    same_pool = protocol.text_pool is protocol.texts
    if not (same_pool and np.array_equal(protocol.image_queries, protocol.gallery)):  # else: the same matrix
        pool, pool_mask = (words, word_mask) if same_pool else encode_captions(model, protocol.text_pool)
        scores = chunked_scores(regions[protocol.image_queries], mask[protocol.image_queries], pool, pool_mask)
    i2t = group_ranks(scores.numpy(), protocol.image_query_groups, protocol.text_pool_groups)
    return t2i, i2t


def pipeline(model, config, meta, image_set, rows, protocol, candidates, sample, label, progress):
    """Text -> image R@K through ingest + recall + rerank on the protocol's gallery."""
    workdir = default_cache_dir() / "bench" / f"generalisation-{meta['fingerprint'][:12]}-{protocol.name}"
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh store, first stage and index every run
    config.workdir = str(workdir)
    config.index.backend = "embedded"
    config.index.name = f"generalisation-{label}-{protocol.name}"
    config.index.path = ""
    config.ingest.device = config.search.device = "cpu"
    t = time.perf_counter()
    with Ingestor(config, model=model) as ingestor:
        report = ingestor.ingest((image_set.load(int(i)) for i in protocol.gallery), batch_size=128)
    ingest_seconds = round(time.perf_counter() - t, 1)
    group_of = {rows[int(i)]["image_id"]: int(g) for i, g in zip(protocol.gallery, protocol.gallery_groups, strict=True)}
    searcher = Searcher.open(config, model=model)
    out = {"ingest": {"images": report.total_in_store, "seconds": ingest_seconds}, "queries": len(sample)}
    try:
        for n in candidates:
            lists, ms = [], []
            for q in sample:
                result = searcher.search(protocol.texts[q], k=10, candidates=n)
                lists.append([group_of[h.id] for h in result.hits])
                ms.append(1000 * sum(result.timings.values()))
            ranks = list_ranks(lists, protocol.text_groups[sample])
            out[f"recall {n} + rerank"] = {**recalls(ranks), "ms_p50": round(float(np.median(ms)), 1)}
    finally:
        searcher.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default=str(REPO / "models" / "openmoji-minilm"))
    parser.add_argument("--new", default=str(REPO / "runs" / "emoji-lite0" / "train" / "best"))
    parser.add_argument("--protocols", default="unseen,heldout,openmoji")
    parser.add_argument("--candidates", default="100,1000")
    parser.add_argument("--rerank-queries", type=int, default=500, help="0 = no pipeline rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/generalisation.json)")
    parser.add_argument("--concepts", type=int, default=0, help="keep a seeded sample of N concepts (0 = all)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    candidates = [int(c) for c in args.candidates.split(",") if c]

    started = time.perf_counter()
    collection = build_emoji_collection(progress=progress)
    manifest = (collection / "manifest.json").read_text(encoding="utf-8")
    rows = read_rows(collection)
    if args.concepts:
        concepts = sorted({r["concept"] for r in rows})
        kept = set(np.random.default_rng(0).choice(concepts, min(args.concepts, len(concepts)), replace=False))
        rows = [r for r in rows if r["concept"] in kept]
    protocols = {name: p for name, p in build_protocols(rows).items() if name in args.protocols.split(",")}
    results: dict[str, dict] = {}
    for label, path in (("old", args.old), ("new", args.new)):
        model, config, meta = load_checkpoint(path)
        t = time.perf_counter()
        image_set = image_set_for(model, rows, collection, progress)
        regions, mask = encode_image_set(model, image_set, progress=progress)
        model_result: dict = {"checkpoint": path, "fingerprint": meta["fingerprint"],
                              "frontend": model.config.frontend, "encode_seconds": round(time.perf_counter() - t, 1)}
        for name, protocol in protocols.items():
            t2i, i2t = exact(model, regions, mask, protocol, progress)
            entry = {
                "gallery": len(protocol.gallery),
                "text_queries": len(protocol.texts),
                "image_queries": len(protocol.image_queries),
                "exact": {"t2i": recalls(t2i), "i2t": recalls(i2t)},
            }
            if args.rerank_queries:
                rng = np.random.default_rng(0)
                sample = np.sort(rng.choice(len(protocol.texts), min(args.rerank_queries, len(protocol.texts)),
                                            replace=False))
                entry["exact_on_sample"] = recalls(t2i[sample])
                entry["pipeline"] = pipeline(model, config, meta, image_set, rows, protocol, candidates, sample,
                                             label, progress)
            model_result[name] = entry
            row = f"{label:3} {name:8} exact t2i " + " ".join(f"{k} {v:5.1f}" for k, v in entry["exact"]["t2i"].items())
            row += "  i2t " + " ".join(f"{k} {v:5.1f}" for k, v in entry["exact"]["i2t"].items())
            for key, value in entry.get("pipeline", {}).items():
                if key.startswith("recall"):
                    row += f" | {key}: R@10 {value['r10']:.1f}"
            print(row, flush=True)
        results[label] = model_result
        del model, regions, mask, image_set

    ratios = {
        name: {
            "t2i_r10_new_over_old": round(results["new"][name]["exact"]["t2i"]["r10"]
                                          / max(results["old"][name]["exact"]["t2i"]["r10"], 1e-9), 2)
        }
        for name in protocols
    }
    import json

    payload = {
        "benchmark": "generalisation",
        "settings": vars(args),
        "collection": {"path": str(collection), "manifest_counts": json.loads(manifest)["counts"],
                       "caption_sources": json.loads(manifest)["caption_sources"]},
        "machine": machine_info(),
        "seconds": round(time.perf_counter() - started, 1),
        "models": results,
        "ratios": ratios,
    }
    print(json.dumps(ratios))
    print(f"wrote {write_results('generalisation', payload, Path(args.out) if args.out else RESULTS_DIR / 'generalisation.json')}")


if __name__ == "__main__":
    main()
