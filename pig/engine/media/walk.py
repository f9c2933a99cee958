"""File discovery for ``pig-engine index``: the video files named by paths and folders.

A walk takes the files whose extension is in :data:`VIDEO_EXTENSIONS` (every common container
FFmpeg reads), or those matching any of the ``--glob`` patterns (``fnmatch``, OR-ed, with
``{a,b}`` alternatives expanded). The other files are not silently dropped: each is handed to
``on_other`` so the run can count them by extension.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from pig.engine.display import display_path
from pig.engine.host.regular_file import not_regular
from pig.engine.media import sources
from pig.errors import EXIT_VIDEOS_FAILED, EnvironmentFault, PigError

# Containers FFmpeg reads, by the extensions people give them (docs/media.md lists them).
# Left out on purpose, as they are mostly audio: .ogg, .mka, .m4a, .wav (use --glob).
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".mj2", ".f4v",  # ISO/QuickTime family
    ".mkv", ".webm",  # Matroska
    ".avi", ".divx", ".wmv", ".asf",  # AVI, ASF
    ".mpg", ".mpeg", ".mpe", ".m1v", ".m2v", ".vob", ".mod", ".tod",  # MPEG-1/2 PS, ES
    ".ts", ".mts", ".m2ts", ".m2t", ".tp", ".trp",  # MPEG-TS, BDAV/AVCHD
    ".flv", ".ogv", ".ogm", ".mxf", ".dv", ".rm", ".rmvb", ".nut", ".ivf", ".y4m", ".gif",
})
MAX_GLOB_PATTERNS = 256  # patterns after brace expansion
Globs = str | Iterable[str] | None  # --glob: one pattern, several (OR-ed), or none


class NothingToIndex(PigError):
    """The paths hold no file to index: one line, exit 1 (as for videos that failed)."""

    exit_code = EXIT_VIDEOS_FAILED


def by_extension(paths: Iterable[str | os.PathLike[str]]) -> str:
    """``'.txt 3, .jpg 1, (none) 1'``: counts of file extensions, most common first."""
    counts = Counter(Path(p).suffix.lower() or "(none)" for p in paths)
    return ", ".join(f"{ext} {n}" for ext, n in counts.most_common())


def expand_braces(pattern: str) -> list[str]:
    """``'*.{mp4,mov}'`` -> ``['*.mp4', '*.mov']`` (nested groups too); a pattern with
    unbalanced braces is a user error, one line."""
    depth, start = 0, -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            depth += 1
            if depth == 1:
                start = i
        elif ch == "}":
            depth -= 1
            if depth < 0:
                break
            if depth == 0:
                head, body, tail = pattern[:start], pattern[start + 1:i], pattern[i + 1:]
                return [p for alt in _split_top(body)
                        for p in expand_braces(head + alt + tail)]
    if depth:
        raise PigError(f"--glob {pattern!r}: unbalanced braces")
    return [pattern]


def _split_top(body: str) -> list[str]:
    """``body`` split at the commas outside nested braces."""
    parts, depth, cur = [], 0, ""
    for ch in body:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def glob_patterns(glob: Globs) -> tuple[str, ...]:
    """The patterns of ``--glob`` options (one, several or none), braces expanded (at most
    ``MAX_GLOB_PATTERNS``); none: the video extensions decide."""
    out: list[str] = []
    for g in [glob] if isinstance(glob, str) else glob or ():
        out += expand_braces(g)
        if len(out) > MAX_GLOB_PATTERNS:
            raise PigError(f"--glob: more than {MAX_GLOB_PATTERNS} patterns after expanding "
                           "braces")
    return tuple(dict.fromkeys(out))


def _wanted(path: Path, root: Path, globs: tuple[str, ...]) -> bool:
    return _wanted_name(path.name, path.relative_to(root).as_posix(), globs)


def _wanted_name(name: str, rel: str, globs: tuple[str, ...]) -> bool:
    """By its ``name`` and its path ``rel`` relative to the walked root."""
    if not globs:
        return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
    return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in globs)


def discover_sources(paths: Iterable[str | os.PathLike[str]], glob: Globs = None,
                     on_skip: Callable[[str, str], None] | None = None,
                     on_other: Callable[[Path], None] | None = None) -> list[str]:
    """:func:`discover` of the local paths, then the objects at or under the URLs among
    ``paths`` (``s3://bucket/prefix``, ``https://host/video.mp4``; no hidden names)."""
    paths = list(paths)
    local = [p for p in paths if not sources.is_url(p)]
    found = [str(p) for p in discover(local, glob, on_skip, on_other)] if local else []
    for url in (os.fspath(p) for p in paths if sources.is_url(p)):
        found += list_objects(url, glob)
    return found


def list_objects(url: str, glob: Globs = None) -> dict[str, sources.SourceStat]:
    """The objects at or under ``url`` that discovery takes, with their stats; a store that
    cannot be listed (network, credentials) is an :class:`EnvironmentFault`."""
    globs = glob_patterns(glob)
    try:
        return sources.listing(url, lambda name, rel: _wanted_name(name, rel, globs) and not any(
            part.startswith(".") for part in rel.split("/")))
    except OSError as exc:
        raise EnvironmentFault(f"{display_path(url)}: cannot list ({exc.strerror})") from None


def wanted(path: str, roots: Iterable[str], glob: Globs = None) -> bool:
    """Whether discovery of ``roots`` (absolute paths or URLs) takes the file or object
    ``path`` by its name: inside one of them, no hidden name on the way, a video extension
    or ``glob``."""
    for root in roots:
        top = root.rstrip("/") + "/"
        if path.startswith(top):
            rel = path[len(top):]
            if not any(part.startswith(".") for part in rel.split("/")):
                return _wanted_name(rel.rsplit("/", 1)[-1], rel, glob_patterns(glob))
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


def discover(paths: Iterable[str | os.PathLike[str]], glob: Globs = None,
             on_skip: Callable[[str, str], None] | None = None,
             on_other: Callable[[Path], None] | None = None) -> list[Path]:
    """Absolute paths of the files to index, sorted and without duplicates.

    A file named explicitly is always taken (if it is no video, indexing records why). A
    folder is walked recursively (symlinked folders are not followed) for files with a known
    video extension or, when ``glob`` is given (one pattern or several, OR-ed, braces
    expanded), whose name or path relative to the folder matches one. Every other file of a
    walk (hidden ones aside) goes to ``on_other(path)``. A path that does not exist is a user
    error. What a walk passes over is given, once each, to ``on_skip(path, reason)``: a
    folder that cannot be listed (permissions), and a wanted name that is no regular file
    (FIFO, socket, device, broken symlink) or a symlink loop (whatever its name); without
    the callback, any of them is a user error.
    """
    globs = glob_patterns(glob)
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
                    wanted = _wanted(f, p, globs)
                    if not (wanted or f.is_symlink()):
                        if on_other is not None:
                            on_other(f)
                        continue
                    why = _passed_over(f)
                    if why is None:
                        if wanted:
                            found.add(f)
                        elif on_other is not None:
                            on_other(f)
                    elif wanted or why == "symlink loop":
                        skip(str(f), why)
        elif p.exists():
            raise PigError(f"{display_path(p)}: neither a file nor a folder")
        else:
            raise PigError(f"{display_path(p)}: no such file or folder")
    return sorted(found)
