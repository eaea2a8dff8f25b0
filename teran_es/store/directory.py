"""Opening a feature store directory: checks, creation, the writer lock and the manifest.

``FeatureStore.open`` calls :func:`open_directory`, which leaves a directory that is a valid
store (an empty one is committed at once) and hands over its manifest and, for a writer, the
held lock.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from teran_es.store.codec import check_dtype
from teran_es.store.errors import StoreNotFoundError, StoreNotWritableError
from teran_es.store.files import take_writer_lock
from teran_es.store.manifest import (
    KINDS,
    MANIFEST_NAME,
    Manifest,
    check_expectations,
    library_versions,
    new_manifest,
    read_manifest,
    remove_unlisted_files,
    utc_now,
    write_manifest,
)

# List offsets are int32: shard_size * inputs.MAX_REGIONS_PER_ITEM must stay below 2**31.
MAX_SHARD_SIZE = 65536


def open_directory(
    path: Path,
    *,
    create: bool,
    writable: bool,
    dim: int | None,
    dtype: str | None,
    model_fingerprint: str | None,
    kind: str | None,
    shard_size: int | None,
) -> tuple[Manifest, int | None]:
    """The manifest of the store at ``path`` and, when ``writable``, the descriptor of its held lock.

    With ``create`` a missing directory or manifest is made (see ``FeatureStore.open`` for the
    arguments). A writer removes what an interrupted write left behind. On any error the lock
    is released again.
    """
    if create and not writable:
        raise ValueError("create=True needs a writable store (writable=True)")
    if dtype is not None:
        check_dtype(dtype)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown feature store kind {kind!r} (known: {', '.join(KINDS)})")
    if shard_size is not None and not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ValueError(f"shard_size must be between 1 and {MAX_SHARD_SIZE}, got {shard_size}")
    if path.exists() and not path.is_dir():
        raise StoreNotFoundError(f"{path} is a file, not a feature store directory")
    if not path.exists() and not create:
        raise StoreNotFoundError(
            f"no feature store at {path}: the directory does not exist (open with create=True to make one)"
        )

    lock_fd = None
    if writable:
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                raise StoreNotWritableError(
                    f"cannot create feature store directory {path}: {exc.strerror}"
                ) from None
        lock_fd = take_writer_lock(path)
    try:
        try:
            manifest = read_manifest(path)
            is_new = False
        except FileNotFoundError:
            if not create:
                raise StoreNotFoundError(
                    f"no feature store at {path}: {MANIFEST_NAME} is missing (open with create=True to make one)"
                ) from None
            manifest = new_manifest(path, dim, dtype, model_fingerprint, kind, shard_size)
            is_new = True
        if not is_new:
            check_expectations(path, manifest, dim, dtype, model_fingerprint, kind)
            if shard_size is not None:
                manifest.shard_size = shard_size
        if writable:
            remove_unlisted_files(path, manifest)
        if is_new:
            # Written at once so that the directory is a valid, empty store from now on.
            manifest.created = manifest.updated = utc_now()
            manifest.written_by = library_versions()
            write_manifest(path, manifest)
        return manifest, lock_fd
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise

