"""Records in, model inputs and image embeddings out: one place that knows every kind of image.

An image reaches TERAN as region features (:class:`~teran_es.features.records.ImageRecord`),
as pixels (:class:`~teran_es.features.pixels.ImageFile`, for a model with an image front
end), or as the cached map of a partly fine-tuned front end's frozen trunk
(:class:`~teran_es.features.records.TrunkMapRecord`). Training, evaluation and ingest all
batch images through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from teran_es.errors import ConfigError
from teran_es.features.pixels import ImageFile, stack_pixels
from teran_es.features.records import ImageRecord, TrunkMapRecord, pad_regions

ImageInput = ImageRecord | ImageFile | TrunkMapRecord


def record_kind(records: Sequence[ImageInput]) -> str:
    """"pixels", "trunk" or "regions": how the batch holds its images; mixed batches are refused."""
    kinds = {"pixels" if isinstance(r, ImageFile) else "trunk" if isinstance(r, TrunkMapRecord) else "regions"
             for r in records}
    if len(kinds) > 1:
        raise ValueError(f"a batch mixes images given as {' and '.join(sorted(kinds))}")
    return kinds.pop() if kinds else "regions"


def uses_pixels(records: Sequence[ImageInput]) -> bool:
    """True when the batch holds images as pixels; mixed batches are refused."""
    return record_kind(records) == "pixels"


def frontend_size(model) -> int | None:
    """Pixels per side the model's front end takes; None for a model without one."""
    return model.config.image_size if model.frontend is not None else None


def image_inputs(
    records: Sequence[ImageInput], image_size: int | None = None
) -> dict[str, torch.Tensor]:
    """The keyword inputs of ``TERAN.forward`` for a batch of images (on the CPU):
    ``{"pixels"}`` [B, 3, S, S] uint8 with S = ``image_size``, ``{"trunk_maps"}`` [B, C, h, w]
    as cached, or ``{"features", "boxes", "region_mask"}`` padded."""
    kind = record_kind(records)
    if kind == "trunk":
        return {"trunk_maps": torch.from_numpy(np.stack([r.maps for r in records]))}
    if kind == "pixels":
        if not image_size:
            raise ConfigError(
                "these images come as pixels but the model has no image front end (model.frontend = "
                "'none'): give it region features, or use a model with model.frontend = 'grid-cnn'"
            )
        return {"pixels": torch.from_numpy(stack_pixels([r.load_pixels(image_size) for r in records]))}
    batch = pad_regions(records)
    return {
        "features": torch.from_numpy(batch.features),
        "boxes": torch.from_numpy(batch.boxes),
        "region_mask": torch.from_numpy(batch.mask),
    }


def encode_image_records(model, records: Sequence[ImageInput], device: torch.device | str):
    """ImageEmbeddings of a batch of records, computed on ``device`` (no gradients kept)."""
    inputs = {name: tensor.to(device) for name, tensor in image_inputs(records, frontend_size(model)).items()}
    with torch.inference_mode():
        return model.encode_image_inputs(**inputs)
