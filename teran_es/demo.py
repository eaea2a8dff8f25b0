"""The demo job: a collection, a trained model, an ingest and a few queries, end to end.

Everything is cached under ``<cache>/demo/<collection>``, so a second run only searches.
This module composes the library (no new math): it is what the README's first command runs.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from teran_es.config import PipelineConfig, default_cache_dir, load_config
from teran_es.searcher import Searcher, SearchResult

log = logging.getLogger(__name__)

SYNTHETIC_QUERIES = ["a red cat", "a blue car and a green tree", "a white horse", "boat"]


@dataclass
class DemoResult:
    collection: str
    workdir: str
    images: int
    results: list[SearchResult]
    contact_sheet: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    attribution: str | None = None

    def to_dict(self) -> dict:
        return {
            "collection": self.collection,
            "workdir": self.workdir,
            "images": self.images,
            "contact_sheet": self.contact_sheet,
            "timings": self.timings,
            "attribution": self.attribution,
            "results": [r.to_dict() for r in self.results],
        }


def synthetic_demo_config(root: Path) -> PipelineConfig:
    """A tiny TERAN on seeded synthetic data: trains in about half a minute on a CPU."""
    from teran_es.features.synthetic import tiny_model_overrides

    data = root / "data"
    return load_config(
        None,
        [
            "name=demo-synthetic",
            f"workdir={root / 'work'}",
            f"checkpoint={root / 'train' / 'best'}",
            *tiny_model_overrides(data / "text-backbone"),
            "train.epochs=3",
            "train.batch_size=40",
            "train.lr=1e-3",
            "train.lr_backbone=1e-3",
            "train.warmup_iters=20",
            "train.cpu_threads=1",
            "train.val_images=100",
            f"train.output_dir={root / 'train'}",
            f"data.path={data}",
            "quantizer.pooling=sum",
            "quantizer.gamma=16",
            "quantizer.doc_gamma=64",
            "search.candidates=100",
        ],
    )


def run_synthetic_demo(
    queries: list[str] | None = None, k: int = 5, cache_dir: Path | None = None, say: Callable[[str], None] = print
) -> DemoResult:
    """Generate data, train a tiny model (once), ingest the test split, search."""
    from teran_es.features.columnar import ColumnarReader
    from teran_es.features.synthetic import make_synthetic_dataset
    from teran_es.indexer import Ingestor
    from teran_es.training import train

    root = (cache_dir or default_cache_dir()) / "demo" / "synthetic"
    config = synthetic_demo_config(root)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (root / "data" / "synthetic.parquet").exists():
        say("generating a seeded synthetic collection ...")
        make_synthetic_dataset(root / "data", train_images=1000, val_images=100, test_images=500, seed=0)
    timings["collection"] = time.perf_counter() - t
    t = time.perf_counter()
    if not (root / "train" / "best").is_dir():
        say("training a tiny TERAN (about half a minute on a CPU) ...")
        train(config, progress=True)
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    ingestor = Ingestor(config)
    try:
        records = ColumnarReader(root / "data", on_error="skip").iter_records("test")
        report = ingestor.ingest(records)
    finally:
        ingestor.close()
    timings["ingest"] = time.perf_counter() - t
    say(f"collection: {report.total_in_store} images in the embedded index at {config.resolved_workdir()}")
    searcher = Searcher.open(config)
    try:
        results = [searcher.search(q, k=k) for q in (queries or SYNTHETIC_QUERIES)]
    finally:
        searcher.close()
    return DemoResult("synthetic", str(config.resolved_workdir()), report.total_in_store, results, timings=timings)


def write_contact_sheet(results: list[SearchResult], path: Path, title: str, attribution: str | None) -> Path:
    """An HTML page with each query's hits as thumbnails, scores and captions."""
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;width:150px;margin:6px;"
        "vertical-align:top;text-align:center;font-size:12px}img{width:96px;height:96px;border:1px solid #ccc}"
        "h2{margin-top:1.5em}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for result in results:
        parts.append(f"<h2>{html.escape(result.query)}</h2>")
        for rank, hit in enumerate(result.hits, 1):
            img = f"<img src='{html.escape(Path(hit.path).resolve().as_uri())}'>" if hit.path else ""
            parts.append(
                f"<figure>{img}<figcaption>{rank}. {html.escape(hit.caption or hit.id)}"
                f"<br>score {hit.score:.3f}</figcaption></figure>"
            )
    if attribution:
        parts.append(f"<p><small>{html.escape(attribution)}</small></p>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
