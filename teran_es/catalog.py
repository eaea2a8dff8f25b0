"""What a collection says about its images: file, captions, split, licence, and attribution.

The index keeps only what a hit shows (a path and the first caption). A page that shows one
image with all its captions, and a search by image over every caption, read the collection
the pipeline was ingested from (``data.path``) instead: a built collection (its table), a
folder of images (no captions), or a feature source (Parquet or bottom-up, whose records
carry captions). I/O only; nothing is written.

Image files are served only from inside the collection's directory: :func:`contained_path`
refuses a path that leaves it (``..``, an absolute path elsewhere, a symlink out).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from teran_es.config import PipelineConfig
from teran_es.errors import TeranError

log = logging.getLogger(__name__)


class UnsafePathError(TeranError, PermissionError):
    """An image path that points outside the collection's directory."""


@dataclass(frozen=True)
class ImageInfo:
    id: str
    path: str | None
    captions: list[str] = field(default_factory=list)
    split: str = ""


@dataclass
class Catalog:
    """The images of one collection by id, its directory (``root``) and its attribution."""

    images: dict[str, ImageInfo]
    root: Path | None
    attribution: str | None = None

    @classmethod
    def open(cls, config: PipelineConfig) -> Catalog:
        """Read the collection at ``config.data.path``; an empty catalog when there is none."""
        from teran_es.collections.defaults import with_default_collection

        data = with_default_collection(config.data) if config.data.format == "openmoji" else config.data
        if not data.path or not Path(data.path).exists():
            log.info("no collection at data.path=%r: image pages show what the index holds", data.path)
            return cls({}, None, None)
        root = Path(data.path).resolve()
        return cls(_read_images(root), root if root.is_dir() else root.parent, read_attribution(root))

    def get(self, image_id: str) -> ImageInfo | None:
        return self.images.get(image_id)

    def captions(self) -> list[tuple[str, str]]:
        """Every (image id, caption) pair, in collection order."""
        return [(info.id, caption) for info in self.images.values() for caption in info.captions]


def _read_images(root: Path) -> dict[str, ImageInfo]:
    from teran_es.features.pixels import ImageFile
    from teran_es.features.sources import iter_source_records

    images: dict[str, ImageInfo] = {}
    for record in iter_source_records(root, on_error="skip"):
        if isinstance(record, ImageFile):
            images[record.image_id] = ImageInfo(record.image_id, record.path, list(record.captions), record.split)
        else:
            images[record.image_id] = ImageInfo(
                record.image_id, record.path or None, list(record.captions), record.split or ""
            )
    return images


def read_attribution(root: Path) -> str | None:
    """The ``attribution`` a built collection's manifest.json records, if any."""
    manifest = (root if root.is_dir() else root.parent) / "manifest.json"
    try:
        value = json.loads(manifest.read_text(encoding="utf-8")).get("attribution")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def contained_path(path: str | os.PathLike[str], root: Path) -> Path:
    """``path`` (relative paths are taken relative to ``root``) with every symlink resolved,
    when it lies inside ``root``; raises UnsafePathError otherwise."""
    base = root.resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise UnsafePathError(f"the image path {str(path)!r} lies outside the collection directory {base}")
    return resolved
