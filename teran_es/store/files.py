"""Files of the feature store: durable replacement, and the lock of its one writer.

A file is replaced by writing a temporary name, fsyncing it and renaming it over the final
name. A rename within one directory is atomic on POSIX file systems, so a reader (or a process
restarted after a crash) sees either the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from teran_es.store.errors import StoreError, StoreNotFoundError, StoreNotWritableError

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (the entry lives in the directory's data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(final: Path) -> Path:
    """The hidden name ``final`` is written under before it is renamed into place."""
    return final.with_name("." + final.name + TMP_SUFFIX)


def write_atomically(final: Path, write: Callable[[BinaryIO], None]) -> int:
    """Call ``write(fh)`` on a temporary file, then move it over ``final``; returns its size."""
    tmp = temporary_path(final)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(final.parent)
    return size


def take_writer_lock(path: Path) -> int:
    """Hold ``path/.lock`` exclusively (released by the kernel if the process dies); its descriptor."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        raise StoreNotFoundError(f"no feature store directory at {path}") from None
    except OSError as exc:
        raise StoreNotWritableError(
            f"cannot write to feature store directory {path} ({exc.strerror}); "
            "open it with writable=False to read it, or fix its permissions"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"feature store {path} is already open for writing (by this or another process)"
        ) from None
    return fd
