"""What the frozen features alone give: a linear joint embedding of a checkpoint's pooled
image regions and its text backbone's sentence vectors, trained on the train split, scored
on the three generalisation protocols beside the checkpoint's own TERAN figures.

    python benchmarks/bench_linear_probe.py --checkpoint runs/emoji-lite0/train/best

The image side is the mean of the checkpoint's front-end regions (for a frozen pretrained
front end, the cached regions that TERAN's layers start from; for one with fine-tuned blocks,
the regions its tuned blocks make of the cached trunk maps); the text side is the mean of
the text backbone's last states over the caption's tokens (the sentence vector MiniLM was
trained to give). Two linear maps into ``--dim`` dimensions are fitted with a symmetric
InfoNCE loss in which drawings of the same concept are positives of each other, as
``train.positive_groups = "concept"`` treats them. The probe asks how far a linear map of the
same frozen features gets, which tells whether the layers above the backbones, or the
backbones themselves, limit the model. Writes benchmarks/results/linear-probe.json.

``--frontends efficientnet-lite0,efficientnet-lite2@224`` probes other image backbones side
by side in the same run, on the same captions and split: each frozen, its last block pooled
to the checkpoint's grid, at the size it was trained at (or ``@SIZE``). ``--collection-size``
renders the drawings at another size (default 96 px, what the models are trained on).

    python benchmarks/bench_linear_probe.py --no-teran --frontends efficientnet-lite0,efficientnet-lite1,efficientnet-lite2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, repo_relative, write_results  # noqa: E402

from teran_es.collections.emoji_multi import build_emoji_collection, read_rows  # noqa: E402
from teran_es.encoding import frontend_size, image_inputs  # noqa: E402
from teran_es.evaluation import encode_image_set  # noqa: E402
from teran_es.generalisation import build_protocols, concept_numbers, group_ranks, recalls, recalls_by_kind  # noqa: E402
from teran_es.generalisation_eval import collection_image_set, exact_ranks  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402
from teran_es.model.pretrained_frontend import (  # noqa: E402
    PRETRAINED_FRONTENDS,
    frontend_network,
    native_image_size,
)
from teran_es.model.teran import TERAN  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@torch.no_grad()
def pooled_regions(model, image_set, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """The mean of each image's front-end regions (padding left out) -> float32 [N, C]."""
    out = []
    for start in tqdm(range(0, len(image_set), batch_size), desc="pool regions", disable=not progress, leave=False):
        records = [image_set.load(i) for i in range(start, min(start + batch_size, len(image_set)))]
        inputs = {name: t.to(model.device) for name, t in image_inputs(records, frontend_size(model)).items()}
        features, _, mask = model.image_regions(**inputs)
        weights = mask.float().unsqueeze(-1)
        out.append(((features.float() * weights).sum(1) / weights.sum(1).clamp_min(1)).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def sentence_vectors(model, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """The text backbone's last states averaged over each text's tokens, L2-normalised -> [M, H]."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = model.tokenize(texts[start : start + batch_size])
        ids, attention = tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
        states = model.textual.backbone_states(ids, attention).float()
        weights = attention.float().unsqueeze(-1)
        out.append(F.normalize((states * weights).sum(1) / weights.sum(1), dim=-1).cpu())
    return torch.cat(out).numpy()


def fit_linear_probe(
    image_x: np.ndarray,
    text_x: np.ndarray,
    pairs: np.ndarray,
    groups: np.ndarray,
    *,
    dim: int = 256,
    epochs: int = 10,
    batch_size: int = 256,
    temperature: float = 0.05,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """Two linear maps (image [C] -> [dim], text [H] -> [dim]) fitted on the matching ``pairs``.

    image_x [N, C], text_x [M, H]; pairs int [P, 2] of (image row, text row); groups int [N]:
    within a batch, every pair whose image is of the same group as a row's is a positive of
    that row (a multi-positive InfoNCE in both directions at ``temperature``); the rest are
    negatives. The image features should be standardised by the caller.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, texts = torch.from_numpy(image_x).float(), torch.from_numpy(text_x).float()
    pair_index, group = torch.from_numpy(pairs).long(), torch.from_numpy(groups).long()
    image_map, text_map = torch.nn.Linear(images.shape[1], dim), torch.nn.Linear(texts.shape[1], dim)
    optimiser = torch.optim.AdamW([*image_map.parameters(), *text_map.parameters()], lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(pair_index), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = pair_index[order[start : start + batch_size]]
            zi = F.normalize(image_map(images[batch[:, 0]]), dim=-1)
            zt = F.normalize(text_map(texts[batch[:, 1]]), dim=-1)
            logits = zi @ zt.T / temperature
            g = group[batch[:, 0]]
            positive = (g[:, None] == g[None, :]).float()
            loss = -(F.log_softmax(logits, 1) * positive).sum(1).div(positive.sum(1)).mean()
            loss = loss - (F.log_softmax(logits, 0) * positive).sum(0).div(positive.sum(0)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return image_map.eval(), text_map.eval()


def parse_frontend(spec: str) -> tuple[str, int]:
    """``"efficientnet-lite2"`` -> (name, the size it was trained at); ``"NAME@SIZE"`` -> (name, SIZE)."""
    name, _, size = spec.partition("@")
    if name not in PRETRAINED_FRONTENDS:
        raise SystemExit(f"--frontends: unknown front end {name!r} (known: {', '.join(PRETRAINED_FRONTENDS)})")
    if size and not (size.isdigit() and int(size) >= 32):
        raise SystemExit(f"--frontends: {spec!r}: the size after @ must be a whole number of pixels >= 32")
    return name, int(size) if size else native_image_size(name)


def frozen_frontend_model(model: TERAN, name: str, image_size: int) -> TERAN:
    """``model`` with its image front end replaced by the frozen pretrained ``name`` (its last
    block, the same grid, fed ``image_size`` pixels), sharing its text backbone. The layers
    above the front end are untrained; the probe uses only the front end's regions."""
    shape = frontend_network(name)  # random weights: only its block count and widths are read
    last = len(shape._blocks) - 1
    config = dataclasses.replace(
        model.config, frontend=name, frontend_block=last, frontend_trainable_blocks=0, image_size=image_size,
        region_feature_dim=shape.block_channels(last),
    )
    return TERAN(config, text_backbone=model.textual.backbone, tokenizer=model.tokenizer).eval()


def probe_features(pooled: np.ndarray, sentences: np.ndarray, texts: list[str], rows: list[dict], protocols: dict,
                   args) -> tuple[dict, dict]:
    """Fit the probe on the train split's pairs of ``pooled`` [N_rows, C] and ``sentences``
    [len(texts), H], once per seed (``args.seed`` .. ``args.seed + args.seeds - 1``) ->
    (per-protocol probe figures averaged over the seeds, with each seed's text -> image R@10
    overall and on single concepts; {"image_dim", "train_pairs", "fit_seconds"})."""
    text_row = {text: i for i, text in enumerate(texts)}
    train = np.asarray([r["split"] == "train" for r in rows])
    mean, std = pooled[train].mean(0), pooled[train].std(0) + 1e-6
    groups = concept_numbers(rows)[1]
    pairs = np.asarray([(i, text_row[c]) for i, r in enumerate(rows) if train[i] for c in r["captions"]], dtype=np.int64)
    standardised = (pooled - mean) / std
    runs: list[dict] = []
    t = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        image_map, text_map = fit_linear_probe(standardised, sentences, pairs, groups, dim=args.dim,
                                               epochs=args.epochs, seed=seed)
        with torch.no_grad():
            image_z = F.normalize(image_map(torch.from_numpy(standardised).float()), dim=-1)
            text_all = F.normalize(text_map(torch.from_numpy(sentences)), dim=-1)
        text_z = {text: text_all[i] for i, text in enumerate(texts)}
        runs.append({name: probe_protocol(image_z, text_z, protocol) for name, protocol in protocols.items()})
    fit_seconds = time.perf_counter() - t
    figures = {}
    for name in protocols:
        figures[name] = mean_figures([run[name] for run in runs])
        figures[name]["t2i_r10_by_seed"] = [run[name]["t2i"]["r10"] for run in runs]
        figures[name]["t2i_single_r10_by_seed"] = [
            run[name]["t2i_by_kind"].get("single", {}).get("r10") for run in runs
        ]
    info = {"image_dim": int(pooled.shape[1]), "train_pairs": len(pairs), "seeds": args.seeds,
            "fit_seconds": round(fit_seconds, 1)}
    return figures, info


def mean_figures(runs: list[dict]) -> dict:
    """The element-wise mean of nested dicts of numbers of the same shape (a query count,
    the same in each, stays as it is)."""
    out: dict = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if isinstance(first, dict):
            out[key] = mean_figures(values)
        elif key == "queries":
            out[key] = first
        else:
            out[key] = round(float(np.mean(values)), 2)
    return out


def probe_protocol(image_z: torch.Tensor, text_z: dict[str, torch.Tensor], protocol) -> dict:
    """Exact R@1/5/10 both ways of one protocol on probe embeddings (image_z [N_rows, dim],
    text_z: text -> [dim], all normalised), and text -> image for each kind of concept."""
    queries = torch.stack([text_z[t] for t in protocol.texts])
    t2i = group_ranks((queries @ image_z[protocol.gallery].T).numpy(), protocol.text_groups, protocol.gallery_groups)
    pool = torch.stack([text_z[t] for t in protocol.text_pool])
    i2t = group_ranks((image_z[protocol.image_queries] @ pool.T).numpy(), protocol.image_query_groups,
                      protocol.text_pool_groups)
    return {"t2i": recalls(t2i), "i2t": recalls(i2t), "t2i_by_kind": recalls_by_kind(t2i, protocol.text_kinds)}


def print_frontends(probe: dict, others: dict, protocols: dict) -> None:
    """Text -> image R@10 (mean over the seeds, +- their standard deviation) of the checkpoint's
    front end and each other one, per protocol and for single-code-point concepts, with each
    one's ratio to the checkpoint's."""
    print(f"{'front end':24} " + " ".join(f"{name:>24} {'single':>11}" for name in protocols))

    def cells(figures: dict) -> list[tuple[float, float, float, float]]:
        out = []
        for name in protocols:
            single = figures[name]["t2i_by_kind"].get("single", {}).get("r10", float("nan"))  # mean over seeds
            single_by_seed = [v for v in figures[name]["t2i_single_r10_by_seed"] if v is not None] or [float("nan")]
            out.append((figures[name]["t2i"]["r10"], float(np.std(figures[name]["t2i_r10_by_seed"])),
                        single, float(np.std(single_by_seed))))
        return out

    base = cells(probe)
    print(f"{'checkpoint':24} " + " ".join(f"{r10:13.1f} +-{sd:4.1f}{'':5} {one:5.1f} +-{one_sd:4.1f}"
                                           for r10, sd, one, one_sd in base))
    for label, entry in others.items():
        text = [f"{r10:5.1f} +-{sd:4.1f} ({r10 / max(b10, 1e-9):4.2f}x) {one:5.1f} +-{one_sd:4.1f}"
                for (r10, sd, one, one_sd), (b10, *_) in zip(cells(entry["protocols"]), base, strict=True)]
        print(f"{label:24} {' '.join(text)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "runs" / "emoji-lite0" / "train" / "best"))
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="fit the probe this many times (seeds --seed, "
                        "--seed + 1, ...) and report the mean: one fit moves (a) by a few points")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-teran", action="store_true", help="skip the checkpoint's own exact figures")
    parser.add_argument("--frontends", default="", help="comma-separated frozen front ends to probe beside the "
                        "checkpoint's, each NAME or NAME@SIZE (e.g. efficientnet-lite2@260)")
    parser.add_argument("--collection-size", type=int, default=0, help="render the drawings at this many pixels "
                        "(0: the collection's default, 96)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/linear-probe.json)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    started = time.perf_counter()

    frontends = [parse_frontend(spec) for spec in args.frontends.split(",")] if args.frontends else []

    collection = build_emoji_collection(progress=progress, **({"size": args.collection_size} if args.collection_size else {}))
    rows = read_rows(collection)
    protocols = build_protocols(rows)
    model, _, meta = load_checkpoint(args.checkpoint)
    image_set = collection_image_set(model, rows, collection, progress=progress)

    t = time.perf_counter()
    pooled = pooled_regions(model, image_set, progress=progress)
    texts = sorted({caption for r in rows for caption in r["captions"]})
    sentences = sentence_vectors(model, texts)
    features_seconds = time.perf_counter() - t
    probe, probe_info = probe_features(pooled, sentences, texts, rows, protocols, args)

    # other backbones, frozen, on the same captions, split and sentence vectors
    others: dict[str, dict] = {}
    for name, size in frontends:
        label = f"{name}@{size}"
        t = time.perf_counter()
        other = frozen_frontend_model(model, name, size)
        other_pooled = pooled_regions(other, collection_image_set(other, rows, collection, progress=progress),
                                      progress=progress)
        seconds = time.perf_counter() - t
        figures, info = probe_features(other_pooled, sentences, texts, rows, protocols, args)
        others[label] = {"frontend": name, "image_size": size, "block": other.config.frontend_block,
                         "features_seconds": round(seconds, 1), **info, "protocols": figures}
        del other, other_pooled

    results: dict[str, dict] = {}
    regions = mask = None
    if not args.no_teran:
        regions, mask = encode_image_set(model, image_set, progress=progress)
    for name, protocol in protocols.items():
        entry = {"probe": probe[name]}
        if regions is not None:
            t2i, i2t = exact_ranks(model, regions, mask, protocol)
            entry["teran"] = {"t2i": recalls(t2i), "i2t": recalls(i2t),
                              "t2i_by_kind": recalls_by_kind(t2i, protocol.text_kinds)}
            entry["t2i_r10_teran_over_probe"] = round(entry["teran"]["t2i"]["r10"]
                                                      / max(entry["probe"]["t2i"]["r10"], 1e-9), 2)
        results[name] = entry
        line = f"{name:8} probe t2i R@10 {entry['probe']['t2i']['r10']:5.1f} i2t {entry['probe']['i2t']['r10']:5.1f}"
        if "teran" in entry:
            line += f" | TERAN t2i R@10 {entry['teran']['t2i']['r10']:5.1f} i2t {entry['teran']['i2t']['r10']:5.1f}"
        print(line, flush=True)
    if others:
        print_frontends(probe, others, protocols)

    payload = {
        "benchmark": "linear-probe",
        "settings": {**vars(args), "checkpoint": repo_relative(args.checkpoint)},
        "model": {"checkpoint": repo_relative(args.checkpoint), "fingerprint": meta["fingerprint"],
                  "frontend": model.config.frontend, "frontend_block": model.config.frontend_block,
                  "image_size": model.config.image_size},
        "collection": {"path": repo_relative(collection), "rows": len(rows),
                       "size": args.collection_size or "default"},
        "probe": {**probe_info, "text_dim": int(sentences.shape[1]), "features_seconds": round(features_seconds, 1)},
        "frontends": others,
        "machine": machine_info(threads=args.threads),
        "seconds": round(time.perf_counter() - started, 1),
        "protocols": results,
    }
    print(f"wrote {write_results('linear-probe', payload, Path(args.out) if args.out else RESULTS_DIR / 'linear-probe.json')}")
    print(json.dumps({name: entry.get("t2i_r10_teran_over_probe") for name, entry in results.items()}))


if __name__ == "__main__":
    main()
