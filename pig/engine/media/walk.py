"""File discovery for ``pig-engine index``: the video files named by paths and folders."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from pig.engine.display import display_path
from pig.engine.host.regular_file import not_regular
from pig.engine.media import sources
from pig.errors import EnvironmentFault, PigError

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
    ".wmv", ".flv", ".3gp", ".ogv",
})


def _wanted(path: Path, root: Path, glob: str | None) -> bool:
    return _wanted_name(path.name, path.relative_to(root).as_posix(), glob)


def _wanted_name(name: str, rel: str, glob: str | None) -> bool:
    """By its ``name`` and its path ``rel`` relative to the walked root."""
    if glob is None:
        return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
    return fnmatch.fnmatch(name, glob) or fnmatch.fnmatch(rel, glob)


def discover_sources(paths: Iterable[str | os.PathLike[str]], glob: str | None = None,
                     on_skip: Callable[[str, str], None] | None = None) -> list[str]:
    """:func:`discover` of the local paths, then the objects at or under the URLs among
    ``paths`` (``s3://bucket/prefix``, ``https://host/video.mp4``; no hidden names)."""
    paths = list(paths)
    local = [p for p in paths if not sources.is_url(p)]
    found = [str(p) for p in discover(local, glob, on_skip)] if local else []
    for url in (os.fspath(p) for p in paths if sources.is_url(p)):
        found += list_objects(url, glob)
    return found


def list_objects(url: str, glob: str | None = None) -> dict[str, sources.SourceStat]:
    """The objects at or under ``url`` that discovery takes, with their stats; a store that
    cannot be listed (network, credentials) is an :class:`EnvironmentFault`."""
    try:
        return sources.listing(url, lambda name, rel: _wanted_name(name, rel, glob) and not any(
            part.startswith(".") for part in rel.split("/")))
    except OSError as exc:
        raise EnvironmentFault(f"{display_path(url)}: cannot list ({exc.strerror})") from None


def wanted(path: str, roots: Iterable[str], glob: str | None = None) -> bool:
    """Whether discovery of ``roots`` (absolute paths or URLs) takes the file or object
    ``path`` by its name: inside one of them, no hidden name on the way, a video extension
    or ``glob``."""
    for root in roots:
        top = root.rstrip("/") + "/"
        if path.startswith(top):
            rel = path[len(top):]
            if not any(part.startswith(".") for part in rel.split("/")):
                return _wanted_name(rel.rsplit("/", 1)[-1], rel, glob)
    return False


def _passed_over(path: Path) -> str | None:
    """Why a wanted name inside a folder is not taken, or None for a regular file."""
    try:
        st = path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return f"broken symlink ({err.strerror})"
        return f"cannot stat ({err.strerror})"
    return None if stat.S_ISREG(st.st_mode) else not_regular(st.st_mode)


def discover(paths: Iterable[str | os.PathLike[str]], glob: str | None = None,
             on_skip: Callable[[str, str], None] | None = None) -> list[Path]:
    """Absolute paths of the files to index, sorted and without duplicates.

    A file named explicitly is always taken (if it is no video, indexing records why). A
    folder is walked recursively (symlinked folders are not followed) for files with a known
    video extension or, when ``glob`` is given, whose name or path relative to the folder
    matches it. A path that does not exist is a user error. What a walk passes over is given,
    once each, to ``on_skip(path, reason)``: a folder that cannot be listed (permissions), and
    a wanted name that is no regular file (FIFO, socket, device, broken symlink) or a symlink
    loop (whatever its name); without the callback, any of them is a user error.
    """
    found: set[Path] = set()
    reported: set[str] = set()

    def skip(path: str, reason: str) -> None:
        if on_skip is None:
            raise PigError(f"{display_path(path)}: {reason}")
        if path not in reported:
            reported.add(path)
            on_skip(path, reason)

    def onerror(err: OSError) -> None:  # os.walk's errors come from os.scandir: filename is set
        skip(os.fsdecode(err.filename), f"cannot read the folder ({err.strerror})")

    for raw in paths:
        p = Path(raw).absolute()
        if p.is_file():
            found.add(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p, onerror=onerror):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue
                    f = Path(dirpath, name)
                    wanted = _wanted(f, p, glob)
                    if not (wanted or f.is_symlink()):
                        continue
                    why = _passed_over(f)
                    if why is None:
                        if wanted:
                            found.add(f)
                    elif wanted or why == "symlink loop":
                        skip(str(f), why)
        elif p.exists():
            raise PigError(f"{display_path(p)}: neither a file nor a folder")
        else:
            raise PigError(f"{display_path(p)}: no such file or folder")
    return sorted(found)
