"""Training batches: every (image, caption) pair of a split, one batch as the model takes it,
and the frozen text backbone's states of every caption, computed once (see training.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.encoding import image_inputs
from teran_es.features import ImageCaptionSet, RecordError
from teran_es.model.text_cache import TextStateCache, tokenize_in_batches

log = logging.getLogger(__name__)


def caption_pairs(image_set: ImageCaptionSet) -> np.ndarray:
    """Every (image index, caption index) of the set: int64 [P, 2]."""
    pairs = [(i, c) for i, caps in enumerate(image_set.captions) for c in range(len(caps))]
    if not pairs:
        raise RecordError(f"split {image_set.name!r}", None, "no captions to train on")
    return np.asarray(pairs, dtype=np.int64)


def group_indices(image_ids: list[str], group_of: dict[str, str]) -> np.ndarray:
    """int64 [N]: a number per image of the set, equal for images of the same group
    (``group_of``: image_id -> group, e.g. its concept); a KeyError names an image without one."""
    numbers: dict[str, int] = {}
    out = np.empty(len(image_ids), dtype=np.int64)
    for i, image_id in enumerate(image_ids):
        try:
            group = group_of[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} has no group") from None
        out[i] = numbers.setdefault(group, len(numbers))
    return out


def collate(
    image_set: ImageCaptionSet,
    pairs: np.ndarray,
    tokenize: Callable[[list[str]], dict],
    image_size: int | None = None,
    text_cache: TextStateCache | None = None,
    positions: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """One training batch from (image, caption) pairs [B, 2]: the images as the model takes
    them (padded regions with their mask, or pixels at ``image_size`` for a model with a
    front end) and tokenized captions (row b of each is a positive pair).

    ``text_cache``: the backbone states of every caption of ``image_set`` in
    :func:`caption_pairs` order, and ``positions`` [B]: where ``pairs`` stand in that order;
    the batch then carries ``text_states`` as well. ``groups`` [N_images] (:func:`group_indices`):
    the batch then carries ``group_index`` [B], the group of each pair's image."""
    images = [image_set.load(int(i)) for i in pairs[:, 0]]
    if text_cache is not None:
        if positions is None or len(positions) != len(pairs):
            raise ValueError("a text cache needs the positions of the pairs in caption_pairs order")
        tokens = text_cache.batch(positions)
    else:
        tokens = tokenize([image_set.captions[int(i)][int(c)] for i, c in pairs])
    batch = {
        **image_inputs(images, image_size),
        **tokens,
        "image_index": torch.as_tensor(pairs[:, 0], dtype=torch.long),
    }
    if groups is not None:
        batch["group_index"] = torch.as_tensor(groups[pairs[:, 0]], dtype=torch.long)
    return batch


def build_text_cache(
    model, image_set: ImageCaptionSet, max_mb: float, device: torch.device, progress: bool
) -> TextStateCache | None:
    """The frozen text backbone's states of every training caption, or None when the backbone
    is trained, the cache is off (``max_mb`` 0) or it would not fit in ``max_mb``."""
    if max_mb <= 0 or not model.text_backbone_frozen:
        return None
    captions = [image_set.captions[int(i)][int(c)] for i, c in caption_pairs(image_set)]
    batches = tokenize_in_batches(captions, model.tokenize)
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    megabytes = tokens * model.textual.backbone.config.hidden_size * 4 / 2**20
    if megabytes > max_mb:
        log.info("text backbone states not cached: %.0f MB > train.text_cache_max_mb = %g", megabytes, max_mb)
        return None
    with tqdm(total=len(captions), desc="text states", unit="caption", disable=not progress) as bar:
        cache = TextStateCache.build(
            batches,
            model.textual.backbone_states,
            pad_id=model.tokenizer.pad_token_id or 0,
            device=device,
            progress=bar.update,
        )
    log.info("cached the frozen text backbone's states of %d captions (%.0f MB)", len(cache), cache.nbytes / 2**20)
    return cache
