"""Durable file writes: a crash leaves either the old or the new file, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def user_cache_dir(name: str) -> Path:
    """``name`` under the user's cache: ``$PIG_ENGINE_CACHE``, else
    ``$XDG_CACHE_HOME/pig-engine`` (``~/.cache/pig-engine``)."""
    if os.environ.get("PIG_ENGINE_CACHE"):
        return Path(os.environ["PIG_ENGINE_CACHE"]) / name
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pig-engine" / name


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


def umask() -> int:
    """The process's file mode creation mask (read by setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new folder in ``parent`` (for staging) whose mode follows the umask, as ``mkdir``'s
    would (``mkdtemp`` makes 0700: a service account or a Ray worker under another uid could
    not read what is renamed from it)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (temporary file beside it, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())  # as open() would; mkstemp makes 0600
            f.write(data)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """:func:`write_atomic` of ``data`` as indented JSON."""
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def out_of_space(directory: Path, need: int = 1 << 16) -> bool:
    """True when ``directory``'s filesystem has less than ``need`` bytes free for us."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < need


def sqlite_out_of_space(exc: Exception, directory: Path) -> bool:
    """Whether an SQLite error is a full disk: SQLITE_FULL, or an I/O error (e.g. growing the
    WAL index, ``-shm``) while the filesystem is full."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code == 13 or (code == 10 and out_of_space(directory))  # SQLITE_FULL, SQLITE_IOERR
