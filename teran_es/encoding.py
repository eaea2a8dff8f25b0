"""Records in, model inputs and image embeddings out: one place that knows both kinds of image.

An image reaches TERAN either as region features (:class:`~teran_es.features.records.ImageRecord`)
or as pixels (:class:`~teran_es.features.pixels.ImageFile`, for a model with an image front
end). Training, evaluation and ingest all batch images through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from teran_es.errors import ConfigError
from teran_es.features.pixels import ImageFile, stack_pixels
from teran_es.features.records import ImageRecord, pad_regions


def uses_pixels(records: Sequence[ImageRecord | ImageFile]) -> bool:
    """True when the batch holds images as pixels; mixed batches are refused."""
    kinds = {isinstance(r, ImageFile) for r in records}
    if len(kinds) > 1:
        raise ValueError("a batch mixes images given as pixels with images given as region features")
    return kinds == {True}


def frontend_size(model) -> int | None:
    """Pixels per side the model's front end takes; None for a model without one."""
    return model.config.image_size if model.frontend is not None else None


def image_inputs(
    records: Sequence[ImageRecord | ImageFile], image_size: int | None = None
) -> dict[str, torch.Tensor]:
    """The keyword inputs of ``TERAN.forward`` for a batch of images (on the CPU):
    ``{"pixels"}`` [B, 3, S, S] uint8 with S = ``image_size``, or ``{"features", "boxes",
    "region_mask"}`` padded."""
    if uses_pixels(records):
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


def encode_image_records(model, records: Sequence[ImageRecord | ImageFile], device: torch.device | str):
    """ImageEmbeddings of a batch of records, computed on ``device`` (no gradients kept)."""
    inputs = {name: tensor.to(device) for name, tensor in image_inputs(records, frontend_size(model)).items()}
    with torch.inference_mode():
        if "pixels" in inputs:
            return model.encode_pixels(inputs["pixels"])
        return model.encode_images(inputs["features"], inputs["boxes"], inputs["region_mask"])
