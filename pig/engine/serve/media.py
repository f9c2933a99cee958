"""Which file ``/v1/videos/{id}/media`` sends: only the one the catalog describes.

The file is opened once and everything is checked on that descriptor, which is then what is
sent (a path swapped after the check is never read): a regular file of the catalogued size
whose content has the catalogued digest (a ``touch`` or a copy with the same content is the
same video; an index without digests also needs the catalogued modification time). Hashing a
video on every request would cost its whole read, so the digest is checked once per file
identity ``(device, inode, size, mtime, ctime)`` and remembered: another file put in its place
(a swapped symlink, a copy with the same size and mtime) has another identity and is hashed
again, and refused (410) unless its content is the one indexed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

from pig.engine.host.regular_file import fd_path, open_regular
from pig.engine.index import FileRecord
from pig.engine.index.catalog import file_digest

REMEMBERED = 10_000  # file identities whose digest was checked (least recently used dropped)

Identity = tuple[int, int, int, int, int]


class MediaFiles:
    """Opens catalogued files for sending; see the module docstring. Thread-safe."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._checked: OrderedDict[tuple[str, Identity], None] = OrderedDict()
        self._remembered = remembered
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def open(self, record: FileRecord) -> Iterator[tuple[str, os.stat_result] | None]:
        """``(name, fstat)`` of the file of ``record`` while the context lasts (``name``
        opens the checked descriptor itself), or None if it is missing or not the file that
        was indexed. May hash the file: call it off the event loop."""
        with contextlib.ExitStack() as stack:
            try:
                fd, st = stack.enter_context(open_regular(record.path))
                same = self._is_indexed(record, fd, st)
            except OSError:
                same = False
            if not same:
                yield None
                return
            yield fd_path(fd, record.path), st

    def _is_indexed(self, record: FileRecord, fd: int, st: os.stat_result) -> bool:
        if st.st_size != record.size:
            return False
        if record.digest is None:  # an index made without digests: size and mtime only
            return st.st_mtime_ns == record.mtime_ns
        key = (record.digest, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                               st.st_ctime_ns))
        with self._lock:
            if key in self._checked:
                self._checked.move_to_end(key)
                return True
        if file_digest(fd_path(fd, record.path)) != record.digest:
            return False
        with self._lock:
            self._checked[key] = None
            while len(self._checked) > self._remembered:
                self._checked.popitem(last=False)
        return True
