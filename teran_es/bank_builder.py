"""A query bank for a trained model, from the captions it was trained on, written into its
checkpoint (``teran-es query-bank``).

The texts are a seeded sample of the distinct captions of the training split: of the model's
own emoji collection (``data.format = "emoji"``), or of a file of captions, one per line.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from teran_es.errors import ConfigError
from teran_es.generalisation import bank_texts
from teran_es.model.bank import BANK_FILE, DEFAULT_BANK_SIZE, QueryBank, write_query_bank
from teran_es.model.checkpoint import CONFIG_FILE, read_meta


def bank_source(size: int, split: str, collection: str, seed: int) -> str:
    """How a bank sampled from a collection's captions says where its texts came from."""
    return f"{size or 'all'} distinct captions of the {split} split of {collection}, seed {seed}"


def bank_from_rows(rows: list[dict], beta: float, size: int = DEFAULT_BANK_SIZE, seed: int = 0,
                   source: str = "") -> QueryBank:
    """A bank of ``size`` (0 = all) distinct captions of the ``train`` rows of a collection."""
    texts = bank_texts(rows, size, seed)
    if not texts:
        raise ConfigError(f"{source or 'the collection'} has no captions in its train split")
    return QueryBank(tuple(texts), beta, source=source)


def bank_from_lines(lines: Iterable[str], beta: float, size: int = DEFAULT_BANK_SIZE, seed: int = 0,
                    source: str = "") -> QueryBank:
    """A bank of ``size`` (0 = all) of the distinct non-blank ``lines`` (surrounding space dropped)."""
    rows = [{"split": "train", "captions": [line.strip() for line in lines if line.strip()]}]
    return bank_from_rows(rows, beta, size, seed, source)


def emoji_training_bank(checkpoint: str | os.PathLike[str], beta: float, size: int = DEFAULT_BANK_SIZE,
                        seed: int = 0, data_path: str | None = None) -> QueryBank:
    """The bank of a model trained on the multi-source emoji collection: its checkpoint's
    ``data.path`` (or ``data_path``; empty: the collection built in the cache)."""
    from teran_es.collections.defaults import with_default_collection
    from teran_es.collections.emoji_multi import read_rows
    from teran_es.config import load_config

    pipeline = load_config(Path(checkpoint) / CONFIG_FILE)
    if pipeline.data.format != "emoji":
        raise ConfigError(f"{checkpoint} was trained on data.format = {pipeline.data.format!r}, not the emoji "
                          "collection: give its training captions with --captions FILE (one per line)")
    data = dataclasses.replace(pipeline.data, path=data_path if data_path is not None else pipeline.data.path)
    directory = with_default_collection(data).path
    source = bank_source(size, "train", Path(directory).name, seed)
    return bank_from_rows(read_rows(directory), beta, size, seed, source)


def attach_bank(checkpoint: str | os.PathLike[str], bank: QueryBank | None) -> Path:
    """Write ``bank`` into the checkpoint directory, or remove its bank (None); returns the file."""
    read_meta(checkpoint)  # a complete checkpoint, or a clear error
    path = Path(checkpoint) / BANK_FILE
    if bank is None:
        path.unlink(missing_ok=True)
        return path
    return write_query_bank(checkpoint, bank)
