"""SQLite catalog of an index: one row per file (indexed or failed), one per segment.

A segment row (file, ordinal, start_s, end_s) is keyed like its vector in the usearch index;
an indexed file has one or more segments, a failed one none. Catalogs written before segments
existed (no ``segments`` table) are read as one whole-file segment per indexed file whose key
is the file's key; the first writer to open one adds the table with exactly those rows.

The catalog is also the index's commit record: ``meta.generation`` names the vectors file
that matches the committed rows, and it changes in the same SQLite transaction as the rows.
A writer keeps its changes in one open transaction until :meth:`Catalog.commit`; a reader
holds one read transaction (a WAL snapshot) for its whole life, so it sees one generation;
it writes nothing, and works in a folder it cannot write (see :func:`_open_snapshot`).

Damage: every SQLite failure on the catalog (a malformed image, another file in its place, an
I/O error, a lock held past the timeout) is an :class:`~pig.errors.IndexDamaged` naming the
file and the cause (:func:`catalog_fault`), whichever method meets it. A writer checks the
whole file (``PRAGMA quick_check``: 0.35 s at 1M files) before it changes anything, and keeps
``catalog.sqlite.copy``, the same rows committed in the same transaction
(:mod:`pig.engine.index.catalog_copy`), which ``pig-engine restore-catalog`` puts back.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pig.engine.host.fsutil import sqlite_out_of_space
from pig.engine.host.regular_file import read_regular
from pig.engine.media.sources import digest_blocks
from pig.errors import IndexDamaged, IndexStoreError

CATALOG_NAME = "catalog.sqlite"
COPY_NAME = f"{CATALOG_NAME}.copy"  # the last commit's rows, kept by the writer
INDEXED, FAILED = "indexed", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key        INTEGER PRIMARY KEY AUTOINCREMENT,  -- usearch key; never reused
    path       TEXT    NOT NULL UNIQUE,            -- absolute, normalised
    size       INTEGER,
    mtime_ns   INTEGER,
    digest     TEXT,                               -- blake2b-256 of the content (hex)
    frames     INTEGER,                            -- frames in the video stream
    status     TEXT    NOT NULL CHECK (status IN ('indexed', 'failed')),
    error      TEXT,
    added_at   REAL    NOT NULL,                   -- unix seconds
    updated_at REAL    NOT NULL,
    etag       TEXT,                               -- an object's ETag (URL sources)
    duration_s REAL,                               -- end of the last frame, seconds
    width      INTEGER,                            -- decoded frame size
    height     INTEGER,
    fps        REAL,                               -- average frame rate
    codec      TEXT,                               -- FFmpeg codec name
    meta       TEXT                                -- user metadata: a JSON object
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (key INTEGER PRIMARY KEY);  -- dead in the base vectors
"""
_SEGMENTS_TABLE = """
CREATE TABLE IF NOT EXISTS segments (
    key      INTEGER PRIMARY KEY AUTOINCREMENT,  -- usearch key; never reused
    file_key INTEGER NOT NULL,                   -- files.key
    ordinal  INTEGER NOT NULL,                   -- 0, 1, ... in time order within the file
    start_s  REAL    NOT NULL,                   -- seconds from the file's first frame
    end_s    REAL,                               -- NULL: unknown (whole file)
    UNIQUE (file_key, ordinal)
)"""
# one small JPEG per segment (pig.engine.media.thumbnails), keyed like the segment
_THUMBNAILS_TABLE = """
CREATE TABLE IF NOT EXISTS thumbnails (
    key   INTEGER PRIMARY KEY,  -- segments.key
    image BLOB    NOT NULL      -- JPEG
)"""
_PARTIAL_TABLE = """
CREATE TABLE IF NOT EXISTS partial (
    file_key INTEGER PRIMARY KEY,  -- files.key of a file whose first segments are committed
    done_s   REAL    NOT NULL,     -- end of its last committed segment (seconds)
    total    INTEGER               -- segments the file has in all (NULL: not known yet)
)"""
# what a catalog without the segments table holds: one whole-file segment per indexed file
_LEGACY_SEGMENTS = ("(SELECT key, key AS file_key, 0 AS ordinal, 0.0 AS start_s, NULL AS end_s "
                    "FROM files WHERE status = 'indexed')")
_COLUMNS = "key, path, size, mtime_ns, digest, frames, status, error, added_at, updated_at"
_ETAG = "ALTER TABLE files ADD COLUMN etag TEXT"  # catalogs written before URL sources
# Columns added after format 2's first catalogs (stream facts and user metadata, for filters);
# a writer adds the missing ones on open (:meth:`Catalog._add_fact_columns`), a reader of an
# older catalog reads them as NULL.
FACT_COLUMNS = {"duration_s": "REAL", "width": "INTEGER", "height": "INTEGER", "fps": "REAL",
                "codec": "TEXT", "meta": "TEXT"}
