"""Atomic file writes: a temporary file in the target's directory, then a rename.

A reader sees either the old file or the complete new one, never a partial
write; on any failure (including Ctrl-C) the temporary file is removed and the
target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_path(path) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block ends normally it is
    fsynced and renamed over ``path`` (keeping the permissions of a file it replaces)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        try:  # mkstemp's 0600 is too strict for a user's data file
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_atomic(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a binary file that replaces ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            write(fh)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
