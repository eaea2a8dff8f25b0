"""Cross-modal retrieval evaluation: Recall@K in both directions, RSUM, COCO 1K/5K protocols.

Directions (the paper's names):

- **image retrieval** (``t2i``): each caption queries all images; a hit at K when its own
  image is among the top K.
- **sentence retrieval** (``i2t``): each image queries all captions; a hit at K when any of
  its captions is among the top K.

Ties are broken deterministically by index: an item ranks above every item with a lower
score and above every item with an *equal* score and a *larger* index, i.e. the order of a
stable sort by descending score. A tie between the target and an earlier item therefore
counts against the target; one with a later item does not.

The metric functions are pure (arrays in, numbers out); :func:`evaluate_model` encodes a
split with a TERAN model and scores it exhaustively with ``chunked_scores``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from teran_es.encoding import encode_image_records
from teran_es.errors import TeranError
from teran_es.features.records import ImageCaptionSet

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
PROTOCOLS = ("1k", "5k", "all")
FOLD_IMAGES = 1000
COCO_5K_IMAGES = 5000
# columns (or rows) compared at once when ranking: bounds the [N, block] temporaries
_RANK_BLOCK = 2048


class EvaluationError(TeranError, ValueError):
    """A split that cannot be scored as asked (a protocol its size does not fit, an image
    without captions)."""


def _as_numpy_scores(scores: np.ndarray | torch.Tensor, caption_to_image: np.ndarray | torch.Tensor):
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().float().cpu().numpy()
    if isinstance(caption_to_image, torch.Tensor):
        caption_to_image = caption_to_image.cpu().numpy()
    scores = np.asarray(scores)
    owners = np.asarray(caption_to_image, dtype=np.int64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N_img, N_cap], got shape {scores.shape}")
    n_images, n_captions = scores.shape
    if owners.shape != (n_captions,):
        raise ValueError(f"caption_to_image must have shape ({n_captions},), got {owners.shape}")
    if n_captions and (owners.min() < 0 or owners.max() >= n_images):
        raise ValueError("caption_to_image holds an image index outside [0, N_img)")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, owners


def image_retrieval_ranks(
    scores: np.ndarray | torch.Tensor, caption_to_image: np.ndarray | torch.Tensor
) -> np.ndarray:
    """0-based rank of each caption's own image when the caption queries all images.

    scores [N_img, N_cap], caption_to_image [N_cap] -> ranks int64 [N_cap] (0 = top).
    """
    scores, owners = _as_numpy_scores(scores, caption_to_image)
    n_images, n_captions = scores.shape
    ranks = np.empty(n_captions, dtype=np.int64)
    image_index = np.arange(n_images)[:, None]
    for start in range(0, n_captions, _RANK_BLOCK):
        block = scores[:, start : start + _RANK_BLOCK]  # [N_img, b]
        target_images = owners[start : start + _RANK_BLOCK]
        target = block[target_images, np.arange(block.shape[1])]  # [b]
        above = (block > target).sum(axis=0)
        tied_before = ((block == target) & (image_index < target_images)).sum(axis=0)
        ranks[start : start + block.shape[1]] = above + tied_before
    return ranks


def sentence_retrieval_ranks(
    scores: np.ndarray | torch.Tensor, caption_to_image: np.ndarray | torch.Tensor
) -> np.ndarray:
    """0-based rank of each image's best-ranked own caption when the image queries all captions.

    scores [N_img, N_cap], caption_to_image [N_cap] -> ranks int64 [N_img] (0 = top).
    Every image needs at least one caption.
    """
    scores, owners = _as_numpy_scores(scores, caption_to_image)
    n_images, n_captions = scores.shape
    if np.bincount(owners, minlength=n_images).min(initial=1) == 0:
        raise EvaluationError("every image needs at least one caption for sentence retrieval")
    ranks = np.empty(n_images, dtype=np.int64)
    caption_index = np.arange(n_captions)[None, :]
    for start in range(0, n_images, _RANK_BLOCK):
        block = scores[start : start + _RANK_BLOCK]  # [b, N_cap]
        own = owners[None, :] == np.arange(start, start + block.shape[0])[:, None]  # [b, N_cap]
        best = np.where(own, block, -np.inf).max(axis=1, keepdims=True)  # [b, 1]
        # the first own caption (lowest index) holding the best score is the one ranked highest
        first_best = np.argmax(own & (block == best), axis=1)[:, None]
        above = (block > best).sum(axis=1)
        tied_before = ((block == best) & (caption_index < first_best)).sum(axis=1)
        ranks[start : start + block.shape[0]] = above + tied_before
    return ranks


def recall_at_k(
    scores: np.ndarray | torch.Tensor,
    caption_to_image: np.ndarray | torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Recall@K (percent) in both directions and their sum.

    scores [N_img, N_cap] (scores[i, c] = score of image i for caption c),
    caption_to_image [N_cap] (index of each caption's image) ->
    ``{"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", ..., "i2t_medr", "t2i_medr", "rsum"}``
    where i2t = sentence retrieval, t2i = image retrieval, medr = median 1-based rank and
    rsum = the sum of all R@K of both directions.
    """
    i2t = sentence_retrieval_ranks(scores, caption_to_image)
    t2i = image_retrieval_ranks(scores, caption_to_image)
    metrics: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            # rounded: a percentage over at most millions of queries needs no more digits
            metrics[f"{name}_r{k}"] = round(float(100.0 * np.mean(ranks < k)), 6) if ranks.size else 0.0
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        metrics[f"{name}_medr"] = float(np.floor(np.median(ranks)) + 1) if ranks.size else 0.0
    metrics["rsum"] = round(float(sum(metrics[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks)), 6)
    return metrics


def chance_recall(
    n_images: int, n_captions: int, captions_per_image: float, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Expected Recall@K (percent) of a random ranking, for reading results against.

    Image retrieval: K / N_img. Sentence retrieval with c own captions among N_cap:
    1 - C(N_cap - c, K) / C(N_cap, K).
    """
    out: dict[str, float] = {}
    c = max(1, round(captions_per_image))
    for k in ks:
        miss = 1.0
        for j in range(min(k, n_captions)):
            miss *= max(0.0, (n_captions - c - j) / (n_captions - j))
        out[f"i2t_r{k}"] = 100.0 * (1.0 - miss)
        out[f"t2i_r{k}"] = 100.0 * min(1.0, k / max(1, n_images))
    out = {key: round(value, 4) for key, value in out.items()}
    out["rsum"] = round(sum(out.values()), 4)
    return out


def protocol_misfit(protocol: str, n_images: int) -> str:
    """Why ``protocol`` cannot rank a split of ``n_images`` images ("" when it can)."""
    if protocol not in PROTOCOLS:
        return f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})"
    if protocol == "5k" and n_images != COCO_5K_IMAGES:
        return f"needs exactly {COCO_5K_IMAGES:,} images; the split has {n_images:,}"
    if protocol == "1k" and (n_images < FOLD_IMAGES or n_images % FOLD_IMAGES):
        return f"needs a multiple of {FOLD_IMAGES:,} images; the split has {n_images:,}"
    return ""


def evaluate_scores(
    scores: np.ndarray | torch.Tensor,
    caption_to_image: np.ndarray | torch.Tensor,
    protocol: str = "all",
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """Metrics of a full score matrix under a protocol.

    ``"all"``: every image and caption at once. ``"5k"``: the same, but the split must
    have exactly 5,000 images (COCO 5K). ``"1k"``: images cut into consecutive folds of
    1,000 (each with its own captions), metrics averaged over the folds (COCO 1K uses 5);
    the number of images must be a multiple of 1,000.
    scores [N_img, N_cap], caption_to_image [N_cap].
    """
    scores, owners = _as_numpy_scores(scores, caption_to_image)
    n_images, n_captions = scores.shape
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if protocol == "5k" and n_images != COCO_5K_IMAGES:
        raise EvaluationError(f"protocol 5k needs exactly {COCO_5K_IMAGES} images, got {n_images} (use 'all')")
    if protocol in ("all", "5k"):
        result: dict[str, Any] = recall_at_k(scores, owners, ks)
        folds = 1
    else:
        if n_images < FOLD_IMAGES or n_images % FOLD_IMAGES:
            raise EvaluationError(f"protocol 1k needs a multiple of {FOLD_IMAGES} images, got {n_images}")
        folds = n_images // FOLD_IMAGES
        per_fold = []
        for fold in range(folds):
            first = fold * FOLD_IMAGES
            captions = np.flatnonzero((owners >= first) & (owners < first + FOLD_IMAGES))
            per_fold.append(
                recall_at_k(scores[first : first + FOLD_IMAGES][:, captions], owners[captions] - first, ks)
            )
        result = {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}
    result.update(protocol=protocol, n_images=n_images, n_captions=n_captions, folds=folds)
    return result


# -- encoding a split with a model --------------------------------------------------------


def _pad_stack(chunks: list[torch.Tensor], length: int) -> torch.Tensor:
    """Concatenate [b, L_i, ...] chunks along 0 after right-padding dim 1 to ``length`` with zeros."""
    padded = []
    for chunk in chunks:
        extra = length - chunk.shape[1]
        if extra:
            pad_shape = (chunk.shape[0], extra, *chunk.shape[2:])
            chunk = torch.cat([chunk, torch.zeros(pad_shape, dtype=chunk.dtype)], dim=1)
        padded.append(chunk)
    return torch.cat(padded, dim=0)


@torch.no_grad()
def encode_image_set(model, image_set: ImageCaptionSet, batch_size: int = 128, progress: bool = False):
    """Region embeddings of every image of the set (region features or pixels), on the CPU.

    Returns (regions [N, R_max, D], region_mask bool [N, R_max]).
    """
    device = model.device
    regions, masks = [], []
    indices = range(len(image_set))
    bar = tqdm(total=len(image_set), desc="encode images", unit="img", disable=not progress, leave=False)
    for start in range(0, len(image_set), batch_size):
        records = [image_set.load(i) for i in indices[start : start + batch_size]]
        out = encode_image_records(model, records, device)
        regions.append(out.regions.float().cpu())
        masks.append(out.mask.cpu())
        bar.update(len(records))
    bar.close()
    width = max(r.shape[1] for r in regions)
    return _pad_stack(regions, width), _pad_stack(masks, width)


@torch.no_grad()
def encode_captions(model, captions: Sequence[str], batch_size: int = 256, progress: bool = False):
    """Word embeddings of every caption, on the CPU.

    Returns (words [M, T_max, D], word_mask bool [M, T_max]); masked positions ([CLS],
    [SEP], padding) never enter a score.
    """
    device = model.device
    words, masks = [], []
    bar = tqdm(total=len(captions), desc="encode captions", unit="cap", disable=not progress, leave=False)
    for start in range(0, len(captions), batch_size):
        chunk = list(captions[start : start + batch_size])
        tokens = model.tokenize(chunk)
        out = model.encode_texts(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        words.append(out.words.float().cpu())
        masks.append(out.mask.cpu())
        bar.update(len(chunk))
    bar.close()
    width = max(w.shape[1] for w in words)
    return _pad_stack(words, width), _pad_stack(masks, width)


@torch.no_grad()
def evaluate_model(
    model,
    image_set: ImageCaptionSet,
    protocol: str = "all",
    *,
    batch_size: int = 128,
    ks: Sequence[int] = DEFAULT_KS,
    max_bytes: int = 512 * 2**20,
    progress: bool = False,
) -> dict[str, Any]:
    """Encode ``image_set`` with ``model`` (on the model's device) and return its metrics.

    The N x M score matrix is computed exhaustively with ``chunked_scores`` on the model's
    device; the result also holds the timing of each stage in seconds.
    """
    scores, caption_to_image, seconds = score_image_set(
        model, image_set, batch_size=batch_size, max_bytes=max_bytes, progress=progress
    )
    started = time.perf_counter()
    metrics = evaluate_scores(scores, caption_to_image, protocol=protocol, ks=ks)
    metrics["seconds"] = {**seconds, "rank": round(time.perf_counter() - started, 3)}
    return metrics


@torch.no_grad()
def score_image_set(
    model,
    image_set: ImageCaptionSet,
    *,
    batch_size: int = 128,
    max_bytes: int = 512 * 2**20,
    progress: bool = False,
) -> tuple[torch.Tensor, np.ndarray, dict[str, float]]:
    """The exhaustive score matrix of a split, for any number of protocols to rank.

    Returns (scores [N_img, N_cap] float32 on the CPU, caption_to_image [N_cap], seconds of
    each stage: encode_images, encode_captions, score).
    """
    from teran_es.model.alignment import chunked_scores

    was_training = model.training
    model.eval()
    try:
        started = time.perf_counter()
        regions, region_mask = encode_image_set(model, image_set, batch_size=batch_size, progress=progress)
        encoded_images = time.perf_counter()
        captions, caption_to_image = image_set.caption_index()
        words, word_mask = encode_captions(model, captions, batch_size=batch_size, progress=progress)
        encoded_captions = time.perf_counter()
        scores = chunked_scores(
            regions,
            region_mask,
            words,
            word_mask,
            kind=model.config.score,
            padding=model.config.padding,
            max_bytes=max_bytes,
            device=model.device,
        )
        scored = time.perf_counter()
    finally:
        model.train(was_training)
    seconds = {
        "encode_images": round(encoded_images - started, 3),
        "encode_captions": round(encoded_captions - encoded_images, 3),
        "score": round(scored - encoded_captions, 3),
    }
    return scores, np.asarray(caption_to_image), seconds
