"""Each image's query-bank normaliser (``query_bank.py``), computed from its region vectors.

Ingest computes the normalisers of every stored image once and keeps them in the work
directory (``normaliser_file.py``); search subtracts them in the exact rerank, and computes
any it lacks (an image stored after the file was written) from the same region vectors.
Either way the value is the same function of the image's stored regions, the model's text
encoding of the bank, and beta.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from teran_es.evaluation import encode_captions
from teran_es.model.alignment import chunked_scores
from teran_es.model.bank import QueryBank
from teran_es.query_bank import bank_normaliser
from teran_es.rerank import RegionSource

log = logging.getLogger(__name__)

# The bank is encoded this many captions at a time whatever the caller's batch size: a
# caption's word vectors move by rounding with the padded length of its batch.
BANK_BATCH = 256


def encode_bank(model, bank: QueryBank) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank's word vectors: (float [B, W, D], bool [B, W]), on the CPU, in the bank's order.

    Captions are encoded shortest first, so that each batch is padded to about its own length
    (a bank's longest caption can be several times its average)."""
    texts = list(bank.texts)
    lengths = [int(n) for n in model.tokenize(texts)["attention_mask"].sum(dim=1)]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    with torch.inference_mode():
        words, mask = encode_captions(model, [texts[i] for i in order], batch_size=BANK_BATCH)
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    return words[back], mask[back]


def image_normalisers(
    model, bank_words: torch.Tensor, bank_mask: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor, beta: float
) -> np.ndarray:
    """Normalisers of N images: regions [N, R, D], mask [N, R] against the encoded bank
    (bank_words [B, W, D], bank_mask [B, W]) -> float64 [N]."""
    kind, padding = model.config.score, model.config.padding
    if padding != "masked":  # padded words count in "reference" padding: score them as given
        scores = chunked_scores(regions, mask, bank_words, bank_mask, kind=kind, padding=padding, device=model.device)
        return bank_normaliser(scores.numpy(), beta)
    # Masked padding takes no part in a score, so each group of captions of about one length is
    # scored with its padding columns cut off: the same scores for a fraction of the work.
    last = torch.where(bank_mask, torch.arange(bank_mask.shape[1]), -1).max(dim=1).values  # [B]
    order = torch.argsort(last, stable=True)
    scores = torch.zeros(regions.shape[0], bank_words.shape[0], dtype=torch.float32)
    for start in range(0, len(order), BANK_BATCH):
        group = order[start : start + BANK_BATCH]
        width = max(1, int(last[group].max()) + 1)
        scores[:, group] = chunked_scores(regions, mask, bank_words[group, :width], bank_mask[group, :width],
                                          kind=kind, padding=padding, device=model.device)
    return bank_normaliser(scores.numpy(), beta)


class BankNormalisers:
    """The normalisers of one collection's images under one model and bank, by image id.

    ``values`` starts from what the work directory holds; ``ensure`` computes the ones it lacks
    from a region source (the bank is encoded on first need).
    """

    def __init__(self, model, bank: QueryBank, values: dict[str, float] | None = None) -> None:
        self.model = model
        self.bank = bank
        self.values: dict[str, float] = dict(values or {})
        self._encoded: tuple[torch.Tensor, torch.Tensor] | None = None

    def encoded_bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._encoded is None:
            self._encoded = encode_bank(self.model, self.bank)
        return self._encoded

    def missing(self, ids: Sequence[str]) -> list[str]:
        return [i for i in dict.fromkeys(ids) if i not in self.values]

    def ensure(self, ids: Sequence[str], source: RegionSource, batch_size: int = 256) -> int:
        """Compute the normalisers of ``ids`` that ``values`` lacks, reading their regions from
        ``source``; returns how many were computed."""
        todo = self.missing(ids)
        if not todo:
            return 0
        words, word_mask = self.encoded_bank()
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            regions, mask = source.get_many(batch, device="cpu")
            values = image_normalisers(self.model, words, word_mask, regions.float(), mask, self.bank.beta)
            self.values.update(zip(batch, values.tolist(), strict=True))
        return len(todo)
