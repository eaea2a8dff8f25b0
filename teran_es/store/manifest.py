"""The feature store's manifest: the one file that says which shards make up the store.

The manifest is the commit point. Shards are written first, each under its final name, and
only then does a new manifest that lists them replace the old one (``files.write_atomically``).
Whatever a crash leaves behind that the manifest does not list is ignored by readers and
removed by the next writer.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from teran_es.store.codec import check_dtype
from teran_es.store.errors import StoreError
from teran_es.store.files import write_atomically

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "teran-es-feature-store"
FORMAT_VERSION = 1
KINDS: tuple[str, ...] = ("regions", "words")


def utc_now() -> str:
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
