"""Thumbnails made once and kept in ``<workdir>/thumbnails/<size>/``: PNG, square, white background.

Cache file names are a hash of the image id, so no id can steer a write; the source file
is the caller's to check (``catalog.contained_path``)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

from PIL import Image

from teran_es.features.images import load_image

log = logging.getLogger(__name__)


def thumbnail_png(source: Path, size: int) -> bytes:
    """PNG bytes of ``source`` fitted into ``size`` x ``size`` (aspect kept, centred on white)."""
    pixels = load_image(source)
    image = Image.fromarray(pixels)
    scale = size / max(image.size)  # large images shrink, small drawings are enlarged
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=True)
    return out.getvalue()


class ThumbnailCache:
    def __init__(self, directory: Path):
        self.directory = directory

    def path_for(self, image_id: str, size: int) -> Path:
        return self.directory / str(size) / (hashlib.sha256(image_id.encode()).hexdigest()[:32] + ".png")

    def get(self, image_id: str, source: Path, size: int) -> bytes:
        """The cached thumbnail, or one made now and cached (kept in memory only when the
        work directory is not writable)."""
        cached = self.path_for(image_id, size)
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        data = thumbnail_png(source, size)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
            partial.write_bytes(data)
            partial.replace(cached)
        except OSError as exc:
            log.warning("cannot cache a thumbnail in %s: %s", cached.parent, exc)
        return data
