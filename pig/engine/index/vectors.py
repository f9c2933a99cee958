"""The usearch side of an index: vector checks, storage dtype, search with inner-product scores.

:class:`VectorStore` is one usearch HNSW index. :class:`VectorSet` is what an index searches:
an immutable *base* file, a small *delta* file rewritten at each commit with the vectors added
since the base was written, and *tombstones* (keys whose vector in the base is dead: removed
or replaced). A commit costs what changed (the delta), not the index size; compaction folds
the delta and the tombstones into a new base. Every part file is verified against the size,
count and xxh3-128 checksum recorded at commit before usearch reads a byte of it.
"""

from __future__ import annotations

import errno
import math
import mmap
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

import pig.engine.host.native  # noqa: F401  (must precede usearch: see the module)

# isort: split
from usearch.index import Index
from usearch.index import search as brute_force

from pig.errors import IndexDamaged, IndexIOError, IndexStoreError

UNIT_NORM_TOL = 1e-3  # |‖v‖ - 1| allowed for "unit" vectors (fp16/int8 engines normalise in fp32)
EF_REF_N = 50_000  # HNSW ef stays as configured up to this many vectors (see search_expansion)
EF_EXPONENT = 0.6
_NUMPY = {"f16": np.float16, "f32": np.float32, "i8": np.int8}  # storage dtype -> numpy
# A filtered search scans the admitted vectors exactly when they are at most this many
# times the candidates HNSW would be asked for (2k / share): an HNSW search computes about
# M x 2 distances per candidate (M 16), the scan one per admitted vector.
SCAN_RATIO = 32


