"""``VideoIndex``: an index directory of video vectors (usearch + SQLite catalog + manifest).

Directory layout::

    manifest.json              settings, bundle fingerprint, summary of the last commit
    catalog.sqlite (+ -wal)    one row per file and per segment; ``meta``: generation (the
                               commit point), the vectors files with their checksums, a copy
                               of the manifest; ``tombstones``: keys whose base vector is dead
    base.<generation>.usearch  immutable HNSW of the vectors as of the last compaction
    delta.<generation>.usearch HNSW of the vectors added since (rewritten at each commit)
    lock                       flock held by the one writer

Commit protocol (:meth:`VideoIndex.commit`): write the new delta, or at a compaction the new
base, as ``<kind>.<g+1>.usearch`` (temp name, fsync, rename, fsync dir; its size, count and
xxh3-128 checksum are noted); commit the catalog rows, the new tombstones, the list of vectors
files and ``generation = g+1`` in one SQLite transaction (this is the commit point); rewrite
the manifest; delete the files of older generations. A commit writes the delta (what changed
since the last compaction), not the whole index; it compacts when the delta plus the
tombstones pass ``COMPACT_RATIO`` of the base (or on :meth:`VideoIndex.compact`). A crash
before the catalog commit leaves generation ``g`` with its own files (the orphan ``g+1`` file
is removed by the next writer); a crash after it leaves ``g+1`` complete (a stale manifest
summary is repaired by the next writer). Readers use the catalog's generation, never the
manifest's: :meth:`VideoIndex.committed_generation` is the cheap check for a new commit.
Every vectors file is verified against its recorded checksum before use.

Typical use by an indexing run::

    with VideoIndex.open_or_create(d, fingerprint=fp, dim=512, bundle_info=info) as idx:
        plan = idx.plan(path)
        if plan.action == "embed":
            ...  # decode + encode, then either
            idx.add([Entry.from_file(path, frames=n, digest=plan.digest, spans=spans)],
                    vectors)  # one vector per span: a file's segments are added together
            idx.record_failure(path, "no video stream")
        idx.commit()  # periodically; leaving the ``with`` block normally commits too
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from pig.engine.host.fsutil import fsync_dir, publish, sqlite_out_of_space, write_atomic
from pig.engine.index.catalog import (
    CATALOG_NAME,
    COPY_NAME,
    FAILED,
    INDEXED,
    Catalog,
    FileRecord,
    SegmentRecord,
    file_digest,
    restore_hint,
)
from pig.engine.index.lock import LOCK_NAME, DirLock
from pig.engine.index.manifest import DTYPES, MANIFEST_NAME, IndexManifest
from pig.engine.index.vectors import (
    FileIdentity,
    PartMissingError,
    Subset,
    VectorSet,
    VectorStore,
    check_unit_vectors,
)
from pig.engine.media import sources
from pig.engine.media.segments import Segmenting
from pig.errors import IndexDamaged, IndexIOError, IndexStoreError

_OPEN_RETRIES = 100  # a reader racing writers' commits retries with the newer generation
EXACT_SEARCH_MAX = 10_000  # auto mode scans up to this many vectors (bench_search: ~1 ms)
FILTER_CACHE = 64  # filters whose matching segments a reader keeps ...
FILTER_CACHE_BYTES = 512 << 20  # ... and at most this much of them (keys and codes)
COMPACT_RATIO = 0.1  # a commit compacts when delta + tombstones pass this share of the base
_PART_PREFIXES = ("base.", "delta.", "vectors.")  # vectors.* : files of format 1


def _abspath(path: str | os.PathLike[str]) -> str:
    return sources.identity(path)


def _is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def _is_regular(path: str) -> bool:
    try:
        return sources.stat(path) is not None
    except OSError:
        return False


def _part_name(kind: str, generation: int) -> str:
    return f"{kind}.{generation:06d}.usearch"


SegmentSpan = tuple[float, float | None]  # (start_s, end_s); end None: unknown
WHOLE_FILE: tuple[SegmentSpan, ...] = ((0.0, None),)


@dataclass(frozen=True)
class Entry:
    """A file whose vectors are being added: absolute path, stat, content digest, frame count
    and the spans of its segments, one vector each (default: one whole-file segment)."""

    path: str
    size: int
    mtime_ns: int | None
    digest: str
    frames: int
    spans: tuple[SegmentSpan, ...] = WHOLE_FILE
    etag: str | None = None  # an object's ETag (URL sources)
    facts: dict[str, Any] = field(default_factory=dict)  # stream facts (catalog FACT_COLUMNS)
    thumbnails: tuple[bytes | None, ...] = ()  # a JPEG per span (pig.engine.media.thumbnails)
    meta: dict[str, Any] | None = None  # user metadata to set (None: keep the recorded one)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, frames: int, digest: str | None = None,
        spans: tuple[SegmentSpan, ...] = WHOLE_FILE,
    ) -> Entry:
        """Stat (and, unless ``digest`` is given, hash) ``path`` now."""
        p = _abspath(path)
        st = os.stat(p)
        return cls(p, st.st_size, st.st_mtime_ns, digest or file_digest(p), frames, spans)


@dataclass(frozen=True)
class Plan:
    """What an indexing run should do with one file.

    ``action``: ``"embed"`` or ``"skip"``. ``reason``: ``new``, ``changed`` (content differs),
    ``retry`` (failed before) -> embed; ``unchanged`` (same size+mtime), ``touched`` (new
    size/mtime, same content: catalog updated), ``failed`` (failed before, unchanged, and
    ``retry_failed=False``) -> skip; ``resume`` (committed in part, unchanged) -> embed from
    segment ``resume`` on. ``digest`` is set when the plan had to hash the file.
    """

    path: str
    action: Literal["embed", "skip"]
    reason: str
    digest: str | None = None
    resume: int = 0  # segments already committed (reason "resume")


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result: the file's catalog key, absolute path, inner-product score (cosine),
    the matching segment: its ordinal and span in seconds (``end_s`` None: unknown), and
    ``index``, the position of the hit's index among those searched together (0 for one
    index; :func:`~pig.engine.index.shards.search_shards` sets it): a key is unique only
    within its index."""

    key: int
    path: str
    score: float
    segment: int = 0
    start_s: float = 0.0
    end_s: float | None = None
    index: int = 0
    moments: tuple[Moment, ...] = ()  # grouped by video with moments: the file's best spans


