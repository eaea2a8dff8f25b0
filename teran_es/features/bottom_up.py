"""Reader of the TERAN authors' precomputed bottom-up-attention features.

Layout under one root directory (any part can also be named explicitly)::

    bu_att/<image_id>.npz        key "feat": [36, 2048] float32 region features
    bu_box/<image_id>.npy        [36, 4] boxes in pixels (x1, y1, x2, y2)
    dataset_coco.json            Karpathy's file: images[].sentences[].raw, split, cocoid
    annotations/captions_*.json  COCO annotation files: images (id, width, height, file_name)
                                 and annotations (id, image_id, caption)
    coco_{train,dev,test,restval}_ids.npy   Karpathy split id lists
    image_sizes.json             optional: {"<id>": [width, height]} (e.g. for Flickr30k)
    images/                      optional: the images, to read sizes and paths from

Image sizes (to normalise the boxes) come from the COCO annotation files, from a sizes
JSON (``{"<id>": [width, height]}`` or a COCO-style ``images`` list), or from the image
files themselves (``image_dir``). Captions come from Karpathy's file when given, else
from the COCO annotation files. Splits come from the id lists when present, else from
Karpathy's ``split`` field (``restval`` counts as train).

The id lists of the VSE++ lineage hold COCO *annotation* (caption) ids; lists of image
ids work too: ``id_kind="auto"`` tells them apart by which ids they match.

For Flickr30k, the image id in the feature file names is the image's position in
``dataset_flickr30k.json``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from teran_es.errors import ConfigError
from teran_es.features.records import (
    ImageCaptionSet,
    ImageRecord,
    RecordError,
    check_on_error,
    guarded,
    validate_record,
)

log = logging.getLogger(__name__)

# our split name -> the names in the id-list files (``coco_<name>_ids.npy``); train
# includes restval as in the paper (113,287 training images).
SPLIT_LIST_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "restval"),
    "val": ("dev",),
    "dev": ("dev",),
    "test": ("test",),
    "restval": ("restval",),
}
# our split name -> the values of Karpathy's "split" field
KARPATHY_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train", "restval"),
    "val": ("val",),
    "dev": ("val",),
    "test": ("test",),
    "restval": ("restval",),
}
OPTIONAL_LISTS = {"restval"}
DEFAULT_SIZES_FILE = "image_sizes.json"  # looked for under the root when no sizes file is named
DEFAULT_IMAGE_DIR = "images"  # likewise, the images to read sizes from


def _load_json(path: Path) -> object:
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise RecordError(str(path), None, "file not found") from None
    except json.JSONDecodeError as exc:
        raise RecordError(str(path), None, f"line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise RecordError(str(path), None, f"not valid JSON: {exc}") from None


def _image_key(value: object) -> str:
    """Image ids as strings without leading zeros or a trailing '.0' (ids are integers here)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, np.integer):
        value = int(value)
    return str(value)


