"""Records shared by the feature readers, the training loop and the evaluation.

One :class:`ImageRecord` is one image: its region features, its boxes (normalised to
[0, 1]) and its captions. Readers yield records; :class:`ImageCaptionSet` gives random
access to one split (ids and captions in memory, features loaded on demand);
:func:`pad_regions` stacks records into padded arrays with a mask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from teran_es.errors import TeranError

log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")


class RecordError(TeranError, ValueError):
    """A feature file or row that is missing, malformed or holds non-finite numbers.

    The message always names the file and, when known, the image id.
    """

    def __init__(self, source: str, image_id: str | None, problem: str) -> None:
        self.source = source
        self.image_id = image_id
        self.problem = problem
        where = f"{source}: image {image_id!r}" if image_id is not None else source
        super().__init__(f"{where}: {problem}")


@dataclass
class ImageRecord:
    """One image: ``features`` [R, F] float32, ``boxes`` [R, 4] float32 in [0, 1] as
    (x1, y1, x2, y2), its captions, and where it came from."""

    image_id: str
    features: np.ndarray
    boxes: np.ndarray
    captions: list[str] = field(default_factory=list)
    split: str = ""
    path: str = ""

    @property
    def n_regions(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])


@dataclass
class TrunkMapRecord:
    """One image as the frozen trunk of a partly fine-tuned pretrained front end leaves it:
    ``maps`` [C, h, w] (fp16 as cached by region_cache.py); the tuned blocks take it from there."""

    image_id: str
    maps: np.ndarray
    captions: list[str] = field(default_factory=list)
    split: str = ""
    path: str = ""


def check_on_error(on_error: str | Callable[[RecordError], None]) -> str | Callable[[RecordError], None]:
    """"raise", "skip", or a callable: skip, and hand it each error (e.g. to count or record it)."""
    if callable(on_error):
        return on_error
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


# Boxes a detector clips to the image may still land a hair outside [0, 1] after the
# division by the image size (pixel centres, off-by-one widths); more than this is a bug.
BOX_TOLERANCE = 0.01


def validate_record(
    record: ImageRecord,
    source: str,
    *,
    feature_dim: int | None = None,
    max_regions: int | None = None,
    captions_per_image: int | None = None,
) -> ImageRecord:
    """Check shapes, finiteness and box ranges; raise :class:`RecordError` naming ``source``.

    Boxes within ``BOX_TOLERANCE`` outside [0, 1] are clipped; ``captions_per_image``
    keeps the first that many captions and rejects images with fewer.
    Returns the (possibly clipped / trimmed) record.
    """
    image_id = record.image_id
    features, boxes = record.features, record.boxes
    if features.ndim != 2:
        raise RecordError(
            source, image_id, f"features must be 2-d [regions, dim], got shape {features.shape}"
        )
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise RecordError(source, image_id, f"features have dim {features.shape[1]}, expected {feature_dim}")
    if features.shape[0] == 0:
        raise RecordError(source, image_id, "no regions")
    if max_regions is not None and features.shape[0] > max_regions:
        raise RecordError(
            source, image_id, f"{features.shape[0]} regions, more than max_regions={max_regions}"
        )
    if boxes.shape != (features.shape[0], 4):
        raise RecordError(
            source, image_id, f"boxes have shape {boxes.shape}, expected ({features.shape[0]}, 4)"
        )
    # Checked as float32, the type they are used in: a float64 of 1e300 becomes Inf there.
    with np.errstate(over="ignore"):
        features = np.asarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise RecordError(source, image_id, "features contain NaN or Inf")
    if not np.isfinite(boxes).all():
        raise RecordError(source, image_id, "boxes contain NaN or Inf")
    if boxes.min() < -BOX_TOLERANCE or boxes.max() > 1.0 + BOX_TOLERANCE:
        raise RecordError(
            source,
            image_id,
            f"boxes outside [0, 1] (min {boxes.min():.4g}, max {boxes.max():.4g}); not normalised?",
        )
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise RecordError(source, image_id, "boxes with x2 < x1 or y2 < y1")
    if captions_per_image:
        if len(record.captions) < captions_per_image:
            raise RecordError(
                source,
                image_id,
                f"{len(record.captions)} captions, fewer than captions_per_image={captions_per_image}",
            )
        record.captions = list(record.captions[:captions_per_image])
    record.features = np.ascontiguousarray(features, dtype=np.float32)
    record.boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32, copy=False)
    return record


def guarded(
    items: Iterable[Callable[[], ImageRecord]], on_error: str, what: str = "record"
) -> Iterator[ImageRecord]:
    """Run each loader; on :class:`RecordError` raise, or log and skip (``on_error="skip"``)."""
    check_on_error(on_error)
    skipped = 0
    for load in items:
        try:
            yield load()
        except RecordError as exc:
            if on_error == "raise":
                raise
            skipped += 1
            log.warning("skipping bad %s: %s", what, exc)
            if callable(on_error):
                on_error(exc)
    if skipped:
        log.warning("skipped %d bad %s(s)", skipped, what)


class ImageCaptionSet:
    """Random access to the images of one split.

    Ids and captions live in memory; ``load(i)`` returns the i-th :class:`ImageRecord`
    (from memory or from disk, depending on how the set was made).
    """

    def __init__(
        self,
        image_ids: Sequence[str],
        captions: Sequence[Sequence[str]],
        loader: Callable[[int], ImageRecord],
        name: str = "",
    ) -> None:
        if len(image_ids) != len(captions):
            raise ValueError("image_ids and captions differ in length")
        self.image_ids = list(image_ids)
        self.captions = [list(c) for c in captions]
        self._loader = loader
        self.name = name

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord], name: str = "") -> ImageCaptionSet:
        """Hold every record in memory."""
        held = list(records)
        return cls([r.image_id for r in held], [r.captions for r in held], held.__getitem__, name=name)

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, index: int) -> ImageRecord:
        return self._loader(index)

    def subset(self, count: int) -> ImageCaptionSet:
        """The first ``count`` images (all of them when ``count`` is 0 or larger than the set)."""
        if count <= 0 or count >= len(self):
            return self
        return ImageCaptionSet(self.image_ids[:count], self.captions[:count], self._loader, name=self.name)

    def caption_index(self) -> tuple[list[str], np.ndarray]:
        """All captions flattened in image order, and ``caption_to_image`` [N_cap] int64."""
        texts: list[str] = []
        owners: list[int] = []
        for image_index, caps in enumerate(self.captions):
            texts.extend(caps)
            owners.extend([image_index] * len(caps))
        return texts, np.asarray(owners, dtype=np.int64)


@dataclass
class RegionBatch:
    """Padded regions of B images: ``features`` [B, R, F], ``boxes`` [B, R, 4],
    ``mask`` bool [B, R] (True = a real region)."""

    features: np.ndarray
    boxes: np.ndarray
    mask: np.ndarray
    image_ids: list[str]


def pad_regions(records: Sequence[ImageRecord], n_regions: int | None = None) -> RegionBatch:
    """Stack records into zero-padded arrays; ``n_regions`` fixes R (default: the largest)."""
    if not records:
        raise ValueError("no records to pad")
    width = max(r.n_regions for r in records) if n_regions is None else n_regions
    dim = records[0].feature_dim
    features = np.zeros((len(records), width, dim), dtype=np.float32)
    boxes = np.zeros((len(records), width, 4), dtype=np.float32)
    mask = np.zeros((len(records), width), dtype=bool)
    for row, record in enumerate(records):
        if record.feature_dim != dim:
            raise ValueError(
                f"image {record.image_id!r} has feature dim {record.feature_dim}, batch has {dim}"
            )
        count = record.n_regions
        if count > width:
            raise ValueError(f"image {record.image_id!r} has {count} regions, more than {width}")
        features[row, :count] = record.features
        boxes[row, :count] = record.boxes
        mask[row, :count] = True
    return RegionBatch(features, boxes, mask, [r.image_id for r in records])
