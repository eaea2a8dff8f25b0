"""The demo job: a collection, a trained model, an ingest and a few queries, end to end.

Everything is cached under ``<cache>/demo/<collection>``, so a second run only searches.
This module composes the library (no new math): it is what the README's first command runs.
"""

from __future__ import annotations

import hashlib
import html
import importlib.resources
import logging
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import teran_es
from teran_es.config import PipelineConfig, default_cache_dir, load_config
from teran_es.searcher import Searcher, SearchResult
from teran_es.workdir import document_settings

log = logging.getLogger(__name__)

SYNTHETIC_QUERIES = ["a red cat", "a blue car and a green tree", "a white horse", "boat"]
OPENMOJI_QUERIES = ["red heart", "a cat that is laughing", "food", "flag of Italy"]
# the committed checkpoint, models/emoji-lite0-minilm/ (package data): EfficientNet-Lite0 at
# 224 px and MiniLM-L6, trained on three artists' emoji (pipelines/emoji-lite0-tuned.toml)
OPENMOJI_MODEL = "emoji-lite0-minilm"
# pipelines/openmoji.toml (package data): the demo's collection, first stage and search settings;
# the model's own settings come with the checkpoint. Without a committed model the demo trains
# this pipeline's model (a grid CNN on OpenMoji alone: the other artists need npm).
OPENMOJI_PIPELINE = "openmoji.toml"


