"""How well a model generalises, measured: the protocols of ``generalisation.py`` run with a
model on a multi-source emoji collection, by the exact scan and through the search pipeline.

Used by ``teran-es evaluate --generalisation`` and ``benchmarks/bench_generalisation.py``.

- :func:`collection_image_set`: every drawing as the model takes it (cached regions of a
  frozen pretrained front end, else pixels), in the collection's row order;
- :func:`row_normalisers`: every row's query-bank normaliser, when the model carries a bank;
- :func:`exact_ranks`: exact-scan ranks of one protocol in both directions;
- :func:`pipeline_recalls`: the protocol's gallery ingested into a fresh index in a work
  directory of its own, a sample of its text queries searched (recall + rerank) per
  candidate count;
- :func:`evaluate_protocol`: one protocol's result dict (see its docstring);
- :func:`bank_norm_recalls`: text -> image recall of every protocol, and of val and trained
  concepts, with gallery images normalised by a bank of training captions (``query_bank.py``)
  at each of several strengths, beside the plain scores.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.bank_normalisers import encode_bank, image_normalisers
from teran_es.config import PipelineConfig
from teran_es.errors import TeranError
from teran_es.evaluation import encode_captions
from teran_es.features.pixels import ImageFile
from teran_es.features.records import ImageCaptionSet
from teran_es.generalisation import (
    Protocol,
    bank_texts,
    concept_numbers,
    concept_queries,
    group_ranks,
    list_ranks,
    query_sample,
    recalls,
    recalls_by_kind,
)
from teran_es.indexer import Ingestor
from teran_es.model.alignment import chunked_scores
from teran_es.normaliser_file import NORMALISER_FILE
from teran_es.query_bank import bank_normaliser, normalised_scores
from teran_es.region_cache import model_image_set
from teran_es.search_evaluation import evaluate_index_name
from teran_es.searcher import Searcher

SAMPLE_SEED = 0
# Captions are encoded this many at a time whatever the caller's batch size: a caption's
# embedding moves by rounding with its batch's padded length, enough to swap near ties among
# thousands of texts, and the figures should not depend on a speed setting.
CAPTION_BATCH = 256
# what a pipeline work directory holds (workdir.py): a directory of nothing else may be wiped
WORKDIR_ENTRIES = frozenset({"config.toml", "quantizer.npz", "store", "index", "skipped.jsonl", "dead-letter.jsonl",
                             NORMALISER_FILE, NORMALISER_FILE + ".tmp"})


class GeneralisationError(TeranError, ValueError):
    """The generalisation evaluation cannot run as asked."""


def collection_image_set(model, rows: list[dict], collection: str | Path, progress: bool = False) -> ImageCaptionSet:
    """Every row's drawing as the model takes it, in row order: the regions of a frozen
    pretrained front end (computed once, cached on disk), else the decoded pixels."""
    if getattr(model, "frontend", None) is None:
        raise GeneralisationError("the emoji collection is images: this needs a model with an image front end "
                                  "(model.frontend), e.g. one trained with pipelines/emoji-lite0.toml")
    root = Path(collection)
    files = [ImageFile(r["image_id"], str(root / r["path"]), list(r["captions"]), r["split"]) for r in rows]
    missing = sum(not file.captions for file in files)
    if missing:  # a row without captions would be left out: indices would no longer match
        raise GeneralisationError(f"{missing} row(s) of {root} have no captions; rebuild the collection")
    return model_image_set(model, files, name="all", progress=progress)


def _scores(model, regions: torch.Tensor, mask: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor):
    return chunked_scores(regions, mask, words, word_mask, kind=model.config.score, padding=model.config.padding,
                          device=model.device)


def row_normalisers(model, regions: torch.Tensor, mask: torch.Tensor) -> np.ndarray | None:
    """Every row's query-bank normaliser (regions [N_rows, R, D], mask [N_rows, R] -> float64
    [N_rows]), as search computes it; None when the model carries no bank."""
    bank = getattr(model, "query_bank", None)
    if bank is None:
        return None
    words, word_mask = encode_bank(model, bank)
    return image_normalisers(model, words, word_mask, regions, mask, bank.beta)


def exact_ranks(
    model,
    regions: torch.Tensor,
    mask: torch.Tensor,
    protocol: Protocol,
    *,
    normaliser: np.ndarray | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact-scan ranks of ``protocol`` in both directions.

    regions [N_rows, R, D], mask [N_rows, R]: the encoded images of every row of the
    collection (the protocol's indices point into them) -> (t2i ranks [len(texts)] over the
    gallery, i2t ranks [len(image_queries)] over the text pool), 0-based ranks of the best
    ranked relevant item (``generalisation.group_ranks``). ``normaliser`` [N_rows]: each
    row's query-bank normaliser, subtracted from its text -> image scores (image -> text
    rankings do not change with it).
    """
    words, word_mask = encode_captions(model, protocol.texts, batch_size=CAPTION_BATCH, progress=progress)
    scores = _scores(model, regions[protocol.gallery], mask[protocol.gallery], words, word_mask)  # [N, Q]
    t2i_scores = scores.T.numpy()
    if normaliser is not None:
        t2i_scores = normalised_scores(t2i_scores, normaliser[protocol.gallery])
    t2i = group_ranks(t2i_scores, protocol.text_groups, protocol.gallery_groups)
    same_pool = protocol.text_pool is protocol.texts
    if not (same_pool and np.array_equal(protocol.image_queries, protocol.gallery)):  # else: the same matrix
        pool, pool_mask = (words, word_mask) if same_pool else encode_captions(
            model, protocol.text_pool, batch_size=CAPTION_BATCH, progress=progress
        )
        scores = _scores(model, regions[protocol.image_queries], mask[protocol.image_queries], pool, pool_mask)
    i2t = group_ranks(scores.numpy(), protocol.image_query_groups, protocol.text_pool_groups)
    return t2i, i2t