def check_unit_vectors(vectors: Any, dim: int, where: str, *, unit: bool = True) -> np.ndarray:
    """``vectors`` as C-contiguous float32 ``[N, dim]``; refuses wrong shape, NaN and, unless
    ``unit`` is False (a bundle whose manifest says its vectors are not unit length), non-unit
    rows."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise IndexStoreError(f"{where}: vectors of shape {list(x.shape)}, index needs [N, {dim}]")
    if not np.isfinite(x).all():
        raise IndexStoreError(f"{where}: vectors contain NaN or infinity")
    err = np.abs(np.linalg.norm(x, axis=1) - 1.0)
    if unit and err.size and err.max() > UNIT_NORM_TOL:
        row = int(err.argmax())
        raise IndexStoreError(
            f"{where}: vector {row} has norm {1 + err[row]:.4g} (expected unit vectors, "
            f"tolerance {UNIT_NORM_TOL})"
        )
    return x


def quantize_i8(x: np.ndarray) -> np.ndarray:
    """int8 codes with a per-row scale (max |v| -> 127, rounded).

    Under usearch's ``cos`` metric the scale cancels, so this keeps ~7 bits for every vector
    instead of usearch's own fixed x127 truncation (about 10x smaller score error at D=512).
    """
    scale = 127.0 / np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-12)
    return np.rint(x * scale).astype(np.int8)


@dataclass
class Subset:
    """The vector keys a filter admits (sorted) and, once an exact scan read them, their
    stored codes (kept for the next scan of the same subset)."""

    keys: np.ndarray
    codes: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + (0 if self.codes is None else self.codes.nbytes)


class VectorStore:
    """A usearch HNSW index whose search returns inner-product scores of unit vectors."""

    def __init__(self, index: Index, dtype: str, settings: dict[str, Any]) -> None:
        self.index = index
        self.dtype = dtype
        self.settings = settings
        self.expansion = int(settings["expansion_search"])  # the configured (minimum) ef

    @staticmethod
    def usearch_settings(
        dtype: str,
        connectivity: int | None,
        expansion_add: int | None,
        expansion_search: int | None,
        where: str,
    ) -> dict[str, Any]:
        """The usearch settings recorded in the manifest (usearch defaults filled in)."""
        given = {
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        for name, value in given.items():
            low = 2 if name == "connectivity" else 1
            if value is not None and (not isinstance(value, int) or value < low):
                raise IndexStoreError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
        probe = Index(
            ndim=1,
            metric="ip",
            dtype="f32",
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        return {
            "metric": "cos" if dtype == "i8" else "ip",
            "connectivity": probe.connectivity,
            "expansion_add": probe.expansion_add,
            "expansion_search": probe.expansion_search,
        }

    @classmethod
    def new(cls, dim: int, dtype: str, settings: dict[str, Any]) -> VectorStore:
        index = Index(
            ndim=dim,
            metric=settings["metric"],
            dtype=dtype,
            connectivity=settings["connectivity"],
            expansion_add=settings["expansion_add"],
            expansion_search=settings["expansion_search"],
        )
        return cls(index, dtype, settings)

    @classmethod
    def load(
        cls, path: Path, dim: int, dtype: str, settings: dict[str, Any], *, view: bool
    ) -> VectorStore:
        """Load ``path`` into RAM, or memory-map it read-only (``view=True``).

        ``path`` may be ``/proc/self/fd/N`` (an opened, verified file; see :meth:`VectorSet.open`).
        """
        store = cls.new(dim, dtype, settings)
        try:
            store.index.view(str(path)) if view else store.index.load(str(path))
        except (RuntimeError, ValueError) as exc:
            raise IndexDamaged(f"{path}: unreadable vectors file ({exc})") from None
        if store.index.ndim != dim:
            raise IndexDamaged(f"{path}: vectors file has dim {store.index.ndim}, not {dim}")
        return store

    def encode(self, x: np.ndarray) -> np.ndarray:
        return quantize_i8(x) if self.dtype == "i8" else x

    def __len__(self) -> int:
        return len(self.index)

    def add(self, keys: np.ndarray, x: np.ndarray, *, encoded: bool = False) -> None:
        """Add float32 unit vectors (or, ``encoded=True``, codes as this store keeps them)."""
        if len(keys):
            self.index.add(keys.astype(np.uint64), x if encoded else self.encode(x))

    def remove(self, keys: list[int]) -> None:
        if keys:
            self.index.remove(np.asarray(keys, dtype=np.uint64))

    def keys(self) -> np.ndarray:
        return np.asarray(self.index.keys, dtype=np.int64).reshape(-1)

    def contains(self, keys: list[int]) -> np.ndarray:
        if not keys or len(self.index) == 0:
            return np.zeros(len(keys), bool)
        return np.asarray(self.index.contains(np.asarray(keys, dtype=np.uint64))).reshape(-1)

    def codes(self, keys: np.ndarray) -> np.ndarray:
        """The stored codes (f16/i8/f32 as kept) of ``keys``, ``[N, dim]``."""
        if not len(keys):
            return np.zeros((0, self.index.ndim), np.float32)
        got = self.index.get(keys.astype(np.uint64), dtype=self.dtype)
        return np.asarray(got).reshape(len(keys), -1)

    def search(
        self, queries: np.ndarray, k: int, exact: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top ``k`` per query: keys int64 [Q, k], scores float32 [Q, k], valid counts [Q].

        HNSW search widens its expansion with the index size (:func:`search_expansion`).
        """
        if len(self.index) == 0 or k <= 0:
            return _empty(len(queries))
        q = len(queries)
        if not exact:
            ef = search_expansion(len(self.index), self.expansion)
            self.index.expansion_search = ef  # type: ignore[misc]  # the stub lacks its setter
        # one query on the calling thread: handing it to usearch's pool costs ~10% more CPU
        m = self.index.search(self.encode(queries), k, exact=exact, threads=1 if q == 1 else 0)
        # usearch returns Matches (no counts, 1-D) for a single query, BatchMatches otherwise
        counts = np.asarray(getattr(m, "counts", [len(m.keys)]), dtype=np.int64).reshape(q)
        keys = np.asarray(m.keys, dtype=np.int64).reshape(q, -1)
        # usearch distances: ip -> 1 - <a,b>; cos -> 1 - cos(a,b) (= <a,b> on unit vectors);
        # past a query's count they are unset padding (may be NaN), which callers never read
        with np.errstate(invalid="ignore"):
            scores = (1.0 - np.asarray(m.distances, dtype=np.float32)).reshape(q, -1)
        return keys, scores, counts

    def save(self, path: Path) -> None:
        """Write the index to ``path``; a full disk is named as such."""
        try:
            self.index.save(str(path))
        except RuntimeError as exc:  # usearch reports I/O failures as RuntimeError, no errno
            path.unlink(missing_ok=True)
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < self.index.serialized_length:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise IndexIOError(f"{path}: cannot write vectors file ({exc})") from None


