"""Where videos come from: local files, or objects named by fsspec URLs (``s3://bucket/key``,
``gs://bucket/key``, ``https://host/video.mp4``).

A source gives each file an identity (an absolute path, or the URL as given), a
:class:`SourceStat` (size, modification time, ETag: what change detection compares), its
content digest and a way to read it. Adding a kind of source is one row of :data:`SCHEMES`.

Credentials and endpoints come from each provider's standard environment and configuration
files, read by its fsspec package: ``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/``~/.aws``, and
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an S3-compatible store; Google's
application default credentials for ``gs://``.

Objects are decoded from a local copy spooled to a temporary file (:func:`spooled`): the
demuxer seeks freely, the copy is hashed as it is written, and it is bounded
(:data:`~pig.engine.limits.MAX_SPOOL_BYTES`) and removed after decoding.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import errno
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, NoReturn

from pig.engine.display import display_path
from pig.engine.host.regular_file import read_regular
from pig.engine.limits import MAX_SPOOL_BYTES
from pig.errors import PigError

# URL scheme -> the package fsspec needs for it (the extra that installs it)
SCHEMES = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
           "http": ("aiohttp", "http"), "https": ("aiohttp", "http")}
CHUNK = 1 << 20


def scheme(path: str | os.PathLike[str]) -> str | None:
    """The URL scheme of ``path`` when it is a URL of a known source, else None (local)."""
    text = os.fspath(path)
    if not isinstance(text, str) or "://" not in text:
        return None
    head = text.split("://", 1)[0].lower()
    return head if head in SCHEMES else None


def is_url(path: str | os.PathLike[str]) -> bool:
    return scheme(path) is not None


def identity(path: str | os.PathLike[str]) -> str:
    """How the catalog names ``path``: a URL as given, a local path made absolute."""
    return os.fspath(path) if is_url(path) else os.path.abspath(os.fspath(path))


@dataclass(frozen=True)
class SourceStat:
    """What change detection compares: ``size`` in bytes, ``mtime_ns`` (None: unknown) and,
    for an object, its ``etag``."""

    size: int
    mtime_ns: int | None
    etag: str | None = None


_LOCK = threading.Lock()
_FILESYSTEMS: dict[str, Any] = {}


def filesystem(url: str) -> Any:
    """The fsspec filesystem of ``url``'s scheme (one per scheme and process)."""
    kind = scheme(url)
    if kind is None:
        raise PigError(f"{display_path(url)}: not a URL of a known source "
                       f"({', '.join(sorted(SCHEMES))})")
    with _LOCK:
        if kind not in _FILESYSTEMS:
            package, extra = SCHEMES[kind]
            try:
                import fsspec

                # no listings cache: a long-lived process (watch, serve) must see changes
                _FILESYSTEMS[kind] = fsspec.filesystem(kind, use_listings_cache=False)
            except ImportError:
                raise PigError(f"{display_path(url)}: {kind}:// needs {package}: pip install "
                               f"'pig-engine[{extra}]'") from None
        return _FILESYSTEMS[kind]


@contextlib.contextmanager
def _remote(url: str) -> Iterator[None]:
    """Failures of a store's client (connection, credentials, throttling) as ``OSError``
    naming ``url``, like any other read error; ``FileNotFoundError`` stays as it is."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        raise OSError(errno.EIO, f"{type(exc).__name__}: {exc}", url) from exc


def _object_stat(info: dict[str, Any]) -> SourceStat:
    modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
    mtime_ns = None
    if isinstance(modified, datetime.datetime):
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=datetime.UTC)
        mtime_ns = calendar.timegm(modified.utctimetuple()) * 10**9 + modified.microsecond * 1000
    elif isinstance(modified, int | float):
        mtime_ns = int(modified * 1e9)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return SourceStat(int(info.get("size") or 0), mtime_ns, str(etag) if etag else None)


def stat(path: str | os.PathLike[str]) -> SourceStat | None:
    """The stat of a local regular file or an object; None if it does not exist (or is not
    a regular file). Other failures (permissions, the network) raise ``OSError``."""
    if not is_url(path):
        import stat as st_mode

        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return SourceStat(st.st_size, st.st_mtime_ns) if st_mode.S_ISREG(st.st_mode) else None
    try:
        with _remote(os.fspath(path)):
            info = filesystem(os.fspath(path)).info(os.fspath(path))
    except FileNotFoundError:
        return None
    return _object_stat(info) if info.get("type", "file") == "file" else None


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (still) a regular file or an object; an error to ask counts as
    present (a network glitch must not remove files from an index)."""
    try:
        return stat(path) is not None
    except OSError:
        return True


