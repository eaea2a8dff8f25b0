"""Small records that the TERAN encoders return.

Masks are boolean with ``True`` meaning "a real entry that takes part in the alignment
score"; everything else (padding, [CLS], [SEP], ...) is ``False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageEmbeddings:
    """Region vectors of a batch of images, the image-level token already removed.

    regions: [B, R, D] L2-normalised; mask: bool [B, R]; global_vec: [B, D] (the image-level
    token's output, L2-normalised).
    """

    regions: torch.Tensor
    mask: torch.Tensor
    global_vec: torch.Tensor

    def __len__(self) -> int:
        return self.regions.shape[0]

    def to(self, device: torch.device | str) -> ImageEmbeddings:
        return ImageEmbeddings(self.regions.to(device), self.mask.to(device), self.global_vec.to(device))

    def detach(self) -> ImageEmbeddings:
        return ImageEmbeddings(self.regions.detach(), self.mask.detach(), self.global_vec.detach())


@dataclass
class TextEmbeddings:
    """Word-piece vectors of a batch of sentences, aligned with the token positions.

    words: [B, T, D] L2-normalised (one per input token, [CLS] and [SEP] included);
    mask: bool [B, T], True for the word pieces that enter the score (no [CLS], [SEP],
    padding, nor the last word piece when the model excludes it); global_vec: [B, D]
    (the [CLS] output, L2-normalised).
    """

    words: torch.Tensor
    mask: torch.Tensor
    global_vec: torch.Tensor

    def __len__(self) -> int:
        return self.words.shape[0]

    def to(self, device: torch.device | str) -> TextEmbeddings:
        return TextEmbeddings(self.words.to(device), self.mask.to(device), self.global_vec.to(device))

    def detach(self) -> TextEmbeddings:
        return TextEmbeddings(self.words.detach(), self.mask.detach(), self.global_vec.detach())
