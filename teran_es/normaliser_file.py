"""The query-bank normalisers of a collection's images, on disk: ``<workdir>/bank_normalisers.parquet``.

One row per image (``id``, ``normaliser``), and in the schema's metadata the fingerprints of
the model and the bank they were computed with. The values are derived data: ingest
recomputes a file that is missing, unreadable or made for another model or bank, so a bad
file costs time, never results. Written whole to a temporary file and renamed over the old
one, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from teran_es.errors import TeranError

NORMALISER_FILE = "bank_normalisers.parquet"
_MODEL_KEY = b"teran_es.model_fingerprint"
_BANK_KEY = b"teran_es.bank_fingerprint"


class NormaliserFileError(TeranError, ValueError):
    """A normaliser file that cannot be read as one."""


@dataclass
class StoredNormalisers:
    """Normalisers by image id, and the model and bank they belong to."""

    model_fingerprint: str
    bank_fingerprint: str
    values: dict[str, float] = field(default_factory=dict)

    def matches(self, model_fingerprint: str, bank_fingerprint: str) -> bool:
        return self.model_fingerprint == model_fingerprint and self.bank_fingerprint == bank_fingerprint


def read_normalisers(path: str | os.PathLike[str]) -> StoredNormalisers | None:
    """The file at ``path``, or None when there is none; raises ``NormaliserFileError`` when it
    is not a normaliser file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise NormaliserFileError(f"{path}: unreadable ({exc})") from None
    meta = table.schema.metadata or {}
    if _MODEL_KEY not in meta or _BANK_KEY not in meta or table.column_names != ["id", "normaliser"]:
        raise NormaliserFileError(f"{path}: not a bank-normaliser file (columns {table.column_names})")
    ids = table.column("id").to_pylist()
    values = table.column("normaliser").to_pylist()
    return StoredNormalisers(meta[_MODEL_KEY].decode(), meta[_BANK_KEY].decode(), dict(zip(ids, values, strict=True)))


def read_fresh_normalisers(path: str | os.PathLike[str], model_fingerprint: str,
                           bank_fingerprint: str) -> tuple[dict[str, float] | None, str]:
    """The values of the file at ``path`` when it was made for this model and bank; otherwise
    None, and why it cannot be used ("" when there is no file)."""
    try:
        saved = read_normalisers(path)
    except NormaliserFileError as exc:
        return None, str(exc)
    if saved is None:
        return None, ""
    if not saved.matches(model_fingerprint, bank_fingerprint):
        return None, f"{path} was made for another model or query bank"
    return saved.values, ""


def write_normalisers(path: str | os.PathLike[str], model_fingerprint: str, bank_fingerprint: str,
                      values: Mapping[str, float]) -> None:
    """Replace the file at ``path`` with ``values`` (atomically)."""
    path = Path(path)
    ids = sorted(values)
    schema = pa.schema([("id", pa.string()), ("normaliser", pa.float64())],
                       metadata={_MODEL_KEY: model_fingerprint.encode(), _BANK_KEY: bank_fingerprint.encode()})
    table = pa.table({"id": ids, "normaliser": [float(values[i]) for i in ids]}, schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