def same(recorded: tuple[int | None, int | None, str | None], now: SourceStat) -> bool:
    """Whether a catalog row's (size, mtime_ns, etag) still describes ``now``: same size and
    ETag for an object that has one (the store changes it with the content; a re-upload of
    the same bytes keeps it), else same size and mtime."""
    size, mtime_ns, etag = recorded
    if now.etag is not None and etag is not None:
        return (size, etag) == (now.size, now.etag)
    return (size, mtime_ns) == (now.size, now.mtime_ns)


def digest_blocks(blocks: Iterable[bytes]) -> str:
    """blake2b-256 (hex) of the concatenated ``blocks``: the content digest of the catalog."""
    h = hashlib.blake2b(digest_size=32)
    for block in blocks:
        h.update(block)
    return h.hexdigest()


def _object_blocks(url: str, size: int) -> Iterator[bytes]:
    """An object's content up to ``size`` bytes (what it had when stat'ed), in chunks."""
    with _remote(url), filesystem(url).open(url, "rb", block_size=8 * CHUNK) as f:
        left = size
        while left > 0 and (block := f.read(min(CHUNK, left))):
            left -= len(block)
            yield block


def digest(path: str | os.PathLike[str]) -> str:
    """The content digest of a local regular file or an object (read whole)."""
    if not is_url(path):
        return digest_blocks(read_regular(path, CHUNK))
    url = os.fspath(path)
    st = stat(url)
    if st is None:
        raise FileNotFoundError(url)
    return digest_blocks(_object_blocks(url, st.size))


@contextlib.contextmanager
def spooled(url: str, max_bytes: int = MAX_SPOOL_BYTES
            ) -> Iterator[tuple[str, SourceStat, str]]:
    """(local copy, stat, content digest) of the object ``url``; the copy is removed on exit.
    Refuses an object over ``max_bytes`` (``OSError``) and one that changed while it was
    read (its ETag or size before and after differ)."""
    before = stat(url)
    if before is None:
        raise FileNotFoundError(0, "no such object", url)
    if before.size > max_bytes:
        raise OSError(0, f"{before.size} bytes, over the {max_bytes}-byte spool limit")
    h = hashlib.blake2b(digest_size=32)
    with tempfile.NamedTemporaryFile(prefix="pig-spool-", suffix=PurePosixPath(url).suffix
                                     ) as tmp:
        for block in _object_blocks(url, before.size):
            h.update(block)
            tmp.write(block)
        tmp.flush()
        if tmp.tell() != before.size or stat(url) != before:
            raise OSError(0, "the object changed while it was read; the next run takes it")
        yield tmp.name, before, h.hexdigest()


def listing(url: str, wanted: Callable[[str, str], bool]) -> dict[str, SourceStat]:
    """The objects at ``url`` (one object) or under it (a prefix) whose name ``wanted(name,
    relative path)`` takes, with their stats; a URL that names nothing is a user error, one
    that cannot be listed (network, credentials) an ``OSError``."""
    fs = filesystem(url)
    kind = scheme(url)
    try:
        if kind in ("http", "https"):
            st = stat(url)
            return {url: st} if st is not None else _missing(url)
        with _remote(url):
            found = fs.find(url, detail=True)
    except FileNotFoundError:
        return _missing(url)
    if not found:
        return _missing(url)
    base = url.split("://", 1)[1].rstrip("/")
    out = {}
    for name, info in sorted(found.items()):
        if info.get("type", "file") != "file":
            continue
        rel = name[len(base):].lstrip("/") if name.startswith(base) else name
        if name == base or wanted(PurePosixPath(name).name, rel):
            out[f"{kind}://{name}"] = _object_stat(info)
    return out


def _missing(url: str) -> NoReturn:
    raise PigError(f"{display_path(url)}: no such object or prefix")


def media_url(url: str, expires_s: int) -> str:
    """A URL a browser can fetch ``url``'s content from: a presigned URL valid for
    ``expires_s`` seconds (object stores), or the URL itself (http/https)."""
    if scheme(url) in ("http", "https"):
        return url
    with _remote(url):
        return str(filesystem(url).sign(url, expiration=expires_s))


def read_range(url: str, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of the object ``url``, in chunks (for proxying)."""
    with _remote(url), filesystem(url).open(url, "rb", block_size=8 * CHUNK) as f:
        f.seek(start)
        left = end - start
        while left > 0 and (block := f.read(min(CHUNK, left))):
            left -= len(block)
            yield block
