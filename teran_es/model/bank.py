"""The query bank a checkpoint carries: training captions and the strength of their normaliser.

A model trained on some concepts scores the drawings of those concepts highly against many
texts, so they crowd the top of a query about a concept it never saw. Search can temper
that with one offset per image: its soft maximum over a bank of training captions
(``teran_es.query_bank``). The captions and the strength ``beta`` belong to the model, as
its vocabulary does, so they are stored in its checkpoint directory as ``query_bank.json``::

    {"format_version": 1, "beta": 5.0, "source": "...", "texts": ["...", ...]}

A checkpoint without the file has no bank, and search ranks by the plain alignment score.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from teran_es.errors import TeranError

BANK_FILE = "query_bank.json"
BANK_FORMAT_VERSION = 1
# `teran-es query-bank`'s defaults: the bank the committed model carries (docs/generalisation.md)
DEFAULT_BANK_SIZE = 2000
DEFAULT_BETA = 5.0


class QueryBankError(TeranError, ValueError):
    """A query bank that cannot be used: no texts, a blank or repeated text, a bad strength, a bad file."""


@dataclass(frozen=True)
class QueryBank:
    """Distinct training captions, and ``beta`` > 0, the strength of their log-mean-exp."""

    texts: tuple[str, ...]
    beta: float
    source: str = ""  # where the texts came from, for people (not part of the fingerprint)

    def __post_init__(self) -> None:
        if not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) or self.beta <= 0:
            raise QueryBankError(f"a query bank's beta must be a finite number > 0, got {self.beta!r}")
        if not self.texts:
            raise QueryBankError("a query bank needs at least one text")
        if any(not isinstance(t, str) or not t.strip() for t in self.texts):
            raise QueryBankError("a query bank's texts must be non-blank strings")
        if len(set(self.texts)) != len(self.texts):
            raise QueryBankError("a query bank's texts must be distinct")

    @property
    def fingerprint(self) -> str:
        """sha256 of the texts (in order) and beta: what image normalisers are computed for."""
        payload = json.dumps({"beta": float(self.beta), "texts": list(self.texts)}, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def read_query_bank(directory: str | os.PathLike[str]) -> QueryBank | None:
    """The bank of the checkpoint in ``directory``, or None when it has none."""
    path = Path(directory) / BANK_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QueryBankError(f"{path}: unreadable ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format_version") != BANK_FORMAT_VERSION:
        raise QueryBankError(f"{path}: not a query bank of format version {BANK_FORMAT_VERSION}")
    texts = raw.get("texts")
    if not isinstance(texts, list):
        raise QueryBankError(f"{path}: 'texts' must be a list of captions")
    try:
        return QueryBank(tuple(texts), raw.get("beta"), str(raw.get("source", "")))
    except QueryBankError as exc:
        raise QueryBankError(f"{path}: {exc}") from None


def write_query_bank(directory: str | os.PathLike[str], bank: QueryBank) -> Path:
    """Write ``bank`` into the checkpoint directory (atomically); returns the file's path."""
    path = Path(directory) / BANK_FILE
    payload = {"format_version": BANK_FORMAT_VERSION, "beta": float(bank.beta), "source": bank.source,
               "texts": list(bank.texts)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
