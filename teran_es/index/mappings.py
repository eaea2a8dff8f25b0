"""Load the versioned Elasticsearch index definitions shipped in ``mappings/`` (pure, no I/O beyond reading).

The repository's top-level ``mappings/`` directory is installed as the package
``teran_es.mappings`` (see setup.cfg), so the files are found with importlib.resources
after a regular (non-editable) install. A plain checkout that was never installed, or an
editable install made before ``mappings/`` became a package, falls back to the directory
next to ``teran_es/``.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

from teran_es.errors import TeranError

IMAGE_INDEX = "image-index"
CURRENT_VERSION = 2


class MappingNotFoundError(TeranError, FileNotFoundError):
    """No definition named ``<name>.v<version>.json`` is shipped with this teran-es."""


def mapping_file_name(name: str, version: int) -> str:
    return f"{name}.v{version}.json"


def _read_text(file_name: str) -> str:
    try:
        resource = importlib.resources.files("teran_es.mappings") / file_name
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parents[2] / "mappings" / file_name
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise MappingNotFoundError(f"mapping {file_name} is not shipped with this installation of teran-es")


@functools.cache
def _load_cached(name: str, version: int) -> dict[str, Any]:
    definition = json.loads(_read_text(mapping_file_name(name, version)))
    for key in ("settings", "mappings"):
        if key not in definition:
            raise ValueError(f"{mapping_file_name(name, version)} has no {key!r} section")
    if definition.get("version") != version:
        raise ValueError(f"{mapping_file_name(name, version)} declares version {definition.get('version')!r}")
    return definition


def load_mapping(name: str = IMAGE_INDEX, version: int = CURRENT_VERSION) -> dict[str, Any]:
    """The index definition: ``{"name", "version", "description", "settings", "mappings"}`` (a fresh copy)."""
    return copy.deepcopy(_load_cached(name, version))
