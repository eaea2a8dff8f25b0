"""Where a pipeline's data is when its path is left empty: the built-in collections in the cache.

Kept apart from the collections themselves, which do not know of each other.
"""

from __future__ import annotations

import dataclasses

from teran_es.collections import emoji_multi, openmoji
from teran_es.config import DataConfig


def with_default_collection(data: DataConfig) -> DataConfig:
    """``data`` itself, or for the ``openmoji`` (``emoji``) format with an empty path a copy
    pointed at the OpenMoji (multi-source emoji) collection in the cache, built or not."""
    if data.path or data.format not in ("openmoji", "emoji"):
        return data
    module = emoji_multi if data.format == "emoji" else openmoji
    return dataclasses.replace(data, path=str(module.default_collection_dir()))
