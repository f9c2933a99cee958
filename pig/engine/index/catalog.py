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
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pig.engine.host.fsutil import sqlite_out_of_space
from pig.engine.media.regular_file import read_regular
from pig.engine.media.sources import digest_blocks
from pig.errors import IndexStoreError

CATALOG_NAME = "catalog.sqlite"
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
    etag       TEXT                                -- an object's ETag (URL sources)
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
# what a catalog without the segments table holds: one whole-file segment per indexed file
_LEGACY_SEGMENTS = ("(SELECT key, key AS file_key, 0 AS ordinal, 0.0 AS start_s, NULL AS end_s "
                    "FROM files WHERE status = 'indexed')")
_COLUMNS = "key, path, size, mtime_ns, digest, frames, status, error, added_at, updated_at"
_ETAG = "ALTER TABLE files ADD COLUMN etag TEXT"  # catalogs written before URL sources


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


# an ordinary or mode=ro connection that fails with these falls back to the next target
_FALL_BACK = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
              sqlite3.SQLITE_FULL)

# Paths (and errors that quote them) are stored as their exact bytes: a file name need not be
# UTF-8. Bound as bytes and cast to TEXT (SQLite keeps them as they are), read back with
# surrogateescape, so a name round-trips and TEXT comparisons (``under``) still hold.
_TEXT = "CAST(? AS TEXT)"


