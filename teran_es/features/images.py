"""Reading image files: decoding with clear errors, and listing a folder of images.

I/O only. A file that does not decode raises :class:`ImageDecodeError` naming it, so an
ingest can log and skip it while the rest goes on.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from teran_es.errors import TeranError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
# Larger images are refused rather than decoded: a decompression bomb would exhaust memory.
MAX_PIXELS = 64_000_000


class ImageDecodeError(TeranError, ValueError):
    """An image file that cannot be used (missing, empty, truncated, not an image, too large)."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def load_image(path: str | os.PathLike[str], size: int | None = None) -> np.ndarray:
    """Decode ``path`` to RGB uint8 [H, W, 3]; transparent parts become white.

    With ``size``, the image is resized to ``size`` x ``size`` (aspect ratio not kept:
    region boxes are normalised to [0, 1] anyway).
    """
    p = Path(path)
    try:
        n_bytes = p.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(p, f"cannot read: {exc.strerror or exc}") from None
    if n_bytes == 0:
        raise ImageDecodeError(p, "empty file (0 bytes)")
    return _decode(p, p, size)


def load_image_bytes(data: bytes, size: int | None = None, name: str = "upload") -> np.ndarray:
    """Decode image bytes held in memory (an upload) like :func:`load_image`; ``name`` labels errors."""
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, size)


def _decode(source: Path | io.BytesIO, label: str | Path, size: int | None) -> np.ndarray:
    """RGB uint8 [H, W, 3] (or [size, size, 3]) of ``source``; every failure an ImageDecodeError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageDecodeError(label, f"{img.width}x{img.height} pixels is more than {MAX_PIXELS:,}")
                img.load()
                rgb = _to_rgb(img)
                if size is not None:
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8).copy()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not an image PIL can decode") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(label, "image too large (decompression bomb guard)") from None
    except OSError as exc:
        if exc.errno is not None:
            # The system refused the read (permissions, a directory, an I/O error): not the image's fault.
            raise ImageDecodeError(label, f"cannot read: {exc.strerror or exc}") from None
        raise ImageDecodeError(label, f"truncated or corrupt image: {exc}") from None
    except (SyntaxError, ValueError) as exc:
        raise ImageDecodeError(label, f"truncated or corrupt image: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def iter_image_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Image files under ``folder`` (recursively, by suffix), in a stable sorted order."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(dirpath) / name


def image_id_for(path: Path, root: Path) -> str:
    """A stable document id: the path relative to the ingested folder, with '/' separators."""
    return path.relative_to(root).as_posix()
