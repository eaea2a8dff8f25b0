"""What a pretrained front end computes of an image that never changes, computed once and cached.

A frozen front end (model.frontend = "efficientnet-lite0", no fine-tuned block) gives an
image the same regions every epoch, so training and evaluation run on them precomputed, as
the paper's models run on detector features. A front end with fine-tuned blocks still has a
frozen trunk (model/pretrained_frontend.py): its map of an image is cached instead, and only
the tuned blocks run each step. One ``.npy`` per image (fp16: regions [R, C], or a trunk map
[C, h, w]) under ``<cache>/region-features/<key>/``; the key covers the frozen weights'
fingerprint, where the computation stops (block and grid, or the trunk's last block) and the
input size, and an image's file name its path, size and modification time: an edited image
or another front end is never served stale.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.config import default_cache_dir
from teran_es.features.pixels import ImageFile, image_file_set, stack_pixels
from teran_es.features.records import ImageCaptionSet, ImageRecord, TrunkMapRecord
from teran_es.model.pretrained_frontend import PretrainedRegions, weights_fingerprint

CACHE_SUBDIR = "region-features"


def frozen_pretrained_frontend(model) -> PretrainedRegions | None:
    """The model's front end when it is pretrained and wholly frozen (its regions can be cached)."""
    frontend = getattr(model, "frontend", None)
    return frontend if isinstance(frontend, PretrainedRegions) and frontend.frozen else None


def tuned_pretrained_frontend(model) -> PretrainedRegions | None:
    """The model's front end when it is pretrained with fine-tuned blocks (its trunk can be cached)."""
    frontend = getattr(model, "frontend", None)
    return frontend if isinstance(frontend, PretrainedRegions) and not frontend.frozen else None


def frontend_key(frontend: PretrainedRegions, image_size: int) -> str:
    """Identity of the regions a frozen front end computes: weights, block, grid, input size."""
    fingerprint = weights_fingerprint(frontend.network_state())[:16]
    return f"{fingerprint}-b{frontend.block}-g{frontend.grid}-s{image_size}"


def trunk_key(frontend: PretrainedRegions, image_size: int) -> str:
    """Identity of a tuned front end's trunk map: the frozen weights, where it stops, input size."""
    fingerprint = weights_fingerprint(frontend.trunk_state())[:16]
    return f"{fingerprint}-trunk{frontend.trunk_blocks}-s{image_size}"


def image_key(path: str) -> str:
    """Identity of an image file: its resolved path, size and modification time."""
    stat = os.stat(path)
    text = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cached_arrays(
    image_set: ImageCaptionSet,
    frontend: PretrainedRegions,
    root: Path,
    image_size: int,
    compute: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    progress: bool,
    what: str,
) -> tuple[list[ImageFile], list[Path]]:
    """The images of ``image_set`` and the cache file of each under ``root``, computing
    (``compute``: pixels [B, 3, S, S] uint8 -> [B, ...], on the front end's device) and writing,
    atomically, those not there yet."""
    images: list[ImageFile] = [image_set.load(i) for i in range(len(image_set))]
    device = next(frontend.parameters()).device
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"{image_key(image.path)}.npy" for image in images]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    with torch.inference_mode(), tqdm(total=len(todo), desc=what, unit="img", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            pixels = torch.from_numpy(stack_pixels([images[i].load_pixels(image_size) for i in chunk])).to(device)
            for i, row in zip(chunk, compute(pixels).to(torch.float16).contiguous().cpu().numpy(), strict=True):
                tmp = paths[i].with_suffix(".tmp.npy")
                np.save(tmp, row)
                tmp.replace(paths[i])
            bar.update(len(chunk))
    return images, paths


def _cache_root(cache_dir: str | os.PathLike[str] | None, key: str) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / CACHE_SUBDIR / key


def cached_region_set(
    model,
    image_set: ImageCaptionSet,
    image_size: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ImageCaptionSet:
    """``image_set`` (of :class:`ImageFile` records) as region-feature records of the model's
    frozen front end, computing only the images not cached yet (on the model's device)."""
    frontend = frozen_pretrained_frontend(model)
    if frontend is None:
        raise ValueError("only a frozen pretrained front end's regions can be cached")
    root = _cache_root(cache_dir, frontend_key(frontend, image_size))
    boxes: list[torch.Tensor] = []  # the grid's boxes, the same for every image of this size

    def regions(pixels: torch.Tensor) -> torch.Tensor:
        features, batch_boxes = frontend(pixels)
        boxes.append(batch_boxes[0])
        return features

    images, paths = _cached_arrays(image_set, frontend, root, image_size, regions, batch_size, progress, "region features")
    if not boxes:  # everything was cached: one blank image gives the boxes
        with torch.inference_mode():
            device = next(frontend.parameters()).device
            regions(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device))
    grid_boxes = boxes[0].float().cpu().numpy()
    records = [
        ImageRecord(
            image_id=image.image_id,
            features=np.load(path).astype(np.float32),
            boxes=grid_boxes.copy(),
            captions=list(image.captions),
            split=image.split,
            path=image.path,
        )
        for image, path in zip(images, paths, strict=True)
    ]
    return ImageCaptionSet.from_records(records, name=image_set.name)


def cached_trunk_set(
    model,
    image_set: ImageCaptionSet,
    image_size: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ImageCaptionSet:
    """``image_set`` (of :class:`ImageFile` records) as :class:`TrunkMapRecord` s of the model's
    partly fine-tuned front end: its frozen trunk's maps (fp16, held in memory), computed only
    for the images not cached yet; the tuned blocks run on them (TERAN.encode_trunk_maps)."""
    frontend = tuned_pretrained_frontend(model)
    if frontend is None:
        raise ValueError("only a pretrained front end with fine-tuned blocks has a trunk to cache")
    root = _cache_root(cache_dir, trunk_key(frontend, image_size))
    images, paths = _cached_arrays(image_set, frontend, root, image_size, frontend.trunk, batch_size, progress, "trunk maps")
    records = [
        TrunkMapRecord(image.image_id, np.load(path), list(image.captions), image.split, image.path)
        for image, path in zip(images, paths, strict=True)
    ]
    return ImageCaptionSet.from_records(records, name=image_set.name)


def cached_frontend_set(model, image_set: ImageCaptionSet, image_size: int, *, progress: bool = True) -> ImageCaptionSet:
    """``image_set`` as the model runs it fastest: a frozen pretrained front end's cached
    regions, a partly tuned one's cached trunk maps, or (any other model) unchanged."""
    if frozen_pretrained_frontend(model) is not None:
        return cached_region_set(model, image_set, image_size, progress=progress)
    if tuned_pretrained_frontend(model) is not None:
        return cached_trunk_set(model, image_set, image_size, progress=progress)
    return image_set


def model_image_set(model, files: list[ImageFile], *, name: str = "", progress: bool = False) -> ImageCaptionSet:
    """``files`` decoded as the model takes them: the cached regions of its frozen pretrained
    front end, the cached trunk maps of a partly tuned one, else the pixels at its input size.
    As ``image_file_set``, files without captions are left out; with a pretrained front end
    each file is decoded to check it but its pixels are not held (the cache reads it again when
    it computes it), so memory holds what is cached, not every image at once."""
    size = model.config.image_size
    cached = frozen_pretrained_frontend(model) is not None or tuned_pretrained_frontend(model) is not None
    return cached_frontend_set(model, image_file_set(files, size, name=name, keep_pixels=not cached), size,
                               progress=progress)