@dataclass
class DemoResult:
    collection: str
    workdir: str
    images: int
    results: list[SearchResult]
    contact_sheet: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    attribution: str | None = None
    contact_sheet_png: str | None = None

    def to_dict(self) -> dict:
        return {
            "collection": self.collection,
            "workdir": self.workdir,
            "images": self.images,
            "contact_sheet": self.contact_sheet,
            "contact_sheet_png": self.contact_sheet_png,
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
    with Ingestor(config) as ingestor:
        report = ingestor.ingest(ColumnarReader(root / "data", on_error="skip").iter_records("test"))
    timings["ingest"] = time.perf_counter() - t
    say(f"collection: {report.total_in_store} images in the embedded index at {config.resolved_workdir()}")
    searcher = Searcher.open(config)
    try:
        results = [searcher.search(q, k=k) for q in (queries or SYNTHETIC_QUERIES)]
    finally:
        searcher.close()
    return DemoResult("synthetic", str(config.resolved_workdir()), report.total_in_store, results, timings=timings)


def committed_openmoji_checkpoint() -> Path | None:
    """The committed model ``models/emoji-lite0-minilm``, or None when this installation has none.

    Looked for in the source tree teran-es runs from (a checkout or an editable install), then
    as data of the package ``teran_es.models`` (a wheel or any other install). Only read, never
    written: an installed copy may be read-only.
    """
    for directory in _committed_model_candidates(OPENMOJI_MODEL):
        if (directory / "meta.json").is_file() and (directory / "model.safetensors").is_file():
            return directory
    return None


def _committed_model_candidates(name: str) -> list[Path]:
    # The checkout first: a checkout on the path can share the interpreter with an editable
    # install of another checkout, whose package mapping would otherwise win.
    candidates = [Path(teran_es.__file__).resolve().parent.parent / "models" / name]
    try:
        shipped = importlib.resources.files("teran_es.models") / name
    except ModuleNotFoundError:  # a checkout that was never installed
        return candidates
    if isinstance(shipped, Path):  # an unpacked install; a zipped one has no directory to load from
        candidates.append(shipped)
    return candidates


def openmoji_pipeline() -> PipelineConfig:
    """The settings of pipelines/openmoji.toml (model, training, quantizer, search)."""
    resource = importlib.resources.files("teran_es.pipelines") / OPENMOJI_PIPELINE
    with importlib.resources.as_file(resource) as path:
        return load_config(path)


def openmoji_demo_config(root: Path, collection_dir: Path, checkpoint: Path) -> PipelineConfig:
    """The OpenMoji pipeline pointed at the demo's cache; the work directory is named after
    the model's fingerprint and the quantizer settings, so a retrained model or a changed
    quantizer never meets a store or index built for another."""
    from teran_es.model.checkpoint import read_meta

    config = openmoji_pipeline()
    fingerprint = str(read_meta(checkpoint).get("fingerprint", "model"))[:12]
    # Only the settings that shape the documents: query-side ones change at search time.
    shaping = {name: getattr(config.quantizer, name) for name in document_settings(config.quantizer.kind)}
    quantizer = hashlib.sha256(repr(sorted(shaping.items())).encode()).hexdigest()[:8]
    config.name = "demo-openmoji"
    config.workdir = str(root / f"work-{fingerprint}-{quantizer}")
    config.checkpoint = str(checkpoint)
    config.data.path = str(collection_dir)
    config.index.backend = "embedded"
    config.index.name = "demo-openmoji"
    config.train.output_dir = str(root / "train")
    return config


def run_openmoji_demo(
    queries: list[str] | None = None,
    k: int = 5,
    cache_dir: Path | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoResult:
    """Build (once) the OpenMoji collection, take the committed model (or train one, once),
    ingest every image into the embedded index (once), search, and write contact sheets.

    All splits are ingested: the whole collection is what a user searches, and the example
    queries name drawings of every split. The evaluation keeps to the test split.
    """
    from tqdm.auto import tqdm

    from teran_es.collections.openmoji import ATTRIBUTION, build_openmoji, default_collection_dir
    from teran_es.features.image_table import iter_collection_images
    from teran_es.indexer import Ingestor
    from teran_es.training import train

    root = (cache_dir or default_cache_dir()) / "demo" / "openmoji"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if not (default_collection_dir(cache_dir) / "manifest.json").is_file():
        say("OpenMoji collection: rendering ~4,000 drawings, once (about a minute and a half) ...")
    collection_dir = build_openmoji(cache_dir=cache_dir, progress=progress)
    timings["collection"] = time.perf_counter() - t

    t = time.perf_counter()
    checkpoint = committed_openmoji_checkpoint()
    if checkpoint is None:
        checkpoint = root / "train" / "best"
        if not (checkpoint / "meta.json").is_file():
            say(
                f"no committed model ({OPENMOJI_MODEL}) next to this installation: training one on the "
                "train split, once (about 16 minutes on 2 CPU cores) ..."
            )
            training = openmoji_pipeline()
            training.train.output_dir = str(root / "train")
            training.data.path = str(collection_dir)
            train(training, progress=progress)
    say(f"model: {checkpoint}")
    timings["model"] = time.perf_counter() - t

    config = openmoji_demo_config(root, collection_dir, checkpoint)
    t = time.perf_counter()
    images = list(iter_collection_images(collection_dir))
    with (
        Ingestor(config) as ingestor,
        tqdm(total=len(images), desc="ingest", unit="img", disable=not progress) as bar,
    ):
        report = ingestor.ingest(images, batch_size=128, progress=bar)
    timings["ingest"] = time.perf_counter() - t
    say(
        f"collection: {report.total_in_store} OpenMoji images, all splits (the whole collection is what "
        f"you search; evaluation keeps to the test split), in the embedded index at {config.resolved_workdir()}"
    )
    if report.skipped_bad:
        say(f"{report.skipped_bad} images did not decode; see {config.resolved_workdir() / 'skipped.jsonl'}")

    t = time.perf_counter()
    searcher = Searcher.open(config)
    try:
        results = [searcher.search(q, k=k) for q in (queries or OPENMOJI_QUERIES)]
    finally:
        searcher.close()
    timings["search"] = time.perf_counter() - t
    title = "teran-es demo: OpenMoji"
    html_path = write_contact_sheet(results, root / "contact-sheet.html", title, ATTRIBUTION)
    png_path = write_contact_sheet_png(results, root / "contact-sheet.png", title, ATTRIBUTION)
    return DemoResult(
        "openmoji",
        str(config.resolved_workdir()),
        report.total_in_store,
        results,
        contact_sheet=str(html_path),
        timings={name: round(seconds, 3) for name, seconds in timings.items()},
        attribution=ATTRIBUTION,
        contact_sheet_png=str(png_path),
    )


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def write_contact_sheet_png(
    results: list[SearchResult], path: Path, title: str, attribution: str | None, thumb: int = 96
) -> Path:
    """A PNG with one row per query: the query, then its hits as thumbnails with rank,
    score and caption. Hits without a readable image get a grey box."""
    from PIL import Image, ImageDraw

    cell_w, margin = max(thumb + 24, 150), 16
    columns = max([len(r.hits) for r in results] + [1])
    title_h, query_h, caption_h = 34, 26, 44
    row_h = query_h + thumb + caption_h + 8
    # the default bitmap-free font lacks some punctuation (the attribution's en dash)
    foot = textwrap.wrap(attribution.replace("\u2013", "-"), 110) if attribution else []
    width = 2 * margin + columns * cell_w
    height = margin + title_h + len(results) * row_h + 16 * len(foot) + margin
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((margin, margin), title, fill="black", font=_font(20))
    small, medium = _font(11), _font(15)
    y = margin + title_h
    for result in results:
        draw.text((margin, y), f"query: {result.query!r}", fill=(20, 40, 140), font=medium)
        for rank, hit in enumerate(result.hits, 1):
            x = margin + (rank - 1) * cell_w
            top = y + query_h
            box = (x + (cell_w - thumb) // 2, top)
            try:
                with Image.open(hit.path) as image:
                    sheet.paste(image.convert("RGB").resize((thumb, thumb)), box)
            except (OSError, ValueError, TypeError, AttributeError):
                draw.rectangle([box, (box[0] + thumb, box[1] + thumb)], fill=(200, 200, 200))
            draw.rectangle([(box[0] - 1, box[1] - 1), (box[0] + thumb, box[1] + thumb)], outline=(200, 200, 200))
            label = textwrap.shorten(hit.caption or hit.id, 24, placeholder="...")
            draw.text((x + 4, top + thumb + 4), f"{rank}. score {hit.score:.3f}", fill="black", font=small)
            draw.text((x + 4, top + thumb + 19), label, fill=(60, 60, 60), font=small)
        y += row_h
    for line in foot:
        draw.text((margin, y), line, fill=(90, 90, 90), font=small)
        y += 16
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


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
