"""Feature store: region (or word) embeddings by id for the exact rerank, in memory-mapped Arrow shards.

The format on disk, its crash safety and what a reader may assume: docs/feature-store.md.
"""

from teran_es.store.codec import DTYPES
from teran_es.store.errors import StoreError, StoreMismatchError, StoreNotFoundError, StoreNotWritableError
from teran_es.store.store import AddResult, FeatureStore

__all__ = [
    "DTYPES",
    "AddResult",
    "FeatureStore",
    "StoreError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreNotWritableError",
]
