"""How well models generalise, side by side in one run, on the multi-source emoji collection
(`teran-es emoji build`): R@1/5/10 both directions by the exact scan, and image retrieval
through the search pipeline (cell first stage + exact rerank, embedded backend).

    python benchmarks/bench_generalisation.py --new runs/emoji-lite0/train/best
    python benchmarks/bench_generalisation.py --old models/openmoji-minilm --protocols openmoji

Protocols (teran_es/generalisation.py): ``unseen`` (test concepts, drawn by any artist,
against the whole collection), ``heldout`` (Twemoji's captions against all of its drawings)
and ``openmoji`` (the OpenMoji test captions against the 4,081 OpenMoji drawings, as
bench_openmoji.py's "all" setting; image -> text on the test split alone). The pipeline rows
use a seeded sample of at most --rerank-queries text queries per protocol; the exact row on
the same sample is given beside them. The work is teran_es/generalisation_eval.py (also behind
`teran-es evaluate --generalisation`, for one model). Writes benchmarks/results/generalisation.json.

A model that carries a query bank (``query_bank.json`` in its checkpoint, ``teran-es
query-bank``) is measured as search runs it: its text -> image scores, exact and through the
pipeline, are less each drawing's bank normaliser. ``--no-bank-norm`` measures every model
by its plain scores.

``--bank-norm 3,5,10`` adds, for each model, text -> image recall by the exact scan with the
gallery's images normalised by a bank of ``--bank-size`` training captions at each strength
(query_bank.py), beside the plain scan and with two checks against the whole collection: the
val concepts (where a strength is chosen) and a sample of trained concepts (what it costs them).

    python benchmarks/bench_generalisation.py --old models/openmoji-minilm --new models/emoji-lite0-minilm \
        --rerank-queries 0 --bank-norm 2,3,5,7,10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, write_results  # noqa: E402

from teran_es.collections.emoji_multi import build_emoji_collection, read_rows  # noqa: E402
from teran_es.config import default_cache_dir  # noqa: E402
from teran_es.evaluation import encode_image_set  # noqa: E402
from teran_es.generalisation import build_protocols  # noqa: E402
from teran_es.generalisation_eval import (  # noqa: E402
    bank_norm_recalls,
    collection_image_set,
    evaluate_protocol,
    row_normalisers,
)
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def print_bank_norm(label: str, figures: dict) -> None:
    """One line per setting (plain, then each strength): text -> image R@10 per protocol and check."""
    for key, by_name in figures.items():
        if key == "bank":
            continue
        print(f"{label:3} bank-norm {key:10} t2i R@10 " + "  ".join(
            f"{name} {entry['t2i']['r10']:5.1f}" for name, entry in by_name.items()), flush=True)


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
    parser.add_argument("--bank-norm", default="", help="comma-separated strengths (beta > 0) of query-bank "
                        "normalisation to report beside the plain exact scan (empty: none)")
    parser.add_argument("--bank-size", type=int, default=2000, help="training captions in the bank (0 = all)")
    parser.add_argument("--check-queries", type=int, default=1500,
                        help="captions of trained concepts in the 'seen' check of --bank-norm (0 = all)")
    parser.add_argument("--no-bank-norm", action="store_true",
                        help="measure every model by its plain scores, even one that carries a query bank")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        betas = [float(b) for b in args.bank_norm.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--bank-norm: not a list of numbers: {args.bank_norm!r}")
    if any(not np.isfinite(b) or b <= 0 for b in betas):
        parser.error("--bank-norm: every strength must be a number > 0")
    if args.bank_size < 0 or args.check_queries < 0:
        parser.error("--bank-size and --check-queries must be >= 0")
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
        image_set = collection_image_set(model, rows, collection, progress)
        regions, mask = encode_image_set(model, image_set, progress=progress)
        model_result: dict = {"checkpoint": path, "fingerprint": meta["fingerprint"],
                              "frontend": model.config.frontend, "encode_seconds": round(time.perf_counter() - t, 1)}
        config.index.backend = "embedded"
        config.ingest.device = config.search.device = "cpu"
        config.search.bank_norm = not args.no_bank_norm
        bank = None if args.no_bank_norm else model.query_bank
        normaliser = row_normalisers(model, regions, mask) if bank is not None else None
        model_result["query_bank"] = None if bank is None else {
            "texts": len(bank.texts), "beta": bank.beta, "source": bank.source, "fingerprint": bank.fingerprint}
        if bank is not None:
            print(f"{label:3} ranks text -> image less its query bank's normalisers ({len(bank.texts)} texts, "
                  f"beta {bank.beta:g})", flush=True)
        for name, protocol in protocols.items():
            entry = evaluate_protocol(
                model, config, image_set, regions, mask, protocol,
                candidates=candidates if args.rerank_queries else (), queries=args.rerank_queries,
                workdir=default_cache_dir() / "bench" / f"generalisation-{meta['fingerprint'][:12]}-{name}",
                index_name=f"generalisation-{label}-{name}", normaliser=normaliser, progress=progress,
            )
            model_result[name] = entry
            row = f"{label:3} {name:8} exact t2i " + " ".join(f"{k} {v:5.1f}" for k, v in entry["exact"]["t2i"].items())
            row += "  i2t " + " ".join(f"{k} {v:5.1f}" for k, v in entry["exact"]["i2t"].items())
            for key, value in entry.get("pipeline", {}).items():
                if key.startswith("recall"):
                    row += f" | {key}: R@10 {value['r10']:.1f}"
            print(row, flush=True)
            print(f"{'':12} t2i R@10 by kind (queries): " + ", ".join(
                f"{kind} {v['r10']:.1f} ({v['queries']})" for kind, v in entry["exact_t2i_by_kind"].items()), flush=True)
        if betas:
            model_result["bank_norm"] = bank_norm_recalls(model, regions, mask, rows, protocols, betas,
                                                          bank_size=args.bank_size, check_queries=args.check_queries,
                                                          progress=progress)
            print_bank_norm(label, model_result["bank_norm"])
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