def _to_db(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _from_db(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _inside(folder: str) -> tuple[bytes, bytes]:
    """The bounds of the paths inside ``folder``: ``lo <= path < hi``."""
    lo = folder.rstrip(os.sep) + os.sep
    return _to_db(lo) or b"", _to_db(lo[:-1] + chr(ord(os.sep) + 1)) or b""


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
    db.text_factory = _from_db
    return db


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
        db.execute("BEGIN")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the files
    except BaseException:
        db.close()
        raise
    return db


class Catalog:
    """The ``catalog.sqlite`` of an index directory (see module docstring)."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        self.path = path
        self.writable = writable
        if not path.is_file():
            raise IndexStoreError(f"{path}: index catalog is missing")
        try:
            if writable:
                self._db = _connect(str(path))
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA journal_mode=WAL")
            else:
                self._db = _open_snapshot(path)
            self.generation = int(self._meta("generation"))
            # unique per commit (the generation is not: a folder replaced by another index
            # can hold the same number); catalogs older than it: generation @ catalog inode
            st = path.stat()
            self.commit_id = (self._meta("commit_id")
                              or f"{self.generation}@{st.st_dev}:{st.st_ino}")
            self._counts: dict[str, int] | None = None  # kept up to date once counted
            has_table = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'segments'"
            ).fetchone()
            if writable and not has_table:
                self._add_segments_table()
            has_etag = any(row[1] == "etag"
                           for row in self._db.execute("PRAGMA table_info(files)"))
            if writable and not has_etag:
                self._db.execute(_ETAG)
            self._columns = _COLUMNS + (", etag" if has_etag or writable else ", NULL")
            self._segments = "segments" if has_table or writable else _LEGACY_SEGMENTS
        except (sqlite3.DatabaseError, TypeError, ValueError) as exc:
            if sqlite_out_of_space(exc, path.parent):
                raise IndexStoreError(f"{path}: no space left on device") from None
            raise IndexStoreError(f"{path}: unreadable index catalog ({exc})") from None

    @classmethod
    def create(cls, path: Path) -> Catalog:
        """A new, empty catalog at generation 0 (replaces leftovers of an interrupted create)."""
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA + _SEGMENTS_TABLE + ";\n"
                         "INSERT INTO meta VALUES ('generation', '0');")
        db.close()
        return cls(path, writable=True)

    def _add_segments_table(self) -> None:
        """Upgrade a catalog written before segments: same vectors, same keys (atomic)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(_SEGMENTS_TABLE)
        self._db.execute(f"INSERT INTO segments SELECT * FROM {_LEGACY_SEGMENTS}")
        self._db.execute("COMMIT")

    # --- reads -------------------------------------------------------------------------
    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def lookup(self, path: str) -> FileRecord | None:
        row = self._db.execute(f"SELECT {self._columns} FROM files WHERE path = {_TEXT}",
                               (_to_db(path),)).fetchone()
        return FileRecord(*row) if row else None

    def records(self, status: str | None = None) -> Iterator[FileRecord]:
        """All rows (or those with ``status``), ordered by key."""
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        cur = self._db.execute(f"SELECT {self._columns} FROM files {where} ORDER BY key", args)
        yield from (FileRecord(*row) for row in cur)

    def under(self, folder: str) -> list[FileRecord]:
        """Rows whose path lies inside ``folder``."""
        sql = (f"SELECT {self._columns} FROM files WHERE path >= {_TEXT} AND path < {_TEXT} "
               "ORDER BY key")
        return [FileRecord(*row) for row in self._db.execute(sql, _inside(folder))]

    def count_under(self, folder: str) -> int:
        """How many rows :meth:`under` gives (one index range scan)."""
        sql = f"SELECT COUNT(*) FROM files WHERE path >= {_TEXT} AND path < {_TEXT}"
        return int(self._db.execute(sql, _inside(folder)).fetchone()[0])

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

    def paths(self, keys: Iterable[int]) -> dict[int, str]:
        return dict(self._rows_in("SELECT key, path FROM files WHERE key IN ({marks})", keys))

    def parts(self) -> dict[str, Any]:
        """The committed vectors files (``meta.parts``: base and delta, see ``vectors.py``)."""
        return json.loads(self._meta("parts") or "{}")

    def tombstones(self) -> set[int]:
        return {int(k) for (k,) in self._db.execute("SELECT key FROM tombstones")}

    def manifest_copy(self) -> str | None:
        """The index manifest as of the last commit (for restoring a lost ``manifest.json``)."""
        return self._meta("manifest")

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

    def segment_count(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {self._segments}").fetchone()[0])

    def segment_keys(self, file_keys: Iterable[int]) -> list[int]:
        """The vector keys of the segments of ``file_keys``."""
        sql = f"SELECT key FROM {self._segments} WHERE file_key IN ({{marks}}) ORDER BY key"
        return [k for (k,) in self._rows_in(sql, file_keys)]

    def segments(self, keys: Iterable[int]) -> dict[int, SegmentRecord]:
        """The segment rows (with their file's path) of vector ``keys``."""
        return {key: SegmentRecord(key, *row) for key, row in self.segment_rows(keys).items()}

    def segment_rows(self, keys: Iterable[int]
                     ) -> dict[int, tuple[int, str, int, float, float | None]]:
        """:meth:`segments` as plain tuples ``(file_key, path, ordinal, start_s, end_s)`` (what
        a search needs, without building a record per row)."""
        sql = (f"SELECT s.key, s.file_key, f.path, s.ordinal, s.start_s, s.end_s "
               f"FROM {self._segments} s JOIN files f ON f.key = s.file_key "
               f"WHERE s.key IN ({{marks}})")
        return {row[0]: row[1:] for row in self._rows_in(sql, keys)}

    def longest(self) -> tuple[str, float] | None:
        """The indexed file with the longest known span and its length in seconds."""
        row = self._db.execute(
            f"SELECT f.path, MAX(s.end_s) - MIN(s.start_s) AS d FROM {self._segments} s "
            "JOIN files f ON f.key = s.file_key WHERE s.end_s IS NOT NULL "
            "GROUP BY s.file_key ORDER BY d DESC, f.path LIMIT 1"
        ).fetchone()
        return (row[0], float(row[1])) if row else None

    # --- writes (pending until commit) ---------------------------------------------------
    def _write(self, sql: str, args: tuple | list = ()) -> sqlite3.Cursor:
        if not self.writable:
            raise IndexStoreError(f"{self.path}: catalog is open read-only")
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        return self._db.execute(sql, args)

    def _write_many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._write("SELECT 1")
            self._db.executemany(sql, rows)

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

    def rename(self, key: int, path: str, size: int | None, mtime_ns: int | None,
               etag: str | None = None) -> None:
        """Give row ``key`` a new path and stat: its key, segments and vectors stay."""
        self._write(f"UPDATE files SET path = {_TEXT}, size = ?, mtime_ns = ?, etag = ?, "
                    "updated_at = ? WHERE key = ?",
                    (_to_db(path), size, mtime_ns, etag, time.time(), key))

    def touch(self, key: int, size: int, mtime_ns: int | None, etag: str | None = None) -> None:
        """Record a new size/mtime (and ETag) for a file whose content is unchanged."""
        self._write(
            "UPDATE files SET size = ?, mtime_ns = ?, etag = ?, updated_at = ? WHERE key = ?",
            (size, mtime_ns, etag, time.time(), key),
        )

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

    def drop_segments(self, file_key: int) -> list[int]:
        """Delete the segments of ``file_key``; returns their vector keys."""
        old = self.segment_keys([file_key])
        self._write("DELETE FROM segments WHERE file_key = ?", (file_key,))
        return old

    def delete(self, keys: Iterable[int]) -> None:
        """Delete files (and their segments)."""
        for k in keys:
            self._write("DELETE FROM segments WHERE file_key = ?", (k,))
            for (status,) in self._write("DELETE FROM files WHERE key = ? RETURNING status",
                                         (k,)).fetchall():
                self._recount(status, None)

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
        self._db.execute("COMMIT")
        self.generation, self.commit_id = generation, commit_id

    def close(self) -> None:
        """Close; a writer's uncommitted changes are rolled back."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._counts = None
        self._db.close()
