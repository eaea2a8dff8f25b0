"""Ready-made image collections with captions and fixed splits, built into the cache."""

from teran_es.collections.openmoji import (
    ATTRIBUTION,
    OpenMojiRecord,
    build_openmoji,
    default_collection_dir,
    iter_split,
    load_openmoji,
    read_manifest,
)

__all__ = [
    "ATTRIBUTION",
    "OpenMojiRecord",
    "build_openmoji",
    "default_collection_dir",
    "iter_split",
    "load_openmoji",
    "read_manifest",
]
