"""``catalog.sqlite.copy``: the catalog's rows as of the last commit, kept by the writer in
the same transaction, which ``pig-engine restore-catalog`` puts back (:func:`put_back`).

The writer runs each of its statements on the catalog and on the copy (a second connection;
the same arguments, so the same keys), so a commit writes what changed twice and still costs
what changed, not the index's size. The copy is committed first, then the catalog (the commit
point), each atomically; a crash between them leaves the copy one commit ahead, which the
next writer sees (the generations differ) and remakes. A writer opening the index checks the
copy (``quick_check``, generation and schema) and remakes it from the checked catalog with
SQLite's online backup when it is missing, behind, of another schema or damaged. The copy
lives beside the catalog (same disk): it covers a damaged sector, a torn copy or a stray
write, not the loss of the disk.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from pig.engine.host.fsutil import fsync_dir, fsync_file, publish
from pig.engine.index.catalog import CATALOG_NAME, COPY_NAME, quick_check

_SIDES = ("-wal", "-shm")


def open_copy(db: sqlite3.Connection, path: Path, generation: int) -> sqlite3.Connection:
    """A connection to the copy of the catalog at ``path`` (open as ``db``, at
    ``generation``), remade first if it is missing, damaged or at another generation."""
    copy = path.parent / COPY_NAME
    if not _usable(copy, generation, _schema(db)):
        _remake(db, copy)
    out = sqlite3.connect(copy, isolation_level=None, check_same_thread=False)
    out.execute("PRAGMA synchronous=FULL")
    out.execute("PRAGMA journal_mode=WAL")
    return out


def _schema(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def _usable(copy: Path, generation: int, schema: list[tuple[str, str, str]]) -> bool:
    """Whether ``copy`` passes ``quick_check`` and holds ``generation`` in ``schema`` (the
    catalog's: an upgrade that added a table or column makes the copy be remade)."""
    if not copy.is_file():
        return False
    try:
        db = sqlite3.connect(copy, isolation_level=None)
        try:
            if quick_check(db) is not None or _schema(db) != schema:
                return False
            row = db.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
            return row is not None and row[0] == str(generation)
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False


def _remove(path: Path) -> None:
    for side in ("", *_SIDES):
        Path(f"{path}{side}").unlink(missing_ok=True)


def _backup(source: sqlite3.Connection, target: Path) -> None:
    """A fresh WAL-mode database at ``target`` holding what ``source`` holds, fsynced."""
    _remove(target)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        source.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        dst.close()  # the last connection checkpoints and removes its -wal
    fsync_file(target)


def _remake(db: sqlite3.Connection, copy: Path) -> None:
    """Replace ``copy`` (and its side files: a stale ``-wal`` would be applied to the new
    file) by a backup of the catalog open as ``db``."""
    tmp = copy.with_name(f"{COPY_NAME}.tmp")
    _backup(db, tmp)
    _remove(copy)
    publish(tmp, copy)


def put_back(path: Path) -> Path | None:
    """Replace the catalog at ``path`` (damaged, or missing) by its copy; returns the name
    the damaged file (with its ``-wal``) is kept under, ``catalog.sqlite.damaged-<time>``
    (None: there was none).
    The caller holds the writer lock and has checked the copy.

    Where SQLite can still open the damaged file, the copy is written into it with the
    backup API, through SQLite's locks and WAL, so a reader that still has it open (a server
    that has not yet noticed) stays consistent. Otherwise (not an SQLite file any more) the
    file is replaced (fsync, rename)."""
    d = path.parent
    aside = d / f"{CATALOG_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
    for side in ("", "-wal"):
        if Path(f"{path}{side}").exists():
            shutil.copyfile(f"{path}{side}", f"{aside}{side}")
            fsync_file(Path(f"{aside}{side}"))
    src = sqlite3.connect(d / COPY_NAME, isolation_level=None)
    try:
        if not _write_into(src, path):
            tmp = d / f"{CATALOG_NAME}.restoring"
            _backup(src, tmp)
            for side in _SIDES:  # a stale -wal would be applied to the new file
                Path(f"{path}{side}").unlink(missing_ok=True)
            publish(tmp, path)
    finally:
        src.close()
    fsync_dir(d)
    return aside if aside.exists() else None


def _write_into(src: sqlite3.Connection, path: Path) -> bool:
    """Back ``src`` up into the SQLite database at ``path``; False if it is not one."""
    if not path.is_file():
        return False
    try:
        dst = sqlite3.connect(path, isolation_level=None)
        try:
            src.backup(dst)
            return quick_check(dst) is None
        finally:
            dst.close()
    except sqlite3.DatabaseError:
        return False
