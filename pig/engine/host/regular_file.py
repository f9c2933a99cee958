"""Reading a file that was a regular file when it was found, and may not be any more.

Between discovery and reading, a path can be replaced by a FIFO (``open`` blocks until a
writer appears) or a character device (``/dev/zero`` never ends). :func:`open_regular` opens
without blocking, checks the descriptor it got (not the path again) and reports the size to
read up to, so nothing hangs and nothing reads without end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def not_regular(mode: int) -> str:
    """Why a file of ``st_mode`` is not read, in words: "a FIFO, not a regular file"."""
    kind = next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")
    return f"{kind}, not a regular file"


class NotRegularFile(OSError):
    """The path is (now) a FIFO, socket, device or folder; ``strerror`` says which."""

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        super().__init__(errno.EINVAL, not_regular(mode), os.fsdecode(path))


@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str]) -> Iterator[tuple[int, os.stat_result]]:
    """``(fd, fstat)`` of ``path`` opened read-only, closed on exit; :class:`NotRegularFile`
    unless it is a regular file. Never blocks on a FIFO, and a device is refused before it
    is opened (opening some devices acts) and again after (it may have been swapped in)."""
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFile(path, before.st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, st.st_mode)
        os.set_blocking(fd, True)
        yield fd, st
    finally:
        os.close(fd)


def read_regular(path: str | os.PathLike[str], chunk: int = 1 << 20) -> Iterator[bytes]:
    """The content of a regular file in ``chunk``-byte pieces, up to the size it had when
    opened (a file still being written does not keep the reader going)."""
    with open_regular(path) as (fd, st):
        left = st.st_size
        while left > 0 and (block := os.read(fd, min(chunk, left))):
            left -= len(block)
            yield block


def fd_path(fd: int, path: str | os.PathLike[str]) -> str:
    """A name that opens the file behind ``fd`` itself (for libraries that take a path, such
    as FFmpeg): ``/proc/self/fd/N`` where the system has it, else ``path``."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else os.fspath(path)
