"""Region features of a frozen pretrained front end, computed once per image and cached on disk.

A frozen front end (model.frontend = "efficientnet-lite0", no fine-tuned block) gives an
image the same regions every epoch, so training and evaluation run on them precomputed, as
the paper's models run on detector features. One ``.npy`` (fp16 [R, C]) per image under
``<cache>/region-features/<front end key>/``; the front end key covers the weights'
fingerprint, the block, the grid and the input size, and an image's key its file's path,
size and modification time: an edited image or another front end is never served stale.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.config import default_cache_dir
from teran_es.features.pixels import ImageFile, image_file_set, stack_pixels
from teran_es.features.records import ImageCaptionSet, ImageRecord
from teran_es.model.pretrained_frontend import PretrainedRegions, weights_fingerprint

CACHE_SUBDIR = "region-features"


def frozen_pretrained_frontend(model) -> PretrainedRegions | None:
    """The model's front end when it is pretrained and wholly frozen (its regions can be cached)."""
    frontend = getattr(model, "frontend", None)
    return frontend if isinstance(frontend, PretrainedRegions) and frontend.frozen else None


def frontend_key(frontend: PretrainedRegions, image_size: int) -> str:
    """Identity of what the front end computes: weights, block, grid, input size."""
    fingerprint = weights_fingerprint(frontend.network_state())[:16]
    return f"{fingerprint}-b{frontend.block}-g{frontend.grid}-s{image_size}"


def image_key(path: str) -> str:
    """Identity of an image file: its resolved path, size and modification time."""
    stat = os.stat(path)
    text = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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
    root = (Path(cache_dir) if cache_dir else default_cache_dir()) / CACHE_SUBDIR / frontend_key(frontend, image_size)
    root.mkdir(parents=True, exist_ok=True)
    images: list[ImageFile] = [image_set.load(i) for i in range(len(image_set))]
    paths = [root / f"{image_key(image.path)}.npy" for image in images]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    device = next(frontend.parameters()).device
    boxes = None
    with torch.inference_mode(), tqdm(
        total=len(todo), desc="region features", unit="img", disable=not progress or not todo
    ) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            pixels = torch.from_numpy(stack_pixels([images[i].load_pixels(image_size) for i in chunk])).to(device)
            features, boxes = frontend(pixels)
            for i, row in zip(chunk, features.to(torch.float16).cpu().numpy(), strict=True):
                tmp = paths[i].with_suffix(".tmp.npy")
                np.save(tmp, row)
                tmp.replace(paths[i])
            bar.update(len(chunk))
    if boxes is None:
        with torch.inference_mode():
            _, boxes = frontend(torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8, device=device))
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


def model_image_set(model, files: list[ImageFile], *, name: str = "", progress: bool = False) -> ImageCaptionSet:
    """``files`` decoded as the model takes them: the regions of its frozen pretrained front end
    (computed once, cached on disk), else the pixels at its input size. As ``image_file_set``,
    files without captions are left out."""
    size = model.config.image_size
    pixels = image_file_set(files, size, name=name)
    if frozen_pretrained_frontend(model) is not None:
        return cached_region_set(model, pixels, size, progress=progress)
    return pixels