def search_expansion(n: int, configured: int) -> int:
    """HNSW search expansion (ef) for ``n`` vectors: ``configured`` up to ``EF_REF_N``, then
    growing as ``(n / EF_REF_N) ** EF_EXPONENT`` (64 -> 98 at 100k, 387 at 1M). From
    ``bench_search``'s curves, f16 512-d, M 16: at 100k ef 64 gives recall@10 0.998; at 1M
    ef 287 gives 0.9865 (p50 2.5 ms), 384 gives 0.9915 (2.85 ms), 512 0.9975 (3.2 ms)."""
    if n <= EF_REF_N:
        return configured
    return math.ceil(configured * (n / EF_REF_N) ** EF_EXPONENT)


CHECKSUM = "xxh3_128"
_CHUNK = 64 << 20


@dataclass(frozen=True)
class PartFile:
    """A committed vectors file as the catalog records it: name, bytes, vectors, checksum."""

    file: str
    size: int
    count: int
    xxh3_128: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartFile:
        return cls(str(d["file"]), int(d["size"]), int(d["count"]), str(d[CHECKSUM]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fd_checksum(fd: int) -> str:
    """xxh3-128 of an open file's whole content, hashed through a read-only memory map (no
    copies; the pages are then cached for usearch's own map)."""
    h = xxhash.xxh3_128()
    if os.fstat(fd).st_size:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
            view = memoryview(mm)
            try:
                for off in range(0, len(view), _CHUNK):
                    h.update(view[off : off + _CHUNK])
            finally:
                view.release()
    return h.hexdigest()


@dataclass(frozen=True)
class FileIdentity:
    """What a served file is checked against while it is served: (device, inode, size,
    modification time)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def differs(self, other: FileIdentity) -> str:
        """Which fields of ``other`` differ, in words."""
        return ", ".join(f"{name} {getattr(self, name)} -> {getattr(other, name)}"
                         for name in ("size", "mtime_ns", "ino", "dev")
                         if getattr(self, name) != getattr(other, name))


class PartMissingError(Exception):
    """A committed part file vanished before it was opened: a newer commit replaced it."""


class VectorSet:
    """The base + delta + tombstones that one generation of an index searches (module doc).

    ``base`` is ``None`` until the first compaction. ``pending_tombstones``: keys tombstoned since
    the last commit (the catalog records them at commit).
    """

    def __init__(
        self,
        blank: VectorStore,
        base: VectorStore | None,
        base_file: PartFile | None,
        delta: VectorStore,
        delta_file: PartFile | None,
        tombstones: set[int],
    ) -> None:
        self._blank = blank  # settings template for new stores
        self.base, self.base_file = base, base_file
        self.delta, self.delta_file = delta, delta_file
        self.tombstones = tombstones
        self.pending_tombstones: set[int] = set()
        self.delta_changed = False
        # the delta was built in this process by adds alone: its graph can become the base as
        # it is (a first build then costs one HNSW construction, not two)
        self.delta_pristine = not len(delta)
        self.opened: dict[str, FileIdentity] = {}  # part file name -> as verified at open

    @classmethod
    def empty(cls, dim: int, dtype: str, settings: dict[str, Any]) -> VectorSet:
        blank = VectorStore.new(dim, dtype, settings)
        return cls(blank, None, None, VectorStore.new(dim, dtype, settings), None, set())

    @classmethod
    def open(
        cls,
        d: Path,
        parts: dict[str, Any],
        tombstones: set[int],
        dim: int,
        dtype: str,
        settings: dict[str, Any],
        *,
        writable: bool,
        view: bool,
    ) -> VectorSet:
        """Open the committed parts of ``d`` (``parts``: the catalog's record), verified.

        The base is memory-mapped unless ``view=False`` for a reader; a writer's delta is
        loaded into RAM (it is rewritten at the next commit). Raises
        :class:`PartMissingError` if a part vanished (a reader lost a race with a commit).
        """
        out = cls.empty(dim, dtype, settings)
        out.tombstones = tombstones
        for role in ("base", "delta"):
            if parts.get(role) is None:
                continue
            part = PartFile.from_dict(parts[role])
            mapped = role == "base" if writable else view
            store, out.opened[part.file] = _open_verified(d / part.file, part, dim, dtype,
                                                          settings, view=mapped)
            setattr(out, role, store)
            setattr(out, f"{role}_file", part)
        out.delta_pristine = not len(out.delta)
        return out

    # --- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.base_live + len(self.delta)

    @property
    def base_live(self) -> int:
        return (len(self.base) - len(self.tombstones)) if self.base is not None else 0

    def sizes(self) -> dict[str, int]:
        """``base`` (stored, incl. dead), ``delta`` and ``tombstones`` vector counts."""
        base = len(self.base) if self.base is not None else 0
        return {"base": base, "delta": len(self.delta), "tombstones": len(self.tombstones)}

    def parts(self) -> dict[str, Any]:
        return {
            "base": self.base_file.to_dict() if self.base_file else None,
            "delta": self.delta_file.to_dict() if self.delta_file else None,
        }

    def files(self) -> list[str]:
        return [p.file for p in (self.base_file, self.delta_file) if p is not None]

    # --- changes -------------------------------------------------------------------------
    def add(self, keys: np.ndarray, x: np.ndarray) -> None:
        """Add vectors of keys that hold no live vector (:meth:`remove` replaced ones first)."""
        self.delta.add(keys, x)
        self.delta_changed = True

    def remove(self, keys: list[int]) -> None:
        """Drop the live vectors of ``keys``: from the delta, or as base tombstones."""
        if not keys:
            return
        in_delta = self.delta.contains(keys)
        gone = [k for k, inside in zip(keys, in_delta, strict=True) if inside]
        self.delta.remove(gone)
        self.delta_changed |= bool(gone)
        self.delta_pristine &= not gone
        if self.base is not None:
            rest = [k for k in keys if k not in self.tombstones]
            dead = {k for k, inside in zip(rest, self.base.contains(rest), strict=True) if inside}
            self.tombstones |= dead
            self.pending_tombstones |= dead

    # --- search --------------------------------------------------------------------------
    def codes(self, keys: np.ndarray) -> np.ndarray:
        """The stored codes (f16/i8/f32 as kept) of live ``keys`` (all present), ``[N, dim]``."""
        out = np.empty((len(keys), self._blank.index.ndim), _NUMPY[self._blank.dtype])
        in_delta = self.delta.contains(keys.tolist())
        for store, rows in ((self.delta, in_delta), (self.base, ~in_delta)):
            if rows.any():
                assert store is not None, "a key with no live vector"
                out[rows] = store.codes(keys[rows])
        return out

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The live vectors of ``keys`` as float32 ``[N, dim]`` (unit rows for i8, whose codes
        carry a per-row scale)."""
        out = self.codes(keys).astype(np.float32)
        if self._blank.dtype == "i8":
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def search(
        self, queries: np.ndarray, k: int, exact: bool, allowed: Subset | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top ``k`` live vectors per query over base and delta (see :meth:`VectorStore.search`).

        ``allowed``: only those keys. Chosen by their measured share of the vectors: HNSW
        is asked for ``2k / share`` candidates (x4 more while a query has fewer than ``k``
        admitted ones); when the admitted vectors are at most ``SCAN_RATIO`` times that many
        (a selective filter), or with ``exact``, they are scanned exactly instead (usearch's
        brute-force kernel over their codes, read once and kept in the subset).
        """
        if allowed is not None:
            return self._search_allowed(queries, k, exact, allowed)
        parts = [self.delta.search(queries, k, exact)]
        if self.base is not None:
            parts.append(self._search_base(queries, k, exact))
        return merge_top_k(parts, k)

    def _search_allowed(self, queries: np.ndarray, k: int, exact: bool, subset: Subset
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q, total, allowed = len(queries), len(self), subset.keys
        k = min(k, len(allowed))
        if k <= 0 or total == 0:
            return _empty(q)
        if len(allowed) == total and not exact:  # everything: no filter to apply
            return self.search(queries, k, exact)
        want = min(total, math.ceil(2 * k * total / len(allowed)))
        if exact or len(allowed) <= SCAN_RATIO * want:
            if subset.codes is None:
                subset.codes = self.codes(allowed)
            codes = subset.codes
            m = brute_force(codes, self._blank.encode(queries).astype(codes.dtype), k,
                            metric=self._blank.settings["metric"], exact=True, threads=1)
            counts = np.asarray(getattr(m, "counts", [len(m.keys)]), np.int64).reshape(q)
            rows = np.asarray(m.keys, np.int64).reshape(q, -1)
            with np.errstate(invalid="ignore"):
                scores = (1.0 - np.asarray(m.distances, np.float32)).reshape(q, -1)
            return allowed[np.clip(rows, 0, len(allowed) - 1)], scores, counts
        while True:
            keys, scores, counts = self.search(queries, want, False)
            cols = np.arange(keys.shape[1])[None, :]
            pos = np.searchsorted(allowed, keys).clip(0, len(allowed) - 1)
            ok = (cols < counts[:, None]) & (allowed[pos] == keys)
            if (ok.sum(1) >= k).all() or want >= total:
                break
            want = min(total, 4 * want)
        order = np.argsort(~ok, axis=1, kind="stable")[:, :k]  # allowed hits first, in order
        n = np.minimum(ok.sum(1), k)
        return np.take_along_axis(keys, order, 1), np.take_along_axis(scores, order, 1), n

    def _search_base(
        self, queries: np.ndarray, k: int, exact: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Base search skipping tombstones: asks for more until ``k`` live hits (or all)."""
        assert self.base is not None
        if not self.tombstones:
            return self.base.search(queries, k, exact)
        dead = np.fromiter(self.tombstones, np.int64, len(self.tombstones))
        want = min(len(self.base), k + min(len(dead), 4 * k))
        while True:
            keys, scores, counts = self.base.search(queries, want, exact)
            cols = np.arange(keys.shape[1])[None, :]
            live = (cols < counts[:, None]) & ~np.isin(keys, dead)
            short = (live.sum(1) < k) & (counts == want)
            if not short.any() or want >= len(self.base):
                break
            want = min(len(self.base), 2 * want)
        order = np.argsort(~live, axis=1, kind="stable")  # live hits first, order kept
        keys, scores = np.take_along_axis(keys, order, 1), np.take_along_axis(scores, order, 1)
        return keys[:, :k], scores[:, :k], np.minimum(live.sum(1), k)

    # --- commit --------------------------------------------------------------------------
    def with_delta(self, d: Path, name: str, publish: Any) -> VectorSet:
        """This set as the next commit records it: the delta written as ``d/name`` (through
        ``publish(tmp, final)``) if it changed; ``self`` is left as it was."""
        out = VectorSet(self._blank, self.base, self.base_file, self.delta, self.delta_file,
                        self.tombstones)
        out.delta_pristine = self.delta_pristine
        if self.delta_changed:
            out.delta_file = _write_part(self.delta, d / name, publish) if len(self.delta) else None
        return out

    def compacted(self, d: Path, name: str, publish: Any) -> VectorSet:
        """A new set whose base holds every live vector (written as ``d/name``), no delta.

        With no base yet, a delta built by adds alone becomes the base as it is (same
        settings, same vectors: rebuilding its graph would cost a second construction)."""
        if self.base is None and self.delta_pristine:
            out = VectorSet(self._blank, self.delta, None, self._new(), None, set())
            out.base_file = _write_part(self.delta, d / name, publish)
            return out
        fresh = self._new()
        if self.base is not None and self.base_file is not None:
            fresh.index.load(str(d / self.base_file.file))  # into RAM, then edited
            if self.tombstones:  # compact=True relinks the neighbours of the removed nodes
                fresh.index.remove(np.asarray(sorted(self.tombstones), np.uint64), compact=True)
        keys = self.delta.keys()
        fresh.add(keys, self.delta.codes(keys), encoded=True)
        out = VectorSet(self._blank, fresh, None, self._new(), None, set())
        out.base_file = _write_part(fresh, d / name, publish)
        return out

    def _new(self) -> VectorStore:
        b = self._blank
        return VectorStore.new(b.index.ndim, b.dtype, b.settings)


def merge_top_k(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-part top-k results (keys, scores, counts) into one top-k, best first."""
    q = len(parts[0][0])
    parts = [p for p in parts if p[0].shape[1]]
    if len(parts) <= 1:
        return parts[0] if parts else _empty(q)
    keys = np.concatenate([p[0] for p in parts], 1)
    scores = np.concatenate(
        [np.where(np.arange(p[1].shape[1])[None] < p[2][:, None], p[1], -np.inf) for p in parts], 1
    )
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    counts = np.minimum(sum(p[2] for p in parts), k).reshape(q)
    return np.take_along_axis(keys, order, 1), np.take_along_axis(scores, order, 1), counts


def _empty(q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((q, 0), np.int64), np.zeros((q, 0), np.float32), np.zeros(q, np.int64)


def _write_part(store: VectorStore, final: Path, publish: Any) -> PartFile:
    tmp = final.with_name(final.name + ".tmp")
    store.save(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        size, checksum = os.fstat(fd).st_size, fd_checksum(fd)
    finally:
        os.close(fd)
    publish(tmp, final)
    return PartFile(final.name, size, len(store), checksum)


def _open_verified(
    path: Path, part: PartFile, dim: int, dtype: str, settings: dict[str, Any], *, view: bool
) -> tuple[VectorStore, FileIdentity]:
    """Open ``path``, check size and checksum against ``part``, then hand it to usearch;
    returns the store and the identity of the file verified.

    usearch reads the already opened file (``/proc/self/fd/N``), so a commit that deletes
    ``path`` meanwhile cannot make it read another file or none.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise PartMissingError(str(path)) from None
    try:
        st = os.fstat(fd)
        size = st.st_size
        if size != part.size:
            raise IndexDamaged(
                f"{path}: damaged vectors file ({size} bytes, {part.size} recorded at commit); "
                f"{_RESTORE}"
            )
        if fd_checksum(fd) != part.xxh3_128:
            raise IndexDamaged(
                f"{path}: damaged vectors file (its {CHECKSUM} checksum differs from the one "
                f"recorded at commit); {_RESTORE}"
            )
        proc = Path(f"/proc/self/fd/{fd}")
        store = VectorStore.load(proc if proc.exists() else path, dim, dtype, settings, view=view)
    finally:
        os.close(fd)  # a memory map keeps the file alive
    if len(store) != part.count:
        raise IndexDamaged(
            f"{path}: holds {len(store)} vectors, {part.count} recorded at commit; {_RESTORE}"
        )
    return store, FileIdentity.of(st)


_RESTORE = "restore the index folder from a backup or rebuild it (pig-engine index into a new one)"