_FACTS_FILLED = "facts_filled"  # meta row: an upgraded catalog's facts were filled once


@dataclass(frozen=True)
class SegmentRecord:
    """One segment row joined with its file's path; ``key`` is its vector's key."""

    key: int
    file_key: int
    path: str
    ordinal: int
    start_s: float
    end_s: float | None


@dataclass(frozen=True)
class FileRecord:
    """One catalog row. ``status`` is ``"indexed"`` (has a vector) or ``"failed"``."""

    key: int
    path: str
    size: int | None
    mtime_ns: int | None
    digest: str | None
    frames: int | None
    status: str
    error: str | None
    added_at: float
    updated_at: float
    etag: str | None = None  # an object's ETag (URL sources; None for local files)


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """blake2b-256 of a regular file's content (at most the size it had when opened), read
    in ``chunk``-byte pieces; :class:`NotRegularFile` (an ``OSError``) for anything else."""
    return digest_blocks(read_regular(path, chunk))


_READER_MMAP = 1 << 40  # bytes of the catalog a reader maps (SQLite caps it at its build limit)

# an ordinary or mode=ro connection that fails with these falls back to the next target
_FALL_BACK = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
              sqlite3.SQLITE_FULL)

# Paths (and errors that quote them) are stored as their exact bytes: a file name need not be
# UTF-8. Bound as bytes and cast to TEXT (SQLite keeps them as they are), read back with
# surrogateescape, so a name round-trips and TEXT comparisons (``under``) still hold.
_TEXT = "CAST(? AS TEXT)"


# what an SQLite error code (the primary code) says about the catalog file
_CAUSES = {
    sqlite3.SQLITE_CORRUPT: "damaged index catalog",
    sqlite3.SQLITE_NOTADB: "not an SQLite database (damaged, or another file in its place)",
    sqlite3.SQLITE_IOERR: "I/O error reading the index catalog",
    sqlite3.SQLITE_BUSY: "index catalog locked by another process past the timeout",
    sqlite3.SQLITE_LOCKED: "index catalog locked by another process past the timeout",
    sqlite3.SQLITE_ERROR: "not an index catalog (or a damaged one)",
}
# errors of this program, not of the file: never reported as damage
_OURS = (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError)


def restore_hint(path: Path) -> str:
    """What to do about a damaged catalog at ``path`` (the main one, or its copy)."""
    if path.name == COPY_NAME:
        return ("the writer's copy of the catalog is unusable too: restore the index folder "
                "from a backup, or index the videos again into a new folder")
    return (f"`pig-engine restore-catalog --index {path.parent}` puts back the copy of the "
            "last commit (see docs/troubleshooting.md)")


def catalog_fault(path: Path, exc: Exception) -> IndexStoreError:
    """The one-line error of an SQLite failure on the catalog at ``path``: a full disk, or
    :class:`IndexDamaged` naming the file, the cause and the way back."""
    if sqlite_out_of_space(exc, path.parent):
        return IndexStoreError(f"{path}: no space left on device")
    code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_CORRUPT) & 0xFF
    cause = _CAUSES.get(code, "unreadable index catalog")
    return IndexDamaged(f"{path}: {cause} ({exc}); {restore_hint(path)}")


_F = TypeVar("_F")


