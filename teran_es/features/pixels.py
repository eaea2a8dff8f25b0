"""Images as pixels: records of image files, the reader of image folders, and stacking into
batches for a model with an image front end (built collections: ``image_table.py``). I/O only.

An :class:`ImageFile` names an image by its file; its pixels are decoded when first needed
(or up front, for training sets held in memory). A file that does not decode raises
:class:`~teran_es.features.images.ImageDecodeError` from :meth:`ImageFile.load_pixels`, so an
ingest can log it and go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from teran_es.features.images import ImageDecodeError, image_id_for, iter_image_files, load_image
from teran_es.features.records import ImageCaptionSet, RecordError, check_on_error

log = logging.getLogger(__name__)


@dataclass
class ImageFile:
    """One image known by its file. ``pixels``: RGB uint8 [S, S, 3] once decoded at size S."""

    image_id: str
    path: str
    captions: list[str] = field(default_factory=list)
    split: str = ""
    pixels: np.ndarray | None = None

    def load_pixels(self, size: int) -> np.ndarray:
        """RGB uint8 [size, size, 3]: the decoded pixels when they have that size, else the file's."""
        if self.pixels is not None and self.pixels.shape == (size, size, 3):
            return self.pixels
        return load_image(self.path, size)

    def decoded(self, size: int) -> ImageFile:
        """This record with its pixels decoded at ``size`` (raises ImageDecodeError)."""
        return ImageFile(self.image_id, self.path, list(self.captions), self.split, self.load_pixels(size))


def stack_pixels(images: Sequence[np.ndarray]) -> np.ndarray:
    """[S, S, 3] uint8 images -> one [B, 3, S, S] uint8 array, as the front end takes them."""
    if not images:
        raise ValueError("no images to stack")
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


def iter_folder_images(folder: str | os.PathLike[str]) -> Iterator[ImageFile]:
    """The image files under ``folder`` (recursively, sorted), ids = paths relative to it."""
    root = Path(folder)
    for path in iter_image_files(root):
        yield ImageFile(image_id=image_id_for(path, root), path=str(path.resolve()))


def image_file_set(
    images: Iterator[ImageFile] | Sequence[ImageFile],
    size: int,
    *,
    name: str = "",
    limit: int = 0,
    on_error: str = "raise",
    captions_per_image: int | None = None,
    keep_pixels: bool = True,
) -> ImageCaptionSet:
    """Decode images (the first ``limit``, 0 = all) at ``size`` and hold them in memory.

    Images without captions are left out (nothing to train or evaluate them on); one that
    does not decode raises :class:`RecordError`, or is logged and skipped (``on_error="skip"``).
    ``keep_pixels=False`` still decodes each image (so a bad one is found here, as above) but
    holds only its file: for a caller that reads each image once more at most, such as a
    pretrained front end's cache, which would otherwise hold every image's pixels at once
    (150 KB a 224 px image).
    """
    check_on_error(on_error)
    held: list[ImageFile] = []
    skipped = 0
    for image in images:
        if not image.captions:
            continue
        try:
            record = image.decoded(size)
            if not keep_pixels:
                record.pixels = None
        except ImageDecodeError as exc:
            if on_error == "raise":
                raise RecordError(exc.path, image.image_id, exc.problem) from None
            skipped += 1
            log.warning("skipping image %s: %s", image.image_id, exc)
            continue
        if captions_per_image:
            record.captions = record.captions[:captions_per_image]
        held.append(record)
        if limit and len(held) >= limit:
            break
    if skipped:
        log.warning("skipped %d image(s) that do not decode", skipped)
    if not held:
        raise RecordError(name or "images", None, "no images with captions")
    return ImageCaptionSet.from_records(held, name=name)