def fresh_workdir(path: str | Path) -> Path:
    """``path`` emptied for a new ingest: removed when it holds only what a pipeline work
    directory holds (an earlier evaluation's); anything else there is refused, not deleted."""
    path = Path(path)
    if path.exists():
        others = sorted(p.name for p in path.iterdir() if p.name not in WORKDIR_ENTRIES) if path.is_dir() else [path.name]
        if others:
            raise GeneralisationError(
                f"{path} holds files other than a pipeline work directory's ({', '.join(others[:3])}); "
                "give a new or empty --workdir"
            )
        shutil.rmtree(path)
    return path


def pipeline_recalls(
    model,
    config: PipelineConfig,
    image_set: ImageCaptionSet,
    protocol: Protocol,
    sample: np.ndarray,
    candidates: Sequence[int],
    workdir: str | Path,
    *,
    index_name: str | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, Any]:
    """Text -> image R@1/5/10 through ingest + recall + rerank on the protocol's gallery.

    ``image_set`` holds every row of the collection (the protocol's indices point into it);
    the gallery is ingested into a fresh index in ``workdir`` (``config``'s backend, index
    name ``index_name`` or one from the work directory), then each text query of ``sample``
    searches it once per candidate count. Returns ``{"ingest": {"images", "seconds"},
    "queries": len(sample), "recall N + rerank": {"r1", "r5", "r10", "ms_p50"}, ...}``.
    """
    workdir = fresh_workdir(workdir)
    config = dataclasses.replace(
        config,
        workdir=str(workdir),
        index=dataclasses.replace(config.index, name=index_name or evaluate_index_name(workdir), path=""),
    )
    t = time.perf_counter()
    with Ingestor(config, model=model) as ingestor:
        report = ingestor.ingest((image_set.load(int(i)) for i in protocol.gallery), batch_size=batch_size)
    out: dict[str, Any] = {
        "ingest": {"images": report.total_in_store, "seconds": round(time.perf_counter() - t, 1)},
        "queries": len(sample),
    }
    group_of = {image_set.image_ids[int(i)]: int(g) for i, g in zip(protocol.gallery, protocol.gallery_groups, strict=True)}
    searcher = Searcher.open(config, model=model)
    try:
        for n in candidates:
            lists, ms = [], []
            for q in tqdm(sample, desc=f"{protocol.name}: recall {n} + rerank", disable=not progress, leave=False):
                result = searcher.search(protocol.texts[int(q)], k=10, candidates=n)
                lists.append([group_of[h.id] for h in result.hits])
                ms.append(1000 * sum(result.timings.values()))
            ranks = list_ranks(lists, protocol.text_groups[sample])
            out[f"recall {n} + rerank"] = {**recalls(ranks), "ms_p50": round(float(np.median(ms)), 1) if ms else 0.0}
    finally:
        searcher.close()
    return out


