"""Recall@K of the search pipeline itself: surrogate-text recall from an index, then the exact
rerank, against the exhaustive exact scan, on one split.

The split's images are ingested into a backend (embedded or Elasticsearch) in a work
directory of their own; every caption of the split then queries them, as a user would,
once with the exact scan and once per candidate count. Image retrieval (text -> image) is
the direction the index serves; sentence retrieval goes through the exact scan only (see
:func:`teran_es.evaluation.evaluate_model`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from teran_es.config import PipelineConfig
from teran_es.features.records import ImageCaptionSet
from teran_es.indexer import Ingestor
from teran_es.searcher import Searcher, recall_at

DEFAULT_KS = (1, 5, 10)


def _recalls(ranks: Sequence[int | None], ks: Sequence[int]) -> dict[str, float]:
    """R@K (percent) of the own image's 0-based ranks (None = not returned)."""
    hits = np.array([r if r is not None else np.iinfo(np.int64).max for r in ranks], dtype=np.int64)
    return {f"t2i_r{k}": round(float(100.0 * np.mean(hits < k)), 6) for k in ks}


def evaluate_index_name(workdir: str | Path) -> str:
    """The evaluation's index name, from its work directory's name, made safe for every backend
    (Elasticsearch takes lowercase letters, digits, ``-`` and ``_`` only)."""
    safe = re.sub(r"[^a-z0-9_\-]+", "-", Path(workdir).name.lower()).strip("-_")
    return f"teran-eval-{safe or 'default'}"


def evaluate_search_pipeline(
    model,
    image_set: ImageCaptionSet,
    config: PipelineConfig,
    workdir: str | Path,
    candidates: Sequence[int] = (100, 1000),
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = False,
    distractors: Iterable[Any] = (),
) -> dict[str, Any]:
    """Image retrieval R@K of the exact scan and of recall + rerank at each candidate count.

    ``distractors``: more images (records) ingested with the split's, so that its captions
    search a larger collection (e.g. the whole of it); ids already in the split are ignored.

    ``config`` gives the quantizer, index backend and search settings; its work directory
    and index name are replaced (``workdir``; the index is named after it) so that nothing
    of another collection is touched. Returns ``{"ingest": {...}, "exact": {...},
    "candidates": {K: {t2i_r1.., "fidelity_at_10", latency percentiles}}}``, with
    ``fidelity_at_10`` the mean overlap of the pipeline's top 10 with the exact top 10.
    """
    config = dataclasses.replace(
        config,
        workdir=str(workdir),
        index=dataclasses.replace(config.index, name=evaluate_index_name(workdir), path=""),
    )
    top = max(ks)
    t = time.perf_counter()
    with Ingestor(config, model=model) as ingestor:
        own = set(image_set.image_ids)
        images = itertools.chain(
            (image_set.load(i) for i in range(len(image_set))),
            (r for r in distractors if r.image_id not in own),
        )
        report = ingestor.ingest(images, batch_size=128)
    ingest = {
        "seconds": round(time.perf_counter() - t, 3),
        "images": report.total_in_store,
        "documents": report.total_in_index,
        "skipped_bad": report.skipped_bad,
        "backend": config.index.backend,
    }
    captions, owners = image_set.caption_index()
    targets = [image_set.image_ids[int(i)] for i in owners]
    searcher = Searcher.open(config, model=model)
    try:
        exact_lists, exact_ms = [], []
        for text in tqdm(captions, desc="exact scan", disable=not progress, leave=False):
            result = searcher.search(text, k=top, exact=True)
            exact_lists.append([h.id for h in result.hits])
            exact_ms.append(1000 * sum(result.timings.values()))
        out: dict[str, Any] = {
            "ingest": ingest,
            "queries": len(captions),
            "exact": {**_recalls(_ranks(exact_lists, targets), ks), "ms_p50": _percentile(exact_ms, 50)},
            "candidates": {},
        }
        for n in candidates:
            lists, recall_ms, rerank_ms, fidelity = [], [], [], []
            for text, exact in tqdm(
                list(zip(captions, exact_lists, strict=True)), desc=f"recall {n} + rerank", disable=not progress, leave=False
            ):
                result = searcher.search(text, k=top, candidates=n)
                ids = [h.id for h in result.hits]
                lists.append(ids)
                fidelity.append(recall_at(ids, exact))
                recall_ms.append(1000 * result.timings.get("recall", 0.0))
                rerank_ms.append(1000 * result.timings.get("rerank", 0.0))
            out["candidates"][n] = {
                **_recalls(_ranks(lists, targets), ks),
                f"fidelity_at_{top}": round(statistics.fmean(fidelity), 4),
                "recall_ms_p50": _percentile(recall_ms, 50),
                "rerank_ms_p50": _percentile(rerank_ms, 50),
            }
    finally:
        searcher.close()
    return out


def _ranks(lists: list[list[str]], targets: list[str]) -> list[int | None]:
    return [ids.index(target) if target in ids else None for ids, target in zip(lists, targets, strict=True)]


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3) if values else float("nan")
