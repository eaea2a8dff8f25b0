"""Errors the feature store raises, each catchable by the built-in category it belongs to."""

from __future__ import annotations

from teran_es.errors import TeranError


class StoreError(TeranError):
    """Something is wrong with a feature store on disk (corrupt, locked, unknown format)."""


class StoreMismatchError(StoreError):
    """The store was built for another model, dimension, dtype or kind than the caller expects."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No feature store at the given path."""


class StoreNotWritableError(StoreError, PermissionError):
    """A write was asked of a store opened read-only, or of a directory that cannot be written."""
