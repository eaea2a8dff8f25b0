"""The feature store's manifest: the one file that says which shards make up the store.

The manifest is the commit point. Shards are written first, each under its final name, and
only then does a new manifest that lists them replace the old one (``files.write_atomically``).
Whatever a crash leaves behind that the manifest does not list is ignored by readers and
removed by the next writer (:func:`remove_unlisted_files`). This module reads, writes and
checks manifests: against what the caller expects, and against the shard files they list.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import teran_es
from teran_es.config import StoreConfig
from teran_es.store.codec import check_dtype
from teran_es.store.errors import StoreError, StoreMismatchError
from teran_es.store.files import TMP_SUFFIX, write_atomically
from teran_es.store.shard import SHARD_PREFIX, SHARD_SUFFIX, ShardView, open_shard

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "teran-es-feature-store"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("regions", "words")


def utc_now() -> str:
    """The time now in UTC, to the second, as the manifest records it (ISO 8601)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class ShardEntry:
    """One committed shard file: its name, how many images and region vectors it holds, its size."""

    file: str
    images: int
    regions: int
    bytes: int


@dataclass
class Manifest:
    """What ``manifest.json`` holds. ``deleted`` lists ids whose stored rows are tombstoned."""

    dim: int
    dtype: str
    model_fingerprint: str
    kind: str = "regions"
    shard_size: int = 4096
    shards: list[ShardEntry] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    next_shard: int = 0
    generation: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    written_by: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise StoreError(f"{where} is not a teran-es feature store manifest")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{where} has feature store format version {version}; this teran-es reads version "
                f"{FORMAT_VERSION}. Rebuild the store or use a matching teran-es."
            )
        try:
            manifest = cls(
                dim=int(data["dim"]),
                dtype=check_dtype(str(data["dtype"])),
                model_fingerprint=str(data["model_fingerprint"]),
                kind=str(data.get("kind", "regions")),
                shard_size=int(data["shard_size"]),
                shards=[ShardEntry(**entry) for entry in data["shards"]],
                deleted=[str(i) for i in data.get("deleted", [])],
                next_shard=int(data["next_shard"]),
                generation=int(data["generation"]),
                counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
                created=str(data.get("created", "")),
                updated=str(data.get("updated", "")),
                written_by={str(k): str(v) for k, v in data.get("written_by", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{where} is not a valid feature store manifest: {exc!r}") from None
        return manifest


def read_manifest(directory: Path) -> Manifest:
    """Load ``directory/manifest.json``; FileNotFoundError when there is none."""
    path = directory / MANIFEST_NAME
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path} is not valid JSON: {exc}") from None
    return Manifest.from_json(data, path)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace ``directory/manifest.json`` atomically and durably."""
    payload = json.dumps(manifest.to_json(), indent=1).encode("utf-8")
    write_atomically(directory / MANIFEST_NAME, lambda fh: fh.write(payload))


def library_versions() -> dict[str, str]:
    """The versions of the libraries that write a store, for the manifest's ``written_by``."""
    return {"teran_es": teran_es.__version__, "pyarrow": pa.__version__, "numpy": np.__version__}


def new_manifest(
    path: Path,
    dim: int | None,
    dtype: str | None,
    model_fingerprint: str | None,
    kind: str | None,
    shard_size: int | None,
) -> Manifest:
    """The manifest of a new, empty store at ``path``; ValueError when ``dim`` or the fingerprint is missing."""
    if dim is None or dim < 1:
        raise ValueError(f"creating feature store {path} needs dim (a positive int), got {dim!r}")
    if not model_fingerprint:
        raise ValueError(
            f"creating feature store {path} needs model_fingerprint: it records which model made the embeddings"
        )
    defaults = StoreConfig()
    return Manifest(
        dim=int(dim),
        dtype=check_dtype(dtype or defaults.dtype),
        model_fingerprint=model_fingerprint,
        kind=kind or "regions",
        shard_size=shard_size or defaults.shard_size,
    )


def check_expectations(
    path: Path,
    manifest: Manifest,
    dim: int | None,
    dtype: str | None,
    model_fingerprint: str | None,
    kind: str | None,
) -> None:
    """Raise ``StoreMismatchError`` when the store differs from what the caller expects (None: anything)."""
    if model_fingerprint is not None and model_fingerprint != manifest.model_fingerprint:
        raise StoreMismatchError(
            f"feature store {path} was built by another model (fingerprint {manifest.model_fingerprint!r}, "
            f"expected {model_fingerprint!r}); embeddings of different models cannot be compared. "
            f"Rebuild the store with the current model (ingest into a new directory), or load the "
            f"checkpoint whose fingerprint is {manifest.model_fingerprint!r}."
        )
    if dim is not None and dim != manifest.dim:
        raise StoreMismatchError(f"feature store {path} holds {manifest.dim}-dimensional vectors, not {dim}")
    if dtype is not None and dtype != manifest.dtype:
        raise StoreMismatchError(
            f"feature store {path} stores {manifest.dtype}, not {dtype}; a store has one dtype "
            "(write a new store to change it, or leave dtype out to use the store's)"
        )
    if kind is not None and kind != manifest.kind:
        raise StoreMismatchError(f"feature store {path} holds {manifest.kind} embeddings, not {kind}")


def open_listed_shard(directory: Path, entry: ShardEntry, dim: int, dtype: str) -> ShardView:
    """Open a shard the manifest lists, after checking it is the file the manifest recorded."""
    file = directory / entry.file
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise StoreError(
            f"feature store {directory} lists shard {entry.file}, which is missing"
        ) from None
    if size != entry.bytes:
        raise StoreError(
            f"shard {file} has {size} bytes but the manifest recorded {entry.bytes}: it was changed or truncated"
        )
    view = open_shard(file, dim, dtype)
    if len(view.ids) != entry.images or len(view.codes) != entry.regions:
        raise StoreError(f"shard {file} does not hold the images and regions its manifest entry records")
    return view


def remove_unlisted_files(path: Path, manifest: Manifest) -> None:
    """Delete shards the manifest does not list and temporary files: leftovers of a crash."""
    listed = {entry.file for entry in manifest.shards}
    for file in path.iterdir():
        name = file.name
        orphan_shard = name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX) and name not in listed
        temporary = name.startswith(".") and name.endswith(TMP_SUFFIX)
        if orphan_shard or temporary:
            log.warning(
                "feature store %s: removing %s, left by an interrupted write (never committed)", path, name
            )
            file.unlink()