@dataclass(frozen=True, slots=True)
class Moment:
    """A span of a file that matches a query: its segments' ordinals (several when adjacent
    hits were merged), from the first's start to the last's end, and the best score."""

    segments: tuple[int, ...]
    start_s: float
    end_s: float | None
    score: float


GROUP_BY = ("video", "segment")


class VideoIndex:
    """An open index directory; see the module docstring. Create with :meth:`create`,
    :meth:`open` or :meth:`open_or_create`; close with :meth:`close` or a ``with`` block.
    Not thread-safe: call it from one thread at a time. OS errors (permissions, a full disk)
    surface as :class:`IndexStoreError` naming the directory."""

    def __init__(
        self,
        directory: Path,
        manifest: IndexManifest,
        catalog: Catalog,
        vectors: VectorSet,
        lock: DirLock | None,
        view: bool,
    ) -> None:
        self.path = directory
        self.manifest = manifest
        self._catalog = catalog
        self._vectors = vectors
        self._lock = lock
        self.view = view
        self._dirty = False
        self._filter_cache: dict[tuple[str, tuple[Any, ...]], Subset] = {}
        self._summary: dict[str, Any] | None = None

    # --- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        fingerprint: str,
        dim: int,
        bundle_info: dict[str, Any],
        dtype: str = "f16",
        connectivity: int | None = None,
        expansion_add: int | None = None,
        expansion_search: int | None = None,
        unit_vectors: bool = True,
        segmenting: Segmenting | None = None,
    ) -> VideoIndex:
        """Create an empty index in a new or empty ``directory``; returns it open for writing.

        ``fingerprint``: the bundle's model fingerprint (vectors of other bundles are refused
        later). ``bundle_info``: JSON-able facts about the producer (precision, backend, ...).
        ``segmenting``: how files are cut into segments (default ``Segmenting()``, auto).
        ``dtype``: storage of the vectors, ``f16`` (default), ``i8`` or ``f32``. The usearch
        HNSW settings default to usearch's own (connectivity 16, expansion 128/64).
        ``unit_vectors``: False for a bundle whose video vectors are not unit length.
        """
        d = Path(directory).absolute()
        if dtype not in DTYPES:
            raise IndexStoreError(f"{d}: unknown index dtype {dtype!r} (choose from {DTYPES})")
        if dtype == "i8" and not unit_vectors:
            raise IndexStoreError(f"{d}: i8 storage scores by cosine, which equals the inner "
                                  "product only on unit vectors, and this bundle's video "
                                  "vectors are not unit length; use f16 or f32")
        if dim <= 0:
            raise IndexStoreError(f"{d}: embedding dimension must be positive, got {dim}")
        settings = VectorStore.usearch_settings(
            dtype, connectivity, expansion_add, expansion_search, str(d)
        )
        if d.exists() and not d.is_dir():
            raise IndexStoreError(f"{d}: exists and is not a directory")
        cls.check_writable(d)
        with _os_errors(d):
            d.mkdir(parents=True, exist_ok=True)
            lock = DirLock(d)
        try:
            if (d / MANIFEST_NAME).exists():
                raise IndexStoreError(f"{d}: an index already exists here")
            foreign = [p.name for p in d.iterdir() if not _is_index_file(p.name)]
            if foreign:
                raise IndexStoreError(f"{d}: directory is not empty (contains {foreign[0]!r})")
            _remove_stale(d, keep=[])
            manifest = IndexManifest(
                fingerprint=fingerprint,
                dim=int(dim),
                dtype=dtype,
                usearch=settings,
                bundle_producers=[dict(bundle_info)],
                unit_vectors=unit_vectors,
                segmenting=(segmenting or Segmenting()).to_dict(),
            )
            with _os_errors(d):
                catalog = Catalog.create(d / CATALOG_NAME)
        except BaseException:
            lock.release()
            raise
        idx = cls(d, manifest, catalog, VectorSet.empty(int(dim), dtype, settings), lock, False)
        try:
            idx.commit(force=True)  # generation 1; the manifest appears last
        except BaseException:
            idx.close()
            raise
        return idx

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fingerprint: str | None = None,
        view: bool = False,
        writable: bool = False,
        bundle_info: dict[str, Any] | None = None,
    ) -> VideoIndex:
        """Open an existing index.

        ``fingerprint``: if given, must equal the index's bundle fingerprint. ``view=True``
        memory-maps the vectors read-only instead of loading them into RAM. ``writable=True``
        takes the directory's writer lock (a second writer gets a clear error), loads the
        vectors into RAM and records ``bundle_info`` as a producer; it is refused, before any
        work, where this process cannot write (:meth:`check_writable`). Readers never lock
        and create no file: they see the last commit as of opening, also in a folder that is
        read-only (see :mod:`pig.engine.index.catalog`).
        """
        d = Path(directory).absolute()
        if writable and view:
            raise IndexStoreError(f"{d}: a memory-mapped view is read-only; open without view")
        manifest = _read_manifest(d)
        if fingerprint is not None and fingerprint != manifest.fingerprint:
            raise IndexStoreError(
                f"{d}: index holds vectors of bundle {manifest.fingerprint[:16]}, not of the "
                f"given bundle {fingerprint[:16]}; use that bundle or another index directory"
            )
        if writable:
            cls.check_writable(d)
        with _os_errors(d):
            lock = DirLock(d) if writable else None
        try:
            with _os_errors(d):
                catalog, vectors = cls._load(d, manifest, writable, view)
        except BaseException:
            if lock:
                lock.release()
            raise
        idx = cls(d, manifest, catalog, vectors, lock, view)
        if writable:
            if bundle_info is not None and bundle_info not in manifest.bundle_producers:
                manifest.bundle_producers.append(dict(bundle_info))
                idx._dirty = True
            try:
                with _os_errors(d):
                    _remove_stale(d, keep=vectors.files())
                    if manifest.generation != catalog.generation:  # crash after commit point
                        idx._write_manifest()
                idx._fill_facts()
            except BaseException:
                idx.close()
                raise
        return idx

    @classmethod
    def open_or_create(
        cls,
        directory: str | os.PathLike[str],
        *,
        fingerprint: str,
        dim: int,
        bundle_info: dict[str, Any],
        dtype: str | None = None,
        unit_vectors: bool = True,
        segmenting: Segmenting | None = None,
        **usearch_settings: int | None,
    ) -> VideoIndex:
        """Open ``directory`` for writing if it holds an index, else create one there.

        An explicit ``dtype``, usearch setting or ``segmenting`` that differs from an existing
        index's is an error; ``None`` accepts what the index has (the defaults for a new one).
        """
        d = Path(directory).absolute()
        if not (d / MANIFEST_NAME).exists() and _never_committed(d):
            return cls.create(
                d,
                fingerprint=fingerprint,
                dim=dim,
                bundle_info=bundle_info,
                dtype=dtype or "f16",
                unit_vectors=unit_vectors,
                segmenting=segmenting,
                **usearch_settings,
            )
        idx = cls.open(d, fingerprint=fingerprint, writable=True, bundle_info=bundle_info)
        try:
            idx.require_segmenting(segmenting)
        except IndexStoreError:
            idx.close()
            raise
        m = idx.manifest
        wanted = {"dtype": dtype, "dim": dim, **usearch_settings}
        have = {"dtype": m.dtype, "dim": m.dim, **m.usearch}
        for name, value in wanted.items():
            if value is not None and value != have.get(name):
                idx.close()
                raise IndexStoreError(
                    f"{d}: existing index has {name}={have.get(name)}, not {value}; "
                    "use another index directory to change it"
                )
        return idx

    @staticmethod
    def check_writable(directory: str | os.PathLike[str]) -> None:
        """Refuse, before any work, to write an index where this process cannot write.

        Checks the folder (or, if it does not exist yet, the folder it would be created in),
        the catalog and the lock file. Readers need none of this: see :meth:`open`.
        """
        d = Path(directory).absolute()
        folder = next(p for p in (d, *d.parents) if p.exists())
        for p in (folder, d / CATALOG_NAME, d / LOCK_NAME):
            if p.exists() and not os.access(p, os.W_OK):
                raise IndexStoreError(f"{d}: cannot write the index here ({p} is not writable)")

    @staticmethod
    def _load(d: Path, m: IndexManifest, writable: bool, view: bool,
              name: str = CATALOG_NAME) -> tuple[Catalog, VectorSet]:
        for _ in range(_OPEN_RETRIES):
            catalog = Catalog(d / name, writable=writable)
            try:
                if catalog.generation < 1 or catalog.generation < m.generation:
                    raise IndexDamaged(
                        f"{d}: catalog generation {catalog.generation} does not match manifest "
                        f"generation {m.generation}; the index is corrupt"
                    )
                vectors = VectorSet.open(
                    d, catalog.parts(), catalog.tombstones(), m.dim, m.dtype, m.usearch,
                    writable=writable, view=view,
                )
                segments = catalog.segment_count()
                if len(vectors) != segments:
                    raise IndexDamaged(
                        f"{d}: the vectors files hold {len(vectors)} vectors but the catalog "
                        f"lists {segments} segments; the index is corrupt"
                    )
                return catalog, vectors
            except PartMissingError as gone:
                catalog.close()
                missing = Path(str(gone)).name
                if writable:  # no concurrent writer can have deleted it
                    break
            except BaseException:
                catalog.close()
                raise
        raise IndexDamaged(f"{d}: vectors file {missing} is missing; the index is corrupt")

    @staticmethod
    def committed_generation(directory: str | os.PathLike[str]) -> int:
        """The generation of the last commit in ``directory`` (one catalog query, ~1 ms):
        a reader whose :attr:`generation` is lower can reopen to see the new commit."""
        catalog = Catalog(Path(directory).absolute() / CATALOG_NAME, writable=False)
        try:
            return catalog.generation
        finally:
            catalog.close()

    @staticmethod
    def committed_id(directory: str | os.PathLike[str]) -> str:
        """The id of the last commit in ``directory``, unique per commit (one catalog query):
        a reader whose :attr:`commit_id` differs holds another commit, or another index that
        took the folder's place, whatever its generation number."""
        catalog = Catalog(Path(directory).absolute() / CATALOG_NAME, writable=False)
        try:
            return catalog.commit_id
        finally:
            catalog.close()

    def changed_files(self) -> list[str]:
        """Why the vectors files this reader opened are no longer the ones it verified (one
        line each: gone, or another size, modification time or inode), cheaply (a stat
        each); [] while they are."""
        changed = []
        for name, opened in self._vectors.opened.items():
            try:
                st = os.stat(self.path / name)
            except OSError as exc:
                changed.append(f"{self.path / name}: {exc.strerror or 'gone'} since it was opened")
                continue
            now = FileIdentity.of(st)
            if now != opened:
                changed.append(f"{self.path / name}: changed in place since it was opened "
                               f"({opened.differs(now)}); index files are never to be "
                               "modified in place")
        return changed

    @classmethod
    def restore_manifest(cls, directory: str | os.PathLike[str]) -> IndexManifest:
        """Rewrite a lost or unreadable ``manifest.json`` from the copy the catalog keeps of
        it (as of the last commit); takes the writer lock."""
        d = Path(directory).absolute()
        cls.check_writable(d)
        with _os_errors(d):
            lock = DirLock(d)
        try:
            with contextlib.closing(Catalog(d / CATALOG_NAME, writable=False)) as catalog:
                catalog.check()
                text = catalog.manifest_copy()
            if text is None:
                raise IndexStoreError(f"{d / CATALOG_NAME}: the catalog holds no manifest copy")
            with _os_errors(d):
                write_atomic(d / MANIFEST_NAME, text.encode())
            return IndexManifest.read(d)
        finally:
            lock.release()

    @classmethod
    def restore_catalog(cls, directory: str | os.PathLike[str]) -> tuple[int, Path | None]:
        """Put back the copy of the last commit's catalog (:mod:`~pig.engine.index.catalog_copy`)
        in place of a damaged (or lost) ``catalog.sqlite``, once the copy and the vectors files
        it names are verified; takes the writer lock. Refused when the catalog is not damaged
        (nothing is ever rolled back) or the copy is behind the last commit. Returns the
        restored generation and the name the damaged file is kept under (None: it was lost)."""
        from pig.engine.index.catalog_copy import put_back

        d = Path(directory).absolute()
        main, copy = d / CATALOG_NAME, d / COPY_NAME
        cls.check_writable(d)
        with _os_errors(d):
            lock = DirLock(d)
        try:
            if not copy.is_file():
                raise IndexStoreError(f"{copy}: no copy of the catalog is kept here (the index "
                                      "was last written by a version that kept none); restore "
                                      "the folder from a backup, or index the videos again")
            if main.is_file():
                try:
                    with contextlib.closing(Catalog(main, writable=False)) as current:
                        current.check()
                except IndexDamaged:
                    pass
                else:
                    raise IndexStoreError(f"{main}: the catalog is not damaged (quick_check "
                                          "passes); nothing to restore")
            with contextlib.closing(Catalog(copy, writable=False)) as saved:
                saved.check()
                generation = saved.generation
            manifest = _read_manifest(d, catalog_name=COPY_NAME)
            if manifest.generation > generation:
                raise IndexDamaged(f"{copy}: holds generation {generation}, but the last commit "
                                   f"was {manifest.generation}: {restore_hint(copy)}")
            with _os_errors(d):
                catalog, _ = cls._load(d, manifest, False, True, name=COPY_NAME)
                catalog.close()
                aside = put_back(main)
        finally:
            lock.release()
        cls.open(d, writable=True).close()  # checks it, remakes the copy, repairs the manifest
        return generation, aside

    # --- properties ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def dtype(self) -> str:
        return self.manifest.dtype

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def segmenting(self) -> Segmenting:
        """How this index cuts files into segments (fixed when it was created)."""
        return Segmenting.from_dict(self.manifest.segmenting)

    def require_segmenting(self, segmenting: Segmenting | None) -> None:
        """Refuse, in one line naming both, a ``segmenting`` other than the index's."""
        if segmenting is not None and segmenting != self.segmenting:
            raise IndexStoreError(
                f"{self.path}: the index segments files as {self.segmenting.describe()}, not "
                f"{segmenting.describe()}; use another index directory to change it"
            )

    @property
    def generation(self) -> int:
        """Generation of the last commit (what a crash right now would leave)."""
        return self._catalog.generation

    @property
    def commit_id(self) -> str:
        """Id of the commit this index holds, unique per commit (see :meth:`committed_id`)."""
        return self._catalog.commit_id

    @property
    def writable(self) -> bool:
        return self._lock is not None

    @property
    def dirty(self) -> bool:
        """True when there are changes that :meth:`commit` has not yet made durable."""
        return self._dirty

    def counts(self) -> dict[str, int]:
        """``vectors`` (in the usearch index, one per segment), ``indexed`` and ``failed``
        (catalog file rows)."""
        return {"vectors": len(self._vectors), **self._catalog.counts()}

    def storage(self) -> dict[str, Any]:
        """How the vectors are stored: ``base``/``delta`` vector counts (the base's include
        its ``tombstones``, dead until the next compaction) and the committed ``files``."""
        return {**self._vectors.sizes(), "files": self._vectors.files(),
                "compact_ratio": COMPACT_RATIO}

    def longest(self) -> tuple[str, float] | None:
        """The indexed file with the longest known span, and that length in seconds."""
        return self._catalog.longest()

    def segments_of(self, path: str | os.PathLike[str]) -> list[SegmentRecord]:
        """The segments of ``path`` (made absolute) in time order; empty if not indexed."""
        rec = self.lookup(path)
        if rec is None:
            return []
        rows = self._catalog.segments(self._catalog.segment_keys([rec.key]))
        return sorted(rows.values(), key=lambda r: r.ordinal)

    def _fill_facts(self) -> None:
        """Stream facts of the files of a catalog upgraded by this writer, read from the files
        that are still the ones indexed (pending until commit)."""
        from pig.engine.media.video import stream_facts  # PyAV, only for an upgrade

        todo = self._catalog.unfilled()
        if todo is None:
            return
        for rec in todo:
            with contextlib.suppress(OSError):
                st = os.stat(rec.path)
                if (st.st_size, st.st_mtime_ns) == (rec.size, rec.mtime_ns):
                    facts = stream_facts(rec.path)
                    if facts:
                        self._catalog.set_facts(rec.key, facts)
        self._catalog.facts_filled()
        self._dirty = True

    def check_catalog(self) -> None:
        """Raise :class:`~pig.errors.IndexDamaged` if the catalog's ``quick_check`` finds a
        problem (0.35 s at 1M files; a writer does this on opening)."""
        self._catalog.check()

    # --- catalog queries -----------------------------------------------------------------
    def facts(self, keys: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Stream facts and user metadata (``meta``) of files ``keys`` (hits' ``key``)."""
        return self._catalog.facts(keys)

    def set_meta(self, path: str | os.PathLike[str], meta: dict[str, Any]) -> bool:
        """Replace the user metadata of the indexed or failed file ``path`` (pending until
        commit); False when the catalog has no such file."""
        self._require_writable()
        rec = self.lookup(path)
        if rec is None:
            return False
        self._catalog.set_meta(rec.key, meta)
        self._dirty = True
        return True

    def matching(self, where: str, params: Sequence[Any]) -> Subset:
        """The segments a filter admits (``where``: SQL over the catalog's ``FIELDS``, built
        by :mod:`pig.engine.query.filters`), for :meth:`search`'s ``allowed``. A reader keeps
        the last ones (up to ``FILTER_CACHE`` entries and ``FILTER_CACHE_BYTES`` with their
        codes): its generation never changes."""
        if self.writable:
            return Subset(self._catalog.matching(where, list(params)))
        cache_key = (where, tuple(params))
        found = self._filter_cache.pop(cache_key, None)
        if found is None:
            found = Subset(self._catalog.matching(where, list(params)))
        self._filter_cache[cache_key] = found  # the newest last
        while len(self._filter_cache) > FILTER_CACHE or (
                len(self._filter_cache) > 1 and sum(
                    s.nbytes for s in self._filter_cache.values()) > FILTER_CACHE_BYTES):
            self._filter_cache.pop(next(iter(self._filter_cache)))
        return found

    def summary(self) -> dict[str, Any]:
        """What is indexed (:meth:`Catalog.summary`); a reader computes it once."""
        if self.writable or self._summary is None:
            self._summary = self._catalog.summary()
        return self._summary

    def thumbnail(self, file_key: int, ordinal: int) -> bytes | None:
        """The JPEG thumbnail of segment ``ordinal`` of the indexed file ``file_key``."""
        key = self._catalog.segment_key(file_key, ordinal)
        return None if key is None else self._catalog.thumbnail(key)

    def segment_key(self, file_key: int, ordinal: int) -> int | None:
        """The vector key of segment ``ordinal`` of the indexed file ``file_key``."""
        return self._catalog.segment_key(file_key, ordinal)

    def vectors_of(self, keys: Sequence[int]) -> np.ndarray:
        """The stored vectors of segment ``keys`` as float32 ``[N, dim]`` (as stored: f16/i8
        carry their quantisation error)."""
        return self._vectors.get(np.asarray(keys, dtype=np.int64))

    def lookup(self, path: str | os.PathLike[str]) -> FileRecord | None:
        """The catalog row of ``path`` (made absolute), or None."""
        return self._catalog.lookup(_abspath(path))

    def record(self, key: int) -> FileRecord | None:
        """The catalog row with ``key`` (a hit's ``key``), or None."""
        path = self._catalog.paths([key]).get(key)
        return None if path is None else self._catalog.lookup(path)

    def records(self, status: str | None = None) -> Iterator[FileRecord]:
        """All catalog rows, or those with ``status`` (``"indexed"``/``"failed"``)."""
        return self._catalog.records(status)

    def failed(self) -> list[FileRecord]:
        """Files recorded as failed, with their ``error``."""
        return list(self._catalog.records(FAILED))

    def plan(self, path: str | os.PathLike[str], *, retry_failed: bool = True) -> Plan:
        """Decide whether ``path`` needs embedding (see :class:`Plan`).

        Same size and mtime as the catalog -> unchanged, without reading the file. Otherwise
        the content is hashed: the same digest only updates size/mtime (pending until commit;
        needs a writable index), a different one means re-embed. An unreadable file is
        planned for embedding so that the decoder records why it fails.
        """
        p = _abspath(path)
        rec = self._catalog.lookup(p)
        if rec is None:
            return Plan(p, "embed", "new")
        try:
            st = sources.stat(p)
        except OSError:
            st = None
        if st is None:
            return Plan(p, "embed", "retry" if rec.status == FAILED else "changed")
        same_stat = sources.same((rec.size, rec.mtime_ns, rec.etag), st)
        if rec.status == FAILED:
            if same_stat and not retry_failed:
                return Plan(p, "skip", "failed")
            return Plan(p, "embed", "retry")
        partial = self._catalog.partial(rec.key).get(rec.key) if same_stat else None
        if partial is not None:
            return Plan(p, "embed", "resume", rec.digest, resume=partial[1])
        if same_stat:
            return Plan(p, "skip", "unchanged")
        if sources.is_url(p) and st.size != rec.size:
            return Plan(p, "embed", "changed")  # its digest comes with the copy decoded
        try:
            digest = sources.digest(p)
        except OSError:  # gone, unreadable or no longer a regular file: the worker says why
            return Plan(p, "embed", "changed")
        if digest != rec.digest:
            return Plan(p, "embed", "changed", None if sources.is_url(p) else digest)
        self._require_writable()
        self._catalog.touch(rec.key, st.size, st.mtime_ns, st.etag)
        self._dirty = True
        return Plan(p, "skip", "touched", digest)

    # --- changes (pending until commit) ----------------------------------------------------
    def _require_writable(self) -> None:
        if not self.writable:
            raise IndexStoreError(f"{self.path}: index is open read-only (open it writable)")

    def add(self, entries: Sequence[Entry], vectors: Any) -> list[int]:
        """Add the files of ``entries`` with one unit vector per segment (float [N, dim], the
        entries' spans in order); returns the files' keys.

        A path already in the catalog keeps its key and all of its old segments are replaced;
        a path that had failed becomes indexed. Wrong dims, NaN or non-unit vectors are
        refused and nothing is changed.
        """
        self._require_writable()
        x = check_unit_vectors(vectors, self.dim, str(self.path),
                               unit=self.manifest.unit_vectors)
        n_segments = sum(len(e.spans) for e in entries)
        if n_segments != len(x) or any(not e.spans for e in entries):
            raise IndexStoreError(f"{self.path}: {len(entries)} entries with {n_segments} "
                                  f"segments but {len(x)} vectors")
        paths = [_abspath(e.path) for e in entries]
        if len(set(paths)) != len(paths):
            raise IndexStoreError(f"{self.path}: the same path appears twice in one add")
        keys, replaced, vector_keys = [], [], []
        for e, p in zip(entries, paths, strict=True):
            key, _ = self._catalog.upsert(
                p,
                status=INDEXED,
                size=e.size,
                mtime_ns=e.mtime_ns,
                digest=e.digest,
                frames=e.frames,
                etag=e.etag,
            )
            keys.append(key)
            self._catalog.set_facts(key, {"duration_s": e.spans[-1][1], **e.facts})
            if e.meta is not None:
                self._catalog.set_meta(key, e.meta)
            self._catalog.set_partial(key, None)
            dropped, new = self._catalog.set_segments(key, e.spans)
            if e.thumbnails:
                self._catalog.set_thumbnails(new, e.thumbnails)
            replaced += dropped
            vector_keys += new
        self._vectors.remove(replaced)
        self._vectors.add(np.asarray(vector_keys, dtype=np.int64), x)
        self._dirty = True
        return keys

    def record_failure(
        self, path: str | os.PathLike[str], reason: str, frames: int | None = None
    ) -> None:
        """Record that ``path`` could not be indexed and why; drops any vector it had."""
        self._require_writable()
        p = _abspath(path)
        try:
            st = sources.stat(p)
        except OSError:
            st = None
        key, _ = self._catalog.upsert(
            p, status=FAILED, size=None if st is None else st.size,
            mtime_ns=None if st is None else st.mtime_ns, frames=frames, error=reason,
            etag=None if st is None else st.etag,
        )
        self._catalog.set_partial(key, None)
        self._vectors.remove(self._catalog.drop_segments(key))
        self._dirty = True

    def extend(self, entry: Entry, first: int, vectors: Any, *, complete: bool,
               total: int | None = None) -> int:
        """Add segments ``first, first + 1, ...`` of ``entry`` (its ``spans``, one vector
        each) as they are encoded; returns the file's key. ``first == 0`` replaces what the
        file had. Until ``complete`` the file is *partial*: indexed and searchable up to its
        last span's end, and a later run resumes it (:meth:`plan`) after that segment."""
        self._require_writable()
        p = _abspath(entry.path)
        if first == 0:
            [key] = self.add([entry], vectors)
        else:
            rec = self._catalog.lookup(p)
            done = self._catalog.partial(rec.key).get(rec.key) if rec is not None else None
            if rec is None or done is None or done[1] != first:
                raise IndexStoreError(f"{self.path}: {p} does not have {first} segments "
                                      "committed to extend")
            key = rec.key
            if entry.spans:
                x = check_unit_vectors(vectors, self.dim, str(self.path),
                                       unit=self.manifest.unit_vectors)
                if len(entry.spans) != len(x):
                    raise IndexStoreError(f"{self.path}: {len(entry.spans)} segments but "
                                          f"{len(x)} vectors")
                keys = self._catalog.append_segments(key, first, entry.spans)
                if entry.thumbnails:
                    self._catalog.set_thumbnails(keys, entry.thumbnails)
                self._catalog.set_facts(key, {"duration_s": entry.spans[-1][1]})
                self._vectors.add(np.asarray(keys, dtype=np.int64), x)
            self._dirty = True
        if complete:
            self._catalog.set_partial(key, None)
        else:
            done_s = entry.spans[-1][1] if entry.spans else None
            self._catalog.set_partial(key, done_s or 0.0, total)
        return key

    def partial(self) -> list[tuple[str, float, int, int | None]]:
        """Files committed in part: (path, seconds done, segments committed, total or None)."""
        rows = self._catalog.partial()
        paths = self._catalog.paths(rows)
        return sorted((paths[k], *v) for k, v in rows.items() if k in paths)

    def remove(self, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
        """Remove files (or every file under a given folder); returns the removed paths."""
        self._require_writable()
        removed: dict[int, FileRecord] = {}
        for raw in paths:
            p = _abspath(raw)
            rec = self._catalog.lookup(p)
            rows = [rec] if rec else self._catalog.under(p)
            removed.update((r.key, r) for r in rows)
        vector_keys = self._catalog.segment_keys(removed)
        self._catalog.delete(removed)
        self._vectors.remove(vector_keys)
        self._dirty = self._dirty or bool(removed)
        return [r.path for r in removed.values()]

    def move(self, old: str | os.PathLike[str], new: str | os.PathLike[str],
             new_stat: sources.SourceStat | None = None) -> None:
        """Record that the file indexed at ``old`` is now at ``new`` with the same content:
        its key, segments and vectors (and whatever else hangs on them) stay; ``new_stat``
        (size, mtime_ns) defaults to ``new``'s. Pending until commit."""
        self._require_writable()
        src, dst = _abspath(old), _abspath(new)
        rec = self._catalog.lookup(src)
        if rec is None:
            raise IndexStoreError(f"{self.path}: {src} is not in the index")
        if self._catalog.lookup(dst) is not None:
            raise IndexStoreError(f"{self.path}: {dst} is already in the index")
        st = new_stat or sources.stat(dst)
        if st is None:
            raise IndexStoreError(f"{self.path}: {dst} does not exist")
        self._catalog.rename(rec.key, dst, st.size, st.mtime_ns, st.etag)
        self._dirty = True

    def relocate(self, old_prefix: str | os.PathLike[str], new_prefix: str | os.PathLike[str],
                 *, check: bool = True) -> list[tuple[str, str]]:
        """Rewrite the paths of the files at or under ``old_prefix`` to lie under
        ``new_prefix`` (a library moved to another mount), without encoding; returns the
        (old, new) pairs. ``check``: refuse unless every new path is a regular file. A new
        path already in the index is refused. Pending until commit."""
        self._require_writable()
        src, dst = _abspath(old_prefix), _abspath(new_prefix)
        rec = self._catalog.lookup(src)
        rows = [rec] if rec else self._catalog.under(src)
        pairs = [(r, dst + r.path[len(src):]) for r in rows]
        moving = {r.path for r in rows}
        taken = next((new for _, new in pairs
                      if new not in moving and self._catalog.lookup(new) is not None), None)
        if taken is not None:
            raise IndexStoreError(f"{self.path}: {taken} is already in the index")
        gone = [new for _, new in pairs if not _is_regular(new)] if check else []
        if gone:
            raise IndexStoreError(
                f"{gone[0]}: no such file ({len(gone)} of the {len(pairs)} new paths are "
                "missing); check --to, or give --no-check to rewrite the paths anyway")
        # through temporary names, so that prefixes that nest or swap never collide; size and
        # mtime stay those of the indexed file: a copy's new mtime is checked (content digest)
        # by the next sync
        for r, _ in pairs:
            self._catalog.rename(r.key, f"relocating:{r.key}", r.size, r.mtime_ns, r.etag)
        for r, new in pairs:
            self._catalog.rename(r.key, new, r.size, r.mtime_ns, r.etag)
        self._dirty = self._dirty or bool(pairs)
        return [(r.path, new) for r, new in pairs]

    def under(self, folder: str | os.PathLike[str]) -> list[FileRecord]:
        """The catalog rows at ``folder`` (a file) or inside it."""
        p = _abspath(folder)
        rec = self._catalog.lookup(p)
        return [rec] if rec else self._catalog.under(p)

    def count_under(self, folder: str | os.PathLike[str]) -> int:
        """How many catalog rows :meth:`under` gives."""
        p = _abspath(folder)
        return 1 if self._catalog.lookup(p) else self._catalog.count_under(p)

    def segment_counts(self) -> dict[int, int]:
        """Segments per indexed file key."""
        return self._catalog.segment_counts()

    def record_skipped(self, roots: Sequence[str | os.PathLike[str]],
                       skipped: Sequence[tuple[str, str]]) -> None:
        """Replace the manifest's list of paths that discovery under ``roots`` passed over
        (``(path, reason)``: unreadable folders, FIFOs, sockets, ...); others' entries stay.
        Pending until commit."""
        self._require_writable()
        tops = [_abspath(r) for r in roots]
        kept = [e for e in self.manifest.skipped
                if not any(_is_under(e["path"], top) for top in tops)]
        new = kept + [{"path": p, "reason": why} for p, why in skipped]
        if new != self.manifest.skipped:
            self.manifest.skipped = new
            self._dirty = True

    # --- search --------------------------------------------------------------------------
    def search(
        self, queries: Any, k: int = 10, *, exact: bool | None = None,
        group_by: str = "video", allowed: Subset | None = None,
    ) -> list[list[Hit]]:
        """Top ``k`` hits per query (unit float [Q, dim] or [dim]), best first.

        ``group_by="video"``: one hit per file, its best segment; ``k`` distinct files whenever
        the index holds that many (more candidates are fetched until it does).
        ``"segment"``: the top ``k`` segments. ``score`` is the inner product of query and
        stored vector (as stored: f16/i8 carry their quantisation error). ``exact=True`` is a
        brute-force scan, ``False`` HNSW, and ``None`` (default) the scan up to
        ``EXACT_SEARCH_MAX`` vectors, where it costs about a millisecond and HNSW saves
        nothing, HNSW above. Changes not yet committed are visible to the writer that made them.
        ``allowed``: only the segments of a filter (:meth:`matching`), searched as
        :meth:`VectorSet.search` says.
        """
        if group_by not in GROUP_BY:
            raise IndexStoreError(f"unknown group_by {group_by!r} (choose from {GROUP_BY})")
        q = check_unit_vectors(queries, self.dim, str(self.path))
        if exact is None:
            exact = len(self._vectors) <= EXACT_SEARCH_MAX
        total = len(self._vectors) if allowed is None else len(allowed.keys)
        fetch = min(k, total)
        if group_by == "video":  # first guess from the last commit's segments per file
            c = self.manifest.counts
            fetch = min(total, k * max(1, -(-c.get("vectors", 0) // max(c.get("indexed", 1), 1))))
        files: int | None = None  # counted only when a query comes back short
        pending = list(range(len(q)))
        out: list[list[Hit]] = [[] for _ in range(len(q))]
        while pending:
            found = (self._vectors.search(q[pending], fetch, exact) if allowed is None
                     else self._vectors.search(q[pending], fetch, exact, allowed))
            keys, scores, counts = (a.tolist() for a in found)  # Python ints and floats
            rows = self._catalog.segment_rows(
                {key for row, n in zip(keys, counts, strict=True) for key in row[:n]})
            again = []
            for i, row, srow, n in zip(pending, keys, scores, counts, strict=True):
                hits = [_hit(rows[key], s) for key, s in zip(row[:n], srow[:n], strict=True)]
                if group_by == "video":
                    hits = _best_per_file(hits)[:k]
                    if len(hits) < k and fetch < total:
                        files = self._catalog.counts()[INDEXED] if files is None else files
                        if len(hits) < files:
                            again.append(i)
                out[i] = hits
            pending, fetch = again, min(total, 4 * fetch)
        return out

    # --- commit / close ------------------------------------------------------------------
    def commit(self, *, force: bool = False, compact: bool = False) -> int:
        """Make all changes durable and atomic (see module docstring); returns the generation.

        A no-op when nothing changed (unless ``force`` or ``compact``). ``compact``: fold the
        delta and the tombstones into a new base now (also done automatically past
        ``COMPACT_RATIO``). If it raises, the last commit stays intact on disk and the changes
        stay pending, so it can be retried.
        """
        self._require_writable()
        if not (self._dirty or force or compact):
            return self.generation
        gen, v = self.generation + 1, self._vectors
        sizes = v.sizes()
        compact = compact or sizes["delta"] + sizes["tombstones"] > COMPACT_RATIO * sizes["base"]
        with _os_errors(self.path):
            if compact:
                new = v.compacted(self.path, _part_name("base", gen), publish)
            else:
                new = v.with_delta(self.path, _part_name("delta", gen), publish)
            self._set_summary(gen, new)
            self._catalog.commit(  # <- the commit point
                gen, parts=new.parts(), tombstones=[] if compact else sorted(v.pending_tombstones),
                clear_tombstones=compact, manifest=self.manifest.to_json().decode(),
            )
            self._vectors = new
            self.manifest.write(self.path)
            _remove_stale(self.path, keep=new.files())
        self._dirty = False
        return gen

    def compact(self) -> int:
        """Fold the delta and the tombstones into a new base (a commit); returns the generation."""
        return self.commit(compact=True)

    def _set_summary(self, generation: int, vectors: VectorSet | None = None) -> None:
        m = self.manifest
        m.generation = generation
        m.counts = {"vectors": len(vectors or self._vectors), **self._catalog.counts()}
        m.updated = time.time()

    def _write_manifest(self) -> None:
        self._set_summary(self.generation)
        self.manifest.write(self.path)

    def close(self) -> None:
        """Release the index; uncommitted changes are discarded (rolled back)."""
        self._catalog.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> VideoIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit on normal exit of a writable index; on an exception, discard changes."""
        try:
            if exc_type is None and self.writable:
                self.commit()
        finally:
            self.close()


def _best_per_file(hits: list[Hit]) -> list[Hit]:
    """The first (best) hit of each file, in order."""
    seen: set[int] = set()
    best = []
    for h in hits:
        if h.key not in seen:
            seen.add(h.key)
            best.append(h)
    return best


def _hit(row: tuple[int, str, int, float, float | None], score: float) -> Hit:
    """The hit of a :meth:`Catalog.segment_rows` row."""
    file_key, path, ordinal, start_s, end_s = row
    return Hit(file_key, path, score, ordinal, start_s, end_s)


@contextlib.contextmanager
def _os_errors(d: Path) -> Iterator[None]:
    """Turn OS and SQLite I/O failures into one-line IndexStoreErrors naming the index (and,
    for a full disk, the file that could not be written)."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise IndexIOError(f"{exc.filename or d}: no space left on device") from exc
        raise IndexIOError(f"{d}: index I/O failed ({exc})") from exc
    except sqlite3.OperationalError as exc:
        if sqlite_out_of_space(exc, d):
            raise IndexIOError(f"{d / CATALOG_NAME}: no space left on device") from exc
        raise IndexIOError(f"{d}: index I/O failed ({exc})") from exc


def _is_index_file(name: str) -> bool:
    return (
        name in (MANIFEST_NAME, LOCK_NAME)
        or name.startswith(CATALOG_NAME)
        or (name.startswith(_PART_PREFIXES) and ".usearch" in name)  # incl. commit temps
    )


def _read_manifest(d: Path, catalog_name: str = CATALOG_NAME) -> IndexManifest:
    """The manifest of ``d``; where it is lost or unreadable but index files remain, the
    refusal says how to recover (never a silent new index over the old files)."""
    try:
        return IndexManifest.read(d)
    except IndexStoreError as exc:
        if not (d / catalog_name).is_file() or _manifest_copy(d, catalog_name) is None:
            raise
        raise IndexDamaged(
            f"{exc}; this folder holds an index (its catalog and vectors files) without a "
            f"readable {MANIFEST_NAME}: run `pig-engine restore-manifest --index {d}` to "
            "rewrite it from the copy kept in the catalog, or restore it from a backup"
        ) from None


def _manifest_copy(d: Path, catalog_name: str = CATALOG_NAME) -> str | None:
    """The catalog's copy of the manifest, or None (none kept, or the catalog unreadable)."""
    try:
        catalog = Catalog(d / catalog_name, writable=False)
    except IndexStoreError:
        return None
    try:
        return catalog.manifest_copy()
    finally:
        catalog.close()


def _never_committed(d: Path) -> bool:
    """No catalog, or one still at generation 0: a create that was interrupted before its
    first commit (which writes the manifest last), safe to create over."""
    if not (d / CATALOG_NAME).exists():
        return True
    try:
        return VideoIndex.committed_generation(d) == 0
    except IndexStoreError:
        return False


def _remove_stale(d: Path, keep: list[str]) -> None:
    """Delete vectors files not in ``keep`` and commit temps (writer only)."""
    stale = [p for p in d.iterdir() if p.name.startswith(_PART_PREFIXES) and p.name not in keep]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    if stale:
        fsync_dir(d)