def _guarded(method: _F) -> _F:
    """Turn the SQLite errors a :class:`Catalog` method (or generator) meets into
    :func:`catalog_fault`; errors of this program's own SQL pass through."""
    def fault(self: Catalog, exc: sqlite3.DatabaseError) -> IndexStoreError:
        if isinstance(exc, _OURS):
            raise exc
        return catalog_fault(self.path, exc)

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def rows(self: Catalog, *args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                raise fault(self, exc) from None
        return rows  # type: ignore[return-value]

    @functools.wraps(method)  # type: ignore[arg-type]
    def call(self: Catalog, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)  # type: ignore[operator]
        except sqlite3.DatabaseError as exc:
            raise fault(self, exc) from None
    return call  # type: ignore[return-value]


def quick_check(db: sqlite3.Connection) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds in ``db`` (every page and b-tree of
    the file, not the rows' contents against the indexes), or None."""
    first = db.execute("PRAGMA quick_check(1)").fetchone()
    if first is not None and first[0] == "ok":
        return None
    lines = str(first and first[0]).splitlines()  # "*** in database main ***", the problem
    return " ".join(line for line in lines if not line.startswith("***")) or "failed"


def _to_db(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _from_db(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _inside(folder: str) -> tuple[bytes, bytes]:
    """The bounds of the paths inside ``folder``: ``lo <= path < hi``."""
    lo = folder.rstrip(os.sep) + os.sep
    return _to_db(lo) or b"", _to_db(lo[:-1] + chr(ord(os.sep) + 1)) or b""
def _folder(path: str | None) -> str | None:
    return None if path is None else os.path.dirname(path)


def _name(path: str | None) -> str | None:
    return None if path is None else os.path.basename(path)


def _extension(path: str | None) -> str | None:
    return None if path is None else os.path.splitext(path)[1][1:].lower()


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
    db.text_factory = _from_db
    for fn in (_folder, _name, _extension):
        db.create_function(f"pig{fn.__name__}", 1, fn, deterministic=True)
    return db


# The fields a filter may name (pig.engine.query.filters), as SQL over ``files f`` joined with
# ``segments s``, and their kind: "text" (compared as text; ``~`` globs), "number", "time"
# (unix seconds; an ISO date is accepted). ``meta.KEY`` fields read the JSON of ``f.meta``.
FIELDS: dict[str, tuple[str, str]] = {
    "path": ("f.path", "text"),
    "folder": ("pig_folder(f.path)", "text"),
    "name": ("pig_name(f.path)", "text"),
    "extension": ("pig_extension(f.path)", "text"),
    "size": ("f.size", "number"),
    "mtime": ("f.mtime_ns / 1e9", "time"),
    "duration_s": ("f.duration_s", "number"),
    "width": ("f.width", "number"),
    "height": ("f.height", "number"),
    "fps": ("f.fps", "number"),
    "codec": ("f.codec", "text"),
    "start_s": ("s.start_s", "number"),
    "end_s": ("s.end_s", "number"),
}
META_PREFIX = "meta."


def _reader_targets(path: Path) -> list[str]:
    """How a reader may open ``path``, in order of preference (see :func:`_open_snapshot`)."""
    uri = path.absolute().as_uri()
    in_wal = [f"{uri}?mode=ro&readonly_shm=1"] if Path(f"{path}-wal").exists() else []
    writable = os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)
    return [*([str(path)] if writable else []), *in_wal, f"{uri}?mode=ro&immutable=1"]


def _open_snapshot(path: Path) -> sqlite3.Connection:
    """A ``query_only`` connection holding a read transaction (its snapshot) until closed.

    A reader leaves no file behind in the index folder, and works where it cannot write:

    * Folder and catalog writable: an ordinary connection. It shares the writer's WAL
      (``-wal``/``-shm``) for a consistent snapshot; SQLite creates them if no writer is open
      and, the connection being able to write, removes them on close. (A ``mode=ro``
      connection would create them too but could not remove them, and such leftovers, owned
      by the reader, can lock the folder's owner out of writing.)
    * Otherwise (or if that fails for want of space: a full disk, where SQLite cannot create
      its 32 KiB ``-shm``; the side files it made are removed), with a ``-wal`` present (a
      writer open elsewhere, e.g. through a read-write mount of the same folder, or one that
      crashed): ``mode=ro``, which reads the commits still in the WAL through the existing
      ``-shm``.
    * Otherwise, or if ``mode=ro`` cannot open (``-shm`` missing, which SQLite would have to
      create): ``immutable=1``, which reads the database file with no locks and no side
      files. That is safe because no writer can be changing a folder that no one can write
      (or a full disk: a commit needs space), the cases it is for (and no writer was open
      when the reader started: it would have left a ``-wal``). Commits in a ``-wal`` without
      its ``-shm`` (a crashed writer) are not seen; the next writer folds them into the
      database file.
    """
    side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    existed = [p.exists() for p in side]
    *preferred, last = _reader_targets(path)
    for target in preferred:
        try:
            return _snapshot(target)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _FALL_BACK:
                raise
            for p, was in zip(side, existed, strict=True):
                if not was:
                    p.unlink(missing_ok=True)
    return _snapshot(last)


def _snapshot(target: str) -> sqlite3.Connection:
    db = _connect(target, uri=target.startswith("file:"))
    try:
        db.execute("PRAGMA query_only=ON")
        # pages read in place rather than copied into SQLite's cache: a search's few row
        # look-ups then evict less of the vector graph from the CPU caches (bench_search:
        # ~10% less CPU per query at 100k). Safe here: nothing shrinks the file (no VACUUM).
        db.execute(f"PRAGMA mmap_size={_READER_MMAP}")
        db.execute("BEGIN")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the files
    except BaseException:
        db.close()
        raise
    return db


class Catalog:
    """The ``catalog.sqlite`` of an index directory (see module docstring)."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        """Open ``path``; ``writable`` checks it (``quick_check``) and keeps
        :data:`COPY_NAME` beside it in step (see module docstring)."""
        self.path = path
        self.writable = writable
        if not path.is_file():
            kept = path.name == CATALOG_NAME and (path.parent / COPY_NAME).is_file()
            raise IndexStoreError(f"{path}: index catalog is missing"
                                  + (f"; {restore_hint(path)}" if kept else ""))
        try:
            if writable:
                self._db = _connect(str(path))
                self._db.execute("PRAGMA synchronous=FULL")
            else:
                self._db = _open_snapshot(path)
        except sqlite3.DatabaseError as exc:
            raise catalog_fault(path, exc) from None
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    @_guarded
    def _open(self) -> None:
        if self.writable:
            self.check()
        try:
            self.generation = int(self._meta("generation"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise IndexDamaged(f"{self.path}: not an index catalog (no commit record); "
                               f"{restore_hint(self.path)}") from None
        # unique per commit (the generation is not: a folder replaced by another index can
        # hold the same number); catalogs older than it: generation @ catalog inode
        st = self.path.stat()
        self.commit_id = (self._meta("commit_id")
                          or f"{self.generation}@{st.st_dev}:{st.st_ino}")
        if self.writable:  # once it is known to be a catalog: nothing else is changed
            self._db.execute("PRAGMA journal_mode=WAL")
        self._counts: dict[str, int] | None = None  # kept up to date once counted
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'segments'"
        ).fetchone()
        if self.writable and not has_table:
            self._add_segments_table()
        has_etag = any(row[1] == "etag"
                       for row in self._db.execute("PRAGMA table_info(files)"))
        if self.writable and not has_etag:
            self._db.execute(_ETAG)
        self._columns = _COLUMNS + (", etag" if has_etag or self.writable else ", NULL")
        self._segments = "segments" if has_table or self.writable else _LEGACY_SEGMENTS
        have = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if self.writable and not have >= FACT_COLUMNS.keys():
            self._add_fact_columns(have)
            have |= FACT_COLUMNS.keys()
        self._facts = [c for c in FACT_COLUMNS if c in have]  # a reader's older catalog
        if self.writable:
            self._db.execute(_THUMBNAILS_TABLE)  # additive: older catalogs gain it
        self._thumbnails = self.writable or bool(self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'thumbnails'"
        ).fetchone())
        self._has_partial = self.writable or bool(self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'partial'"
        ).fetchone())
        if self.writable:  # additive: older catalogs get the table, older readers ignore it
            self._db.execute(_PARTIAL_TABLE)
        self._copy: sqlite3.Connection | None = None  # the writer's copy (catalog_copy)
        if self.writable:
            from pig.engine.index.catalog_copy import open_copy

            self._copy = open_copy(self._db, self.path, self.generation)

    @classmethod
    def create(cls, path: Path) -> Catalog:
        """A new, empty catalog at generation 0 (replaces leftovers of an interrupted create)."""
        for name in (path.name, COPY_NAME):
            for side in ("", "-wal", "-shm"):
                (path.parent / f"{name}{side}").unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA + _SEGMENTS_TABLE + ";\n" + _THUMBNAILS_TABLE + ";\n"
                         "INSERT INTO meta VALUES ('generation', '0');\n"
                         f"INSERT INTO meta VALUES ('{_FACTS_FILLED}', '1');")
        db.close()
        return cls(path, writable=True)

    @_guarded
    def _add_segments_table(self) -> None:
        """Upgrade a catalog written before segments: same vectors, same keys (atomic)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(_SEGMENTS_TABLE)
        self._db.execute(f"INSERT INTO segments SELECT * FROM {_LEGACY_SEGMENTS}")
        self._db.execute("COMMIT")

    @_guarded
    def _add_fact_columns(self, have: set[str]) -> None:
        """Upgrade a catalog written before the fact columns (atomic, idempotent): add them,
        durations from the segments; :meth:`unfilled` lists the files whose stream facts the
        writer should read (once: until :meth:`facts_filled`)."""
        self._db.execute("BEGIN IMMEDIATE")
        for name, kind in FACT_COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")
        self._db.execute(f"UPDATE files SET duration_s = (SELECT MAX(end_s) FROM {self._segments} "
                         "s WHERE s.file_key = files.key) WHERE duration_s IS NULL")
        self._db.execute(f"INSERT OR REPLACE INTO meta VALUES ('{_FACTS_FILLED}', '0')")
        self._db.execute("COMMIT")

    @_guarded
    def check(self) -> None:
        """Raise :class:`IndexDamaged` if ``PRAGMA quick_check`` finds a problem."""
        if problem := quick_check(self._db):
            raise IndexDamaged(f"{self.path}: damaged index catalog (quick_check: {problem}); "
                               f"{restore_hint(self.path)}")

    # --- reads -------------------------------------------------------------------------
    @_guarded
    def unfilled(self) -> list[FileRecord] | None:
        """Indexed files of an upgraded catalog whose stream facts were never read (None:
        nothing to do)."""
        if self._meta(_FACTS_FILLED) != "0":
            return None
        return [r for r in self.records(INDEXED) if self.facts([r.key])[r.key]["codec"] is None]

    @_guarded
    def facts(self, keys: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Stream facts and user metadata (``meta``: a dict) of files ``keys`` (missing
        columns of an older catalog read as None)."""
        cols = ", ".join(self._facts) or "NULL"
        out = {}
        for key, *values in self._rows_in(f"SELECT key, {cols} FROM files WHERE key IN "
                                          "({marks})", keys):
            row = dict.fromkeys(FACT_COLUMNS) | dict(zip(self._facts, values, strict=False))
            row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
            out[key] = row
        return out

    @_guarded
    def matching(self, where: str, params: list[Any]) -> np.ndarray:
        """Sorted int64 vector keys of the indexed segments for which the SQL condition
        ``where`` (over ``files f`` and ``segments s``, see :data:`FIELDS`) holds."""
        sql = (f"SELECT s.key FROM {self._segments} s JOIN files f ON f.key = s.file_key "
               f"WHERE f.status = 'indexed' AND ({where}) ORDER BY s.key")
        if not set(self._facts) >= FACT_COLUMNS.keys():  # an older catalog: facts are NULL
            for name in FACT_COLUMNS.keys() - set(self._facts):
                sql = sql.replace(f"f.{name}", "NULL")
        try:
            keys = [k for (k,) in self._db.execute(sql, params)]
        except sqlite3.OperationalError as exc:  # e.g. a glob pattern SQLite refuses
            raise IndexStoreError(f"{self.path}: cannot apply the filter ({exc})") from None
        return np.asarray(keys, dtype=np.int64)

    @_guarded
    def summary(self, top: int = 20) -> dict[str, Any]:
        """What the indexed files are: their count, segments, total duration (seconds, of
        those that know it), and the ``top`` extensions, codecs and folders by files."""
        def counts(expr: str) -> dict[str, int]:
            sql = (f"SELECT {expr} AS v, COUNT(*) AS n FROM files f WHERE status = 'indexed' "
                   f"GROUP BY v ORDER BY n DESC, v LIMIT {int(top)}")
            return {str(v) if v is not None else "": n for v, n in self._db.execute(sql)}

        files, duration = self._db.execute(
            f"SELECT COUNT(*), SUM({'f.duration_s' if 'duration_s' in self._facts else 'NULL'})"
            " FROM files f WHERE status = 'indexed'").fetchone()
        return {"files": files, "segments": self.segment_count(), "duration_s": duration or 0.0,
                "extensions": counts("pig_extension(f.path)"),
                "codecs": counts("f.codec" if "codec" in self._facts else "NULL"),
                "folders": counts("pig_folder(f.path)")}

    @_guarded
    def segment_key(self, file_key: int, ordinal: int) -> int | None:
        """The vector key of segment ``ordinal`` of file ``file_key`` (None: no such)."""
        row = self._db.execute(f"SELECT s.key FROM {self._segments} s JOIN files f ON "
                               "f.key = s.file_key WHERE s.file_key = ? AND s.ordinal = ? "
                               "AND f.status = 'indexed'", (file_key, ordinal)).fetchone()
        return None if row is None else int(row[0])
    @_guarded
    def partial(self, key: int | None = None) -> dict[int, tuple[float, int, int | None]]:
        """Files committed in part (all, or the one with ``key``): file key -> (done_s,
        segments committed, total or None)."""
        if not self._has_partial:
            return {}
        where, args = ("WHERE p.file_key = ?", (key,)) if key is not None else ("", ())
        rows = self._db.execute(
            "SELECT p.file_key, p.done_s, COUNT(g.key), p.total FROM partial p "
            f"LEFT JOIN {self._segments} g ON g.file_key = p.file_key {where} "
            "GROUP BY p.file_key", args)
        return {int(k): (float(d), int(n), t) for k, d, n, t in rows}

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    @_guarded
    def lookup(self, path: str) -> FileRecord | None:
        row = self._db.execute(f"SELECT {self._columns} FROM files WHERE path = {_TEXT}",
                               (_to_db(path),)).fetchone()
        return FileRecord(*row) if row else None

    @_guarded
    def records(self, status: str | None = None) -> Iterator[FileRecord]:
        """All rows (or those with ``status``), ordered by key."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        cur = self._db.execute(f"SELECT {self._columns} FROM files {where} ORDER BY key", args)
        yield from (FileRecord(*row) for row in cur)

    @_guarded
    def under(self, folder: str) -> list[FileRecord]:
        """Rows whose path lies inside ``folder``."""
        sql = (f"SELECT {self._columns} FROM files WHERE path >= {_TEXT} AND path < {_TEXT} "
               "ORDER BY key")
        return [FileRecord(*row) for row in self._db.execute(sql, _inside(folder))]

    @_guarded
    def count_under(self, folder: str) -> int:
        """How many rows :meth:`under` gives (one index range scan)."""
        sql = f"SELECT COUNT(*) FROM files WHERE path >= {_TEXT} AND path < {_TEXT}"
        return int(self._db.execute(sql, _inside(folder)).fetchone()[0])

    @_guarded
    def segment_counts(self) -> dict[int, int]:
        """Segments per file key (indexed files only)."""
        sql = f"SELECT file_key, COUNT(*) FROM {self._segments} GROUP BY file_key"
        return dict(self._db.execute(sql))

    def _rows_in(self, sql: str, keys: Iterable[int]) -> Iterator[Any]:
        """Rows of ``sql`` whose ``{marks}`` is the IN list of ``keys``, queried in chunks that
        stay under SQLite's bound-parameter limit."""
        keys = list(keys)
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            yield from self._db.execute(sql.format(marks=",".join("?" * len(part))), part)

    @_guarded
    def paths(self, keys: Iterable[int]) -> dict[int, str]:
        return dict(self._rows_in("SELECT key, path FROM files WHERE key IN ({marks})", keys))

    @_guarded
    def parts(self) -> dict[str, Any]:
        """The committed vectors files (``meta.parts``: base and delta, see ``vectors.py``)."""
        return json.loads(self._meta("parts") or "{}")

    @_guarded
    def tombstones(self) -> set[int]:
        return {int(k) for (k,) in self._db.execute("SELECT key FROM tombstones")}

    @_guarded
    def manifest_copy(self) -> str | None:
        """The index manifest as of the last commit (for restoring a lost ``manifest.json``)."""
        return self._meta("manifest")

    @_guarded
    def counts(self) -> dict[str, int]:
        """Rows per status; counted once (a scan: ~1 s at 1M rows), then kept up to date by
        the writes, so that a commit's summary costs nothing."""
        if self._counts is None:
            rows = dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status"))
            self._counts = {INDEXED: rows.get(INDEXED, 0), FAILED: rows.get(FAILED, 0)}
        return dict(self._counts)

    def _recount(self, gone: str | None, new: str | None) -> None:
        if self._counts is not None:
            for status, step in ((gone, -1), (new, 1)):
                if status is not None:
                    self._counts[status] += step

    @_guarded
    def segment_count(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self._segments}").fetchone()[0])

    @_guarded
    def segment_keys(self, file_keys: Iterable[int]) -> list[int]:
        """The vector keys of the segments of ``file_keys``."""
        sql = f"SELECT key FROM {self._segments} WHERE file_key IN ({{marks}}) ORDER BY key"
        return [k for (k,) in self._rows_in(sql, file_keys)]

    def segments(self, keys: Iterable[int]) -> dict[int, SegmentRecord]:
        """The segment rows (with their file's path) of vector ``keys``."""
        return {key: SegmentRecord(key, *row) for key, row in self.segment_rows(keys).items()}

    @_guarded
    def segment_rows(self, keys: Iterable[int]
                     ) -> dict[int, tuple[int, str, int, float, float | None]]:
        """:meth:`segments` as plain tuples ``(file_key, path, ordinal, start_s, end_s)`` (what
        a search needs, without building a record per row)."""
        sql = (f"SELECT s.key, s.file_key, f.path, s.ordinal, s.start_s, s.end_s "
               f"FROM {self._segments} s JOIN files f ON f.key = s.file_key "
               f"WHERE s.key IN ({{marks}})")
        return {row[0]: row[1:] for row in self._rows_in(sql, keys)}

    @_guarded
    def longest(self) -> tuple[str, float] | None:
        """The indexed file with the longest known span and its length in seconds."""
        row = self._db.execute(
            f"SELECT f.path, MAX(s.end_s) - MIN(s.start_s) AS d FROM {self._segments} s "
            "JOIN files f ON f.key = s.file_key WHERE s.end_s IS NOT NULL "
            "GROUP BY s.file_key ORDER BY d DESC, f.path LIMIT 1"
        ).fetchone()
        return (row[0], float(row[1])) if row else None

    # --- writes (pending until commit) ---------------------------------------------------
    @_guarded
    def _write(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        """Run a change on the catalog and on its copy (pending until :meth:`commit`)."""
        if not self.writable:
            raise IndexStoreError(f"{self.path}: catalog is open read-only")
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        cur = self._db.execute(sql, args)
        if self._copy is not None:
            self._on_copy(lambda db: db.execute(sql, args), cur.lastrowid)
        return cur

    @_guarded
    def _write_many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._write("SELECT 1")
            self._db.executemany(sql, rows)
            if self._copy is not None:
                self._on_copy(lambda db: db.executemany(sql, rows), None)

    def _on_copy(self, change: Callable[[sqlite3.Connection], sqlite3.Cursor],
                 rowid: int | None) -> None:
        """Make ``change`` on the copy too; a copy that fails or drifts (another key) is
        dropped for this session, left at its generation for the next writer to remake."""
        assert self._copy is not None
        try:
            if not self._copy.in_transaction:
                self._copy.execute("BEGIN IMMEDIATE")
            cur = change(self._copy)
            cur.fetchall()  # steps a RETURNING statement to its end
            if rowid is not None and cur.lastrowid != rowid:
                raise sqlite3.DatabaseError(f"copy gave key {cur.lastrowid}, not {rowid}")
        except sqlite3.DatabaseError:
            self._drop_copy()

    def _drop_copy(self) -> None:
        if self._copy is not None:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._copy.close()  # rolls back
            self._copy = None

    @_guarded
    def upsert(
        self,
        path: str,
        *,
        status: str,
        size: int | None,
        mtime_ns: int | None,
        digest: str | None = None,
        frames: int | None = None,
        error: str | None = None,
        etag: str | None = None,
    ) -> tuple[int, FileRecord | None]:
        """Insert or overwrite the row of ``path``; returns its key and the previous row."""
        now = time.time()
        old = self.lookup(path)
        values = (size, mtime_ns, digest, frames, status, _to_db(error), now, etag)
        if old is None:
            cur = self._write(
                "INSERT INTO files (path, size, mtime_ns, digest, frames, status, error, "
                f"updated_at, etag, added_at) VALUES ({_TEXT}, ?, ?, ?, ?, ?, {_TEXT}, ?, ?, ?)",
                (_to_db(path), *values, now),
            )
            self._recount(None, status)
            return int(cur.lastrowid or 0), None
        self._write(
            "UPDATE files SET size = ?, mtime_ns = ?, digest = ?, frames = ?, status = ?, "
            f"error = {_TEXT}, updated_at = ?, etag = ? WHERE key = ?",
            (*values, old.key),
        )
        self._recount(old.status, status)
        return old.key, old

    @_guarded
    def rename(self, key: int, path: str, size: int | None, mtime_ns: int | None,
               etag: str | None = None) -> None:
        """Give row ``key`` a new path and stat: its key, segments and vectors stay."""
        self._write(f"UPDATE files SET path = {_TEXT}, size = ?, mtime_ns = ?, etag = ?, "
                    "updated_at = ? WHERE key = ?",
                    (_to_db(path), size, mtime_ns, etag, time.time(), key))

    @_guarded
    def set_facts(self, key: int, facts: dict[str, Any]) -> None:
        """Set stream facts (``FACT_COLUMNS`` but ``meta``) of file ``key``."""
        names = [n for n in facts if n != "meta"]
        unknown = set(names) - FACT_COLUMNS.keys()
        if unknown:
            raise ValueError(f"unknown fact columns {sorted(unknown)}")
        if names:
            self._write(f"UPDATE files SET {', '.join(f'{n} = ?' for n in names)} "
                        "WHERE key = ?", (*(facts[n] for n in names), key))

    @_guarded
    def facts_filled(self) -> None:
        """Note that an upgraded catalog's stream facts were read (see :meth:`unfilled`)."""
        self._write(f"INSERT OR REPLACE INTO meta VALUES ('{_FACTS_FILLED}', '1')")

    @_guarded
    def set_meta(self, key: int, meta: dict[str, Any]) -> None:
        """Replace the user metadata of file ``key`` (a JSON object)."""
        self._write("UPDATE files SET meta = ? WHERE key = ?",
                    (json.dumps(meta, ensure_ascii=False, sort_keys=True) if meta else None, key))

    @_guarded
    def touch(self, key: int, size: int, mtime_ns: int | None, etag: str | None = None) -> None:
        """Record a new size/mtime (and ETag) for a file whose content is unchanged."""
        self._write(
            "UPDATE files SET size = ?, mtime_ns = ?, etag = ?, updated_at = ? WHERE key = ?",
            (size, mtime_ns, etag, time.time(), key),
        )

    @_guarded
    def set_segments(self, file_key: int,
                     spans: Iterable[tuple[float, float | None]]) -> tuple[list[int], list[int]]:
        """Replace the segments of ``file_key`` by ``spans`` (in order); returns the vector keys
        of the old segments and of the new ones."""
        old = self.drop_segments(file_key)
        new = []
        for ordinal, (start, end) in enumerate(spans):
            cur = self._write(
                "INSERT INTO segments (file_key, ordinal, start_s, end_s) VALUES (?, ?, ?, ?)",
                (file_key, ordinal, float(start), None if end is None else float(end)),
            )
            new.append(int(cur.lastrowid or 0))
        return old, new

    @_guarded
    def append_segments(self, file_key: int, first: int,
                        spans: Iterable[tuple[float, float | None]]) -> list[int]:
        """Add segments ``first, first + 1, ...`` of ``file_key``; returns their vector keys."""
        new = []
        for ordinal, (start, end) in enumerate(spans, first):
            cur = self._write(
                "INSERT INTO segments (file_key, ordinal, start_s, end_s) VALUES (?, ?, ?, ?)",
                (file_key, ordinal, float(start), None if end is None else float(end)),
            )
            new.append(int(cur.lastrowid or 0))
        return new

    @_guarded
    def set_partial(self, file_key: int, done_s: float | None, total: int | None = None) -> None:
        """Mark ``file_key`` committed up to ``done_s`` seconds (None: complete)."""
        self._write("DELETE FROM partial WHERE file_key = ?", (file_key,))
        if done_s is not None:
            self._write("INSERT INTO partial VALUES (?, ?, ?)", (file_key, float(done_s), total))

    @_guarded
    def drop_segments(self, file_key: int) -> list[int]:
        """Delete the segments of ``file_key`` (and their thumbnails); returns their keys."""
        old = self.segment_keys([file_key])
        self._write("DELETE FROM thumbnails WHERE key IN (SELECT key FROM segments WHERE "
                    "file_key = ?)", (file_key,))
        self._write("DELETE FROM segments WHERE file_key = ?", (file_key,))
        return old

    @_guarded
    def set_thumbnails(self, keys: Iterable[int], images: Iterable[bytes | None]) -> None:
        """Keep the thumbnail of each segment ``keys`` (None: none was made)."""
        self._write_many("INSERT OR REPLACE INTO thumbnails VALUES (?, ?)",
                         [(k, im) for k, im in zip(keys, images, strict=True) if im])

    @_guarded
    def thumbnail(self, key: int) -> bytes | None:
        """The JPEG thumbnail of segment ``key`` (None: none, or a catalog made before)."""
        if not self._thumbnails:
            return None
        row = self._db.execute("SELECT image FROM thumbnails WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    @_guarded
    def delete(self, keys: Iterable[int]) -> None:
        """Delete files (and their segments)."""
        for k in keys:
            self.drop_segments(k)
            self._write("DELETE FROM partial WHERE file_key = ?", (k,))
            for (status,) in self._write("DELETE FROM files WHERE key = ? RETURNING status",
                                         (k,)).fetchall():
                self._recount(status, None)

    @_guarded
    def commit(
        self,
        generation: int,
        *,
        parts: dict[str, Any],
        tombstones: Iterable[int],
        clear_tombstones: bool,
        manifest: str,
    ) -> None:
        """Atomically make the pending rows, ``generation``, the vectors files (``parts``) and
        the tombstones durable (the commit point). ``clear_tombstones``: the base was
        rewritten without the dead vectors; ``tombstones``: keys newly dead in the base."""
        if clear_tombstones:
            self._write("DELETE FROM tombstones")
        self._write_many("INSERT OR IGNORE INTO tombstones VALUES (?)", [(k,) for k in tombstones])
        commit_id = uuid.uuid4().hex
        for name, value in (("generation", str(generation)), ("parts", json.dumps(parts)),
                            ("manifest", manifest), ("commit_id", commit_id)):
            self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        if self._copy is not None:  # first: a crash before the commit point leaves it ahead
            try:
                self._copy.execute("COMMIT")
            except sqlite3.DatabaseError:
                self._drop_copy()
        self._db.execute("COMMIT")
        self.generation, self.commit_id = generation, commit_id

    def close(self) -> None:
        """Close; a writer's uncommitted changes are rolled back (by SQLite on close, if the
        file is too damaged for a ROLLBACK)."""
        with contextlib.suppress(sqlite3.DatabaseError):  # incl. closed before: idempotent
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        self._counts = None
        self._drop_copy()
        self._db.close()
