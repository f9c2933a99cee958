"""File discovery for ``pig-engine index``: the video files named by paths and folders."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from pig.errors import PigError

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
    ".wmv", ".flv", ".3gp", ".ogv",
})


def _wanted(path: Path, root: Path, glob: str | None) -> bool:
    if glob is None:
        return path.suffix.lower() in VIDEO_EXTENSIONS
    rel = path.relative_to(root).as_posix()
    return fnmatch.fnmatch(path.name, glob) or fnmatch.fnmatch(rel, glob)


def discover(paths: Iterable[str | os.PathLike[str]], glob: str | None = None,
             on_unreadable: Callable[[str, str], None] | None = None) -> list[Path]:
    """Absolute paths of the files to index, sorted and without duplicates.

    A file named explicitly is always taken (if it is no video, indexing records why). A
    folder is walked recursively (symlinked folders are not followed) for files with a known
    video extension or, when ``glob`` is given, whose name or path relative to the folder
    matches it. A path that does not exist is a user error. A folder that cannot be listed
    (permissions) is skipped and passed, once, to ``on_unreadable(folder, reason)``; without
    that callback it is a user error.
    """
    found: set[Path] = set()
    unreadable: set[str] = set()

    def onerror(err: OSError) -> None:  # os.walk's errors come from os.scandir: filename is set
        folder, reason = os.fsdecode(err.filename), f"cannot read the folder ({err.strerror})"
        if on_unreadable is None:
            raise PigError(f"{folder}: {reason}")
        if folder not in unreadable:
            unreadable.add(folder)
            on_unreadable(folder, reason)

    for raw in paths:
        p = Path(raw).absolute()
        if p.is_file():
            found.add(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p, onerror=onerror):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    f = Path(dirpath, name)
                    if not name.startswith(".") and _wanted(f, p, glob) and f.is_file():
                        found.add(f)
        elif p.exists():
            raise PigError(f"{p}: neither a file nor a folder")
        else:
            raise PigError(f"{p}: no such file or folder")
    return sorted(found)