class _SizeListUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numbers only: a size list needs no class, so a file that
    names one (which could run code) is refused rather than trusted."""

    def find_class(self, module: str, name: str):  # noqa: D102 - see the class docstring
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a size list holds numbers only")


def read_size_list(path: Path) -> list[tuple[float, float]]:
    """The reference code's ``sizes.pkl``: one (width, height) per image, by position in
    ``dataset_flickr30k.json``. Raises :class:`RecordError` naming the file and the entry."""
    try:
        with path.open("rb") as fh:
            data = _SizeListUnpickler(fh).load()
    except FileNotFoundError:
        raise RecordError(str(path), None, "file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise RecordError(str(path), None, f"not a pickled size list: {exc}") from None
    if not isinstance(data, (list, tuple)):
        raise RecordError(str(path), None, f"expected a list of (width, height), got {type(data).__name__}")
    sizes = []
    for position, entry in enumerate(data):
        try:
            width, height = (float(v) for v in entry)
        except (TypeError, ValueError):
            raise RecordError(str(path), None, f"entry {position}: {entry!r:.80} is not (width, height)") from None
        sizes.append((width, height))
    return sizes


class BottomUpReader:
    """Read ``bu_att``/``bu_box`` feature files with their sizes, captions and splits."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        karpathy_json: str | os.PathLike[str] | None = None,
        coco_annotations: Sequence[str | os.PathLike[str]] | None = None,
        sizes_json: str | os.PathLike[str] | None = None,
        image_dir: str | os.PathLike[str] | None = None,
        id_lists_dir: str | os.PathLike[str] | None = None,
        id_list_pattern: str = "coco_{name}_ids.npy",
        id_kind: str = "auto",
        on_error: str = "raise",
        feature_dim: int | None = None,
        max_regions: int | None = None,
        captions_per_image: int | None = None,
        features_dir: str | os.PathLike[str] | None = None,
        annotations_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a directory")
        # where bu_att/ and bu_box/ are, and where dataset_*.json / captions_*.json are looked for
        features_root = Path(features_dir) if features_dir else self.root
        self.annotations_root = Path(annotations_dir) if annotations_dir else self.root
        if id_kind not in ("auto", "image", "annotation"):
            raise ValueError(f"id_kind must be auto, image or annotation, got {id_kind!r}")
        self.att_dir = features_root / "bu_att"
        self.box_dir = features_root / "bu_box"
        if image_dir is None and (self.root / DEFAULT_IMAGE_DIR).is_dir():
            image_dir = self.root / DEFAULT_IMAGE_DIR
        self.image_dir = Path(image_dir) if image_dir else None
        self.id_lists_dir = Path(id_lists_dir) if id_lists_dir else self.root
        self.id_list_pattern = id_list_pattern
        self.id_kind = id_kind
        self.on_error = check_on_error(on_error)
        self.feature_dim = feature_dim
        self.max_regions = max_regions
        self.captions_per_image = captions_per_image

        self.captions: dict[str, list[str]] = {}
        self.sizes: dict[str, tuple[float, float]] = {}
        self.file_names: dict[str, str] = {}
        self.annotation_owner: dict[str, str] = {}  # COCO annotation id -> image id
        self.karpathy_split: dict[str, str] = {}  # image id -> Karpathy's split field
        self.image_order: list[str] = []

        karpathy = Path(karpathy_json) if karpathy_json else self._discover_one("dataset_*.json")
        annotations = (
            [Path(p) for p in coco_annotations] if coco_annotations is not None else self._discover_coco()
        )
        for path in annotations:
            self._read_coco(path, take_captions=karpathy is None)
        if karpathy is not None:
            self._read_karpathy(karpathy)
        if sizes_json is None and (self.root / DEFAULT_SIZES_FILE).is_file():
            sizes_json = self.root / DEFAULT_SIZES_FILE
        if sizes_json:
            self._read_sizes(Path(sizes_json))
        if not self.captions and not self.sizes:
            raise FileNotFoundError(
                f"{self.root}: no annotations found (expected dataset_*.json or annotations/captions_*.json)"
            )

    # -- catalogue -------------------------------------------------------------------

    def _discover_one(self, pattern: str) -> Path | None:
        found = sorted(self.annotations_root.glob(pattern))
        if len(found) > 1:
            raise RecordError(
                str(self.annotations_root), None, f"several files match {pattern}: {[p.name for p in found]}"
            )
        return found[0] if found else None

    def _discover_coco(self) -> list[Path]:
        return sorted(self.annotations_root.glob("annotations/captions_*.json")) + sorted(
            self.annotations_root.glob("captions_*.json")
        )

    def _read_coco(self, path: Path, take_captions: bool) -> None:
        data = _load_json(path)
        if not isinstance(data, dict) or "images" not in data:
            raise RecordError(str(path), None, "not a COCO annotation file (no 'images' list)")
        for position, image in enumerate(data["images"]):
            try:
                key = _image_key(image["id"])
                self.sizes[key] = (float(image["width"]), float(image["height"]))
            except (KeyError, TypeError, ValueError):
                raise RecordError(
                    str(path), None, f"images[{position}]: entry without id/width/height: {image!r:.200}"
                ) from None
            if "file_name" in image:
                self.file_names[key] = image["file_name"]
            if take_captions and key not in self.captions:
                self.captions[key] = []
                self.image_order.append(key)
        for position, annotation in enumerate(data.get("annotations", [])):
            try:
                owner = _image_key(annotation["image_id"])
                caption = annotation["caption"]
            except (KeyError, TypeError):
                raise RecordError(
                    str(path),
                    None,
                    f"annotations[{position}]: entry without image_id/caption: {annotation!r:.200}",
                ) from None
            if "id" in annotation:
                self.annotation_owner[_image_key(annotation["id"])] = owner
            if take_captions:
                self.captions.setdefault(owner, []).append(str(caption).strip())

    def _read_karpathy(self, path: Path) -> None:
        data = _load_json(path)
        if not isinstance(data, dict) or "images" not in data:
            raise RecordError(str(path), None, "not a Karpathy dataset file (no 'images' list)")
        for position, image in enumerate(data["images"]):
            # COCO feature files are named by the COCO id; Flickr30k's by the position in this file
            key = _image_key(image["cocoid"]) if "cocoid" in image else str(position)
            try:
                self.captions[key] = [str(s["raw"]).strip() for s in image["sentences"]]
            except (KeyError, TypeError):
                raise RecordError(
                    str(path), key, f"images[{position}]: entry without sentences[].raw"
                ) from None
            self.karpathy_split[key] = str(image.get("split", ""))
            if "filename" in image:
                folder = image.get("filepath", "")
                self.file_names.setdefault(
                    key, f"{folder}/{image['filename']}" if folder else image["filename"]
                )
            self.image_order.append(key)

    def _read_sizes(self, path: Path) -> None:
        if path.suffix == ".pkl":  # the reference code's cache: [(width, height)] by position
            for position, size in enumerate(read_size_list(path)):
                self.sizes[str(position)] = size
            return
        data = _load_json(path)
        if isinstance(data, dict) and "images" in data:
            entries = {_image_key(i["id"]): (i["width"], i["height"]) for i in data["images"]}
        elif isinstance(data, dict):
            entries = {_image_key(k): tuple(v) for k, v in data.items()}
        else:
            raise RecordError(
                str(path), None, "sizes JSON must map id -> [width, height] or hold an 'images' list"
            )
        for key, (width, height) in entries.items():
            self.sizes[key] = (float(width), float(height))

    # -- splits ----------------------------------------------------------------------

    def split_ids(self, split: str) -> list[str]:
        """Image ids of ``split`` (train, val/dev, test, restval, or all), in list order."""
        if split == "all":
            return list(dict.fromkeys(self.image_order or sorted(self.sizes)))
        if split not in SPLIT_LIST_NAMES:
            raise ConfigError(f"unknown split {split!r} (known: {', '.join(SPLIT_LIST_NAMES)}, all)")
        lists = [self.id_lists_dir / self.id_list_pattern.format(name=n) for n in SPLIT_LIST_NAMES[split]]
        present = [p for p in lists if p.exists()]
        if present:
            missing = [p for p in lists if not p.exists() and p.name not in self._optional_names()]
            if missing:
                raise RecordError(str(missing[0]), None, f"id list for split {split!r} not found")
            ids: list[str] = []
            for path in present:
                ids.extend(self._resolve_id_list(path))
            return list(dict.fromkeys(ids))
        if self.karpathy_split:
            wanted = KARPATHY_SPLITS[split]
            return [key for key in self.image_order if self.karpathy_split.get(key) in wanted]
        raise RecordError(
            str(lists[0]),
            None,
            f"no id list for split {split!r} and no Karpathy dataset_*.json to take splits from",
        )

    def _optional_names(self) -> set[str]:
        return {self.id_list_pattern.format(name=n) for n in OPTIONAL_LISTS}

    def _resolve_id_list(self, path: Path) -> list[str]:
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RecordError(str(path), None, f"cannot read id list: {exc}") from None
        keys = [_image_key(v) for v in np.asarray(raw).reshape(-1).tolist()]
        known_images = set(self.captions) | set(self.sizes)
        kind = self.id_kind
        if kind == "auto":  # the kind most of the ids match; the others are then named as errors
            annotation_hits = sum(k in self.annotation_owner for k in keys)
            image_hits = sum(k in known_images for k in keys)
            if not keys or annotation_hits == image_hits == 0:
                raise RecordError(
                    str(path), None, "ids match neither the annotation ids nor the image ids of the annotation files"
                )
            kind = "annotation" if annotation_hits >= image_hits else "image"
        known = self.annotation_owner if kind == "annotation" else known_images
        missing = next((i for i, k in enumerate(keys) if k not in known), None)
        if missing is not None:
            raise RecordError(
                str(path), None, f"entry {missing} (id {keys[missing]}): no such {kind} id in the annotation files"
            )
        if kind == "annotation":
            return [self.annotation_owner[k] for k in keys]
        return keys

    # -- records ---------------------------------------------------------------------

    def feature_files(self, image_id: str) -> tuple[Path, Path]:
        return self.att_dir / f"{image_id}.npz", self.box_dir / f"{image_id}.npy"

    def load(self, image_id: str, split: str = "") -> ImageRecord:
        """Read, normalise and validate one image; raise :class:`RecordError` naming the file."""
        att_path, box_path = self.feature_files(image_id)
        try:
            with np.load(att_path, allow_pickle=False) as archive:
                if "feat" not in archive.files:
                    raise RecordError(str(att_path), image_id, f"no 'feat' array (has {archive.files})")
                features = np.asarray(archive["feat"])
        except FileNotFoundError:
            raise RecordError(str(att_path), image_id, "feature file not found") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise RecordError(str(att_path), image_id, f"cannot read feature file: {exc}") from None
        try:
            boxes = np.asarray(np.load(box_path, allow_pickle=False))
        except FileNotFoundError:
            raise RecordError(str(box_path), image_id, "box file not found") from None
        except (OSError, ValueError, EOFError) as exc:
            raise RecordError(str(box_path), image_id, f"cannot read box file: {exc}") from None
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise RecordError(
                str(box_path), image_id, f"boxes have shape {boxes.shape}, expected (regions, 4)"
            )
        if features.ndim != 2 or features.shape[0] != boxes.shape[0]:
            raise RecordError(
                str(att_path),
                image_id,
                f"features have shape {features.shape}, boxes {boxes.shape}: region counts differ",
            )
        width, height = self._size(image_id, box_path)
        normalised = boxes.astype(np.float32) / np.array([width, height, width, height], dtype=np.float32)
        record = ImageRecord(
            image_id=image_id,
            features=features,
            boxes=normalised,
            captions=list(self.captions.get(image_id, [])),
            split=split,
            path=self._image_path(image_id),
        )
        # pixel boxes are checked against the image size through the normalised ones
        return validate_record(
            record,
            str(att_path),
            feature_dim=self.feature_dim,
            max_regions=self.max_regions,
            captions_per_image=self.captions_per_image,
        )

    def _size(self, image_id: str, box_path: Path) -> tuple[float, float]:
        if image_id in self.sizes:
            width, height = self.sizes[image_id]
        elif self.image_dir is not None and image_id in self.file_names:
            from PIL import Image  # only needed when sizes are read from the images

            image_path = self.image_dir / self.file_names[image_id]
            try:
                with Image.open(image_path) as image:
                    width, height = image.size
            except (FileNotFoundError, OSError) as exc:
                raise RecordError(str(image_path), image_id, f"cannot read image size: {exc}") from None
            self.sizes[image_id] = (float(width), float(height))
        else:
            raise RecordError(
                str(box_path), image_id, "image width/height unknown (no annotation, sizes file or image)"
            )
        if width <= 0 or height <= 0:
            raise RecordError(str(box_path), image_id, f"bad image size {width}x{height}")
        return float(width), float(height)

    def _image_path(self, image_id: str) -> str:
        name = self.file_names.get(image_id, "")
        if name and self.image_dir is not None:
            return str(self.image_dir / name)
        return name

    def iter_records(self, split: str) -> Iterator[ImageRecord]:
        """Yield the validated records of ``split`` (bad ones raise or are skipped per ``on_error``)."""
        loaders = (lambda key=key: self.load(key, split) for key in self.split_ids(split))
        return guarded(loaders, self.on_error, what="image")

    def image_set(self, split: str, limit: int = 0) -> ImageCaptionSet:
        """Random access to ``split`` with features read from disk on demand.

        Missing feature files are found up front (a cheap stat per image): they raise, or
        are dropped with a warning under ``on_error="skip"``. Unreadable file contents
        surface when the image is loaded and always raise.
        """
        ids = self.split_ids(split)
        if limit > 0:
            ids = ids[:limit]
        kept: list[str] = []
        for key in ids:
            problem = None
            for path in self.feature_files(key):
                if not path.exists():
                    problem = RecordError(str(path), key, "file not found")
                    break
            if (
                problem is None
                and self.captions_per_image
                and len(self.captions.get(key, [])) < self.captions_per_image
            ):
                problem = RecordError(
                    str(self.root), key, f"fewer than captions_per_image={self.captions_per_image} captions"
                )
            if problem is not None:
                if self.on_error == "raise":
                    raise problem
                log.warning("skipping bad image: %s", problem)
                continue
            kept.append(key)
        if not kept:
            raise RecordError(str(self.root), None, f"no usable images in split {split!r}")
        captions = [self.captions.get(k, [])[: self.captions_per_image or None] for k in kept]
        return ImageCaptionSet(kept, captions, lambda i: self.load(kept[i], split), name=split)
