"""Named queries against one image collection, by the exact scan, for several checkpoints side
by side: each query's top K and the rank of the image it should find.

    python benchmarks/compare_queries.py --demo models/openmoji-minilm runs/emoji-lite0/train/best
    python benchmarks/compare_queries.py --photos models/openmoji-minilm runs/emoji-lite0/train/best

``--demo``: the demo's four queries over the 4,081 OpenMoji drawings it ingests (the expected
drawing of "food" is left open: any food is right). ``--photos``: queries over twenty of
scikit-image's sample photos (needs scikit-image). ``--folder DIR --query "TEXT=IMAGE_ID"``:
your own. A frozen pretrained front end's regions come from the region cache. A model that
carries a query bank is ranked as search ranks it (less each image's bank normaliser), with
its plain ranking beside. Writes benchmarks/results/compare-queries-<set>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, repo_relative, write_results  # noqa: E402

from teran_es.evaluation import encode_captions, encode_image_set  # noqa: E402
from teran_es.features.pixels import ImageFile, iter_folder_images  # noqa: E402
from teran_es.generalisation_eval import row_normalisers  # noqa: E402
from teran_es.model.alignment import chunked_scores  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402
from teran_es.region_cache import model_image_set  # noqa: E402

DEMO_QUERIES = {"red heart": "openmoji-2764", "a cat that is laughing": "openmoji-1F639", "food": "",
                "flag of Italy": "openmoji-1F1EE-1F1F9"}
PHOTOS = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "color.png",
          "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
          "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png"]
PHOTO_QUERIES = {"a horse": "horse.png", "a cup of coffee": "coffee.png", "a cat": "chelsea.png",
                 "a rocket": "rocket.jpg", "the moon": "moon.png", "an astronaut": "astronaut.png",
                 "a motorcycle": "motorcycle_left.png", "a man with a camera": "camera.png"}


def demo_images() -> list[ImageFile]:
    from teran_es.collections.openmoji import build_openmoji
    from teran_es.features.image_table import iter_collection_images

    return list(iter_collection_images(build_openmoji(progress=False)))


def photo_images() -> list[ImageFile]:
    try:
        import skimage
    except ImportError:
        raise SystemExit("--photos needs scikit-image (pip install scikit-image)") from None
    root = Path(skimage.data.__file__).parent
    return [ImageFile(name, str(root / name), [name]) for name in PHOTOS]


def _ranks(ids: list[str], scores: torch.Tensor, queries: dict[str, str], k: int) -> dict:
    out = {}
    for j, (query, expected) in enumerate(queries.items()):
        order = [ids[i] for i in scores[:, j].argsort(descending=True, stable=True).tolist()]
        out[query] = {"top": order[:k], "expected": expected or None,
                      "rank": order.index(expected) + 1 if expected in order else None}
    return out


def ranked(checkpoint: str, images: list[ImageFile], queries: dict[str, str], k: int) -> dict:
    """{"queries": {query: {"top": [ids], "expected": id, "rank": 1-based rank of it or None}}}
    for one checkpoint, ranked as search ranks them: less each image's query-bank normaliser
    when the model carries a bank, with the plain ranking beside it ("queries_plain")."""
    model, _, meta = load_checkpoint(checkpoint)
    image_set = model_image_set(model, images, name="queries")
    ids = list(image_set.image_ids)
    regions, mask = encode_image_set(model, image_set)
    words, word_mask = encode_captions(model, list(queries))
    scores = chunked_scores(regions, mask, words, word_mask, kind=model.config.score, padding=model.config.padding)
    if model.query_bank is None:
        return {"fingerprint": meta["fingerprint"], "query_bank": None, "queries": _ranks(ids, scores, queries, k)}
    normalised = scores - torch.from_numpy(row_normalisers(model, regions, mask)).float()[:, None]
    return {"fingerprint": meta["fingerprint"],
            "query_bank": {"texts": len(model.query_bank.texts), "beta": model.query_bank.beta},
            "queries": _ranks(ids, normalised, queries, k), "queries_plain": _ranks(ids, scores, queries, k)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--demo", action="store_true")
    which.add_argument("--photos", action="store_true")
    which.add_argument("--folder", default=None)
    parser.add_argument("--query", action="append", default=[], help='"TEXT=EXPECTED_ID" (with --folder)')
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.demo:
        name, images, queries = "demo", demo_images(), DEMO_QUERIES
    elif args.photos:
        name, images, queries = "photos", photo_images(), PHOTO_QUERIES
    else:
        name, images = "folder", list(iter_folder_images(args.folder))
        images = [ImageFile(i.image_id, i.path, [i.image_id]) for i in images]
        queries = dict(q.partition("=")[::2] for q in args.query)
        if not queries:
            parser.error("--folder needs at least one --query")
    results = {}
    for checkpoint in args.checkpoints:
        results[repo_relative(checkpoint)] = ranked(checkpoint, images, queries, args.k)
        print(repo_relative(checkpoint))
        result = results[repo_relative(checkpoint)]
        for key, label in (("queries", "" if result["query_bank"] is None else "with its query bank"),
                           ("queries_plain", "plain scores")):
            if key not in result:
                continue
            if label:
                print(f"  {label}:")
            for query, entry in result[key].items():
                print(f"  {query!r}: rank of {entry['expected']} = {entry['rank']}; top {args.k}: {', '.join(entry['top'])}")
    payload = {"benchmark": f"compare-queries-{name}", "images": len(images), "k": args.k, "models": results,
               "machine": machine_info(threads=args.threads), "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out) if args.out else RESULTS_DIR / f"compare-queries-{name}.json"
    print(f"wrote {write_results(f'compare-queries-{name}', payload, out)}")


if __name__ == "__main__":
    main()
