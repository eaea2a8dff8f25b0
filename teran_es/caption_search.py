"""Search by image: the captions of the collection that align best with an image, by exact
TERAN alignment (the image-to-text direction of the paper's retrieval).

The captions are encoded once (the text model's word vectors, fp16) and kept in a
:class:`CaptionBank` next to the work directory's other artifacts; a query scans every
caption with the model's score: MrSw straight from the concatenated words, other scores in
padded batches. The scan costs one multiply-add per (caption word, image region, dimension):
on the OpenMoji collection (13,932 captions, 83,714 words, a 43 MB bank) 0.14 to 0.23 s per
image on a busy 2-core CPU. Time and bank grow linearly with the captions' words (about
6 x 256 x 2 bytes, 3 kB, a caption here), so past about 100,000 captions (a second per query,
300 MB) a first stage over the captions would be needed, as the text-to-image direction has one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from teran_es.errors import TeranError
from teran_es.model.alignment import pairwise_scores

CAPTIONS_FILE = "captions.npz"


class CaptionBankError(TeranError):
    """The collection has no captions to search, or the saved bank belongs to another model."""


@dataclass(frozen=True)
class CaptionHit:
    image_id: str
    caption: str
    score: float


def pad_segments(
    flat: np.ndarray, offsets: np.ndarray, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments ``start..stop`` of concatenated word vectors as one padded batch.

    flat: [total_words, D]; offsets: int [N + 1], segment i = flat[offsets[i]:offsets[i+1]].
    Returns (words float32 [stop - start, Wmax, D] zero-padded, mask bool [stop - start, Wmax]).
    """
    lengths = np.diff(offsets[start : stop + 1])
    width = int(lengths.max()) if len(lengths) else 0
    words = np.zeros((stop - start, width, flat.shape[1]), dtype=np.float32)
    mask = np.zeros((stop - start, width), dtype=bool)
    for row, (begin, length) in enumerate(zip(offsets[start:stop], lengths, strict=True)):
        words[row, :length] = flat[begin : begin + length]
        mask[row, :length] = True
    return torch.from_numpy(words), torch.from_numpy(mask)


def segment_ids(offsets: np.ndarray) -> torch.Tensor:
    """int64 [offsets[-1]]: the segment each word belongs to (offsets: int [N + 1])."""
    return torch.repeat_interleave(torch.arange(len(offsets) - 1), torch.from_numpy(np.diff(offsets)))


def max_region_sums(
    flat: np.ndarray,
    offsets: np.ndarray,
    regions: torch.Tensor,
    chunk: int = 16384,
    segments: torch.Tensor | None = None,
) -> torch.Tensor:
    """MrSw of one image against every segment, without padding: for each segment i,
    the sum over its words of the max over the regions of <word, region>.

    flat: [total_words, D] (any float dtype); offsets: int [N + 1] with offsets[0] = 0 and
    offsets[-1] = total_words; regions: float [R, D], the valid regions only (R >= 1).
    ``segments``: ``segment_ids(offsets)``, when the caller keeps it. Returns float32 [N]; an
    empty segment scores 0.
    """
    regions = regions.float()
    best = torch.empty(flat.shape[0], dtype=torch.float32)
    for start in range(0, flat.shape[0], chunk):
        words = torch.from_numpy(np.ascontiguousarray(flat[start : start + chunk], dtype=np.float32))
        best[start : start + len(words)] = (words @ regions.T).max(dim=1).values
    sums = torch.zeros(len(offsets) - 1, dtype=torch.float32)
    return sums.index_add_(0, segment_ids(offsets) if segments is None else segments, best)


def top_captions(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` best of ``scores`` [N]: score descending, then index ascending."""
    values = scores.tolist()
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


@dataclass
class CaptionBank:
    """Every caption of a collection with its word vectors.

    image_ids, captions: N each; words: float16 [total_words, D]; offsets: int64 [N + 1].
    """

    image_ids: list[str]
    captions: list[str]
    words: np.ndarray
    offsets: np.ndarray
    model_fingerprint: str
    _segments: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.captions)

    @classmethod
    def build(
        cls,
        model,
        pairs: Sequence[tuple[str, str]],
        model_fingerprint: str,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
        guard: Callable[[], AbstractContextManager] = nullcontext,
    ) -> CaptionBank:
        """Encode every (image id, caption) with ``model``'s text side (its own device); each
        batch is encoded inside ``guard()`` (a server passes the lock its searches hold)."""
        if not pairs:
            raise CaptionBankError(
                "the collection has no captions to search by image (data.path names no captioned collection)"
            )
        chunks: list[np.ndarray] = []
        lengths: list[int] = []
        with torch.inference_mode():
            for start in range(0, len(pairs), batch_size):
                texts = [caption for _, caption in pairs[start : start + batch_size]]
                with guard():
                    out = model.encode_sentences(texts)
                    words, mask = out.words.float().cpu().numpy(), out.mask.cpu().numpy()
                for row in range(len(texts)):
                    chunks.append(words[row][mask[row]].astype(np.float16))
                    lengths.append(int(mask[row].sum()))
                if progress is not None:
                    progress(len(texts))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(chunks) if chunks else np.zeros((0, model.config.embed_dim), np.float16)
        return cls([i for i, _ in pairs], [c for _, c in pairs], flat, offsets, model_fingerprint)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(
            partial,
            image_ids=np.array(self.image_ids, dtype=object),
            captions=np.array(self.captions, dtype=object),
            words=self.words,
            offsets=self.offsets,
            model_fingerprint=np.array(self.model_fingerprint),
        )
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, model_fingerprint: str) -> CaptionBank:
        with np.load(path, allow_pickle=True) as saved:
            found = str(saved["model_fingerprint"])
            if found != model_fingerprint:
                raise CaptionBankError(
                    f"{path} holds captions encoded by model {found[:12]}, not {model_fingerprint[:12]}: "
                    "delete it and it is rebuilt"
                )
            return cls(
                [str(i) for i in saved["image_ids"]],
                [str(c) for c in saved["captions"]],
                saved["words"],
                saved["offsets"],
                found,
            )

    def scan(
        self,
        regions: torch.Tensor,
        region_mask: torch.Tensor,
        k: int,
        kind: str = "MrSw",
        padding: str = "masked",
        batch_size: int = 2048,
    ) -> tuple[list[CaptionHit], float]:
        """The ``k`` captions best aligned with one image (regions [1, R, D], mask [1, R]),
        and the seconds the scan took."""
        started = time.perf_counter()
        valid = region_mask[0].cpu()
        if kind == "MrSw" and padding == "masked" and bool(valid.any()):
            # the paper's score, straight from the concatenated words (no padded batches)
            if self._segments is None:
                self._segments = segment_ids(self.offsets)
            all_scores = max_region_sums(self.words, self.offsets, regions[0].cpu()[valid], segments=self._segments)
            best = top_captions(all_scores, k)
            hits = [CaptionHit(self.image_ids[i], self.captions[i], float(all_scores[i])) for i in best]
            return hits, time.perf_counter() - started
        scores = []
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            words, mask = pad_segments(self.words, self.offsets, start, stop)
            scores.append(pairwise_scores(regions.float().cpu(), region_mask.cpu(), words, mask, kind, padding)[0])
        all_scores = torch.cat(scores) if scores else torch.zeros(0)
        best = top_captions(all_scores, k)
        hits = [CaptionHit(self.image_ids[i], self.captions[i], float(all_scores[i])) for i in best]
        return hits, time.perf_counter() - started
