"""Durable file writes and the single-writer lock of an index directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pig.errors import IndexStoreError


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Atomically move a fully written ``tmp`` to ``final``: fsync file, rename, fsync dir."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    publish(tmp, path)


class DirLock:
    """Exclusive, non-blocking ``flock`` on ``<dir>/lock``; released on close or process exit."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise IndexStoreError(
                f"{directory}: index is being written by another process (pid {holder}); "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
