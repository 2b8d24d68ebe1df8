"""``flock`` helpers shared by the layer cache and the image index.

The CLI and a node agent may use the same image store from different processes, so every
read-modify-write of shared state happens under an ``flock``. Each call opens its own
descriptor, which makes the lock exclude other threads of the same process too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def flock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (created if absent) for the ``with`` block.

    The holder of an exclusive lock may unlink ``path``: a waiter that then gets the lock on the
    unlinked inode notices (the path names another inode, or none) and locks afresh.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)
