"""Durable file replacement: write to a temporary name, fsync, rename over the final name.

A rename within one directory is atomic on POSIX file systems, so a reader (or a process
restarted after a crash) sees either the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


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