def evaluate_protocol(
    model,
    config: PipelineConfig,
    image_set: ImageCaptionSet,
    regions: torch.Tensor,
    mask: torch.Tensor,
    protocol: Protocol,
    *,
    candidates: Sequence[int] = (),
    queries: int = 0,
    workdir: str | Path | None = None,
    index_name: str | None = None,
    batch_size: int = 128,
    normaliser: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One protocol's results: ``{"gallery", "text_queries", "image_queries", "text_pool"
    (sizes), "exact": {"t2i": {"r1", "r5", "r10"}, "i2t": {...}}}`` (text -> image less
    ``normaliser``, every row's query-bank normaliser, when given: ``row_normalisers``; the
    pipeline rows follow ``config.search.bank_norm``) and, with ``candidates``,
    ``"exact_on_sample"`` (t2i R@K of the exact scan on the pipeline's sample) and
    ``"pipeline"`` (:func:`pipeline_recalls` on a seeded sample of ``queries`` text queries,
    0 = all, in ``workdir``)."""
    if not len(protocol.texts) or not len(protocol.image_queries):
        raise GeneralisationError(f"protocol {protocol.name!r} has no queries in this collection")
    t2i, i2t = exact_ranks(model, regions, mask, protocol, normaliser=normaliser, progress=progress)
    entry: dict[str, Any] = {
        "gallery": len(protocol.gallery),
        "text_queries": len(protocol.texts),
        "image_queries": len(protocol.image_queries),
        "text_pool": len(protocol.text_pool),
        "exact": {"t2i": recalls(t2i), "i2t": recalls(i2t)},
        # which kinds of concept the text queries find (flags, skin-tone variants, ...)
        "exact_t2i_by_kind": recalls_by_kind(t2i, protocol.text_kinds),
    }
    if candidates:
        if workdir is None:
            raise GeneralisationError("the pipeline rows need a work directory")
        sample = query_sample(len(protocol.texts), queries)
        entry["exact_on_sample"] = recalls(t2i[sample])
        entry["pipeline"] = pipeline_recalls(model, config, image_set, protocol, sample, candidates, workdir,
                                             index_name=index_name, batch_size=batch_size, progress=progress)
    return entry


def text_image_scores(model, regions: torch.Tensor, mask: torch.Tensor, texts: Sequence[str],
                      gallery: np.ndarray, progress: bool = False) -> np.ndarray:
    """Exact scores of ``texts`` against the ``gallery`` rows of regions [N_rows, R, D] /
    mask [N_rows, R] -> float32 [len(texts), len(gallery)]."""
    words, word_mask = encode_captions(model, list(texts), batch_size=CAPTION_BATCH, progress=progress)
    return _scores(model, regions[gallery], mask[gallery], words, word_mask).T.numpy()


def bank_norm_recalls(
    model,
    regions: torch.Tensor,
    mask: torch.Tensor,
    rows: list[dict],
    protocols: dict[str, Protocol],
    betas: Sequence[float],
    *,
    bank_size: int = 2000,
    check_queries: int = 1500,
    seed: int = SAMPLE_SEED,
    progress: bool = False,
) -> dict[str, Any]:
    """Text -> image R@1/5/10 with query-bank normalisation, beside the plain exact scan.

    The bank is a seeded sample of ``bank_size`` training captions (``bank_texts``); every
    row's image is scored against it once. Besides the ``protocols`` (overall and by kind of
    concept), two checks search the whole collection: ``val`` (captions of the val concepts,
    where a strength is chosen) and ``seen`` (a sample of ``check_queries`` captions of trained
    concepts: what the normalisation costs the concepts a model knows). Image -> text is not
    reported: a per-image offset leaves it unchanged. Returns ``{"bank": {...}, "plain":
    {name: figures}, "beta=B": {name: figures}, ...}``.
    """
    if not betas or any(beta <= 0 for beta in betas):
        raise GeneralisationError(f"bank normalisation needs strengths > 0, got {list(betas)}")
    t = time.perf_counter()
    bank = bank_texts(rows, bank_size, seed)
    everything = np.arange(len(rows))
    bank_scores = text_image_scores(model, regions, mask, bank, everything, progress).T  # [N_rows, bank]
    normalisers = {beta: bank_normaliser(bank_scores, beta) for beta in betas}
    bank_seconds = time.perf_counter() - t
    row_concepts = concept_numbers(rows)[1]  # the groups concept_queries gives its texts
    checks: dict[str, tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list[str] | None]] = {
        name: (p.gallery, p.texts, p.text_groups, p.gallery_groups, p.text_kinds) for name, p in protocols.items()
    }
    for split, label, limit in (("val", "val", 0), ("train", "seen", check_queries)):
        texts, groups = concept_queries(rows, split, limit, seed)
        if texts:
            checks[label] = (everything, texts, groups, row_concepts, None)
    out: dict[str, Any] = {"bank": {"texts": len(bank), "from": "captions of the train split", "seed": seed,
                                    "seconds": round(bank_seconds, 1)}}
    for name, (gallery, texts, groups, item_groups, kinds) in checks.items():
        scores = text_image_scores(model, regions, mask, texts, gallery, progress)
        for key, offset in [("plain", None), *((f"beta={beta:g}", normalisers[beta]) for beta in betas)]:
            ranked = scores if offset is None else normalised_scores(scores, offset[gallery])
            ranks = group_ranks(ranked, groups, item_groups)
            figures: dict[str, Any] = {"queries": len(texts), "t2i": recalls(ranks)}
            if kinds is not None:
                figures["t2i_by_kind"] = recalls_by_kind(ranks, kinds)
            out.setdefault(key, {})[name] = figures
    return out
