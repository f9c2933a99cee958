"""The usearch side of an index: vector checks, storage dtype, search with inner-product scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import pig.engine._native  # noqa: F401  (must precede usearch: see the module)

# isort: split
from usearch.index import Index

from pig.errors import IndexStoreError

UNIT_NORM_TOL = 1e-3  # |‖v‖ - 1| allowed for "unit" vectors (fp16/int8 engines normalise in fp32)


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


class VectorStore:
    """A usearch HNSW index whose search returns inner-product scores of unit vectors."""

    def __init__(self, index: Index, dtype: str) -> None:
        self.index = index
        self.dtype = dtype

    @staticmethod
    def settings(
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
        return cls(index, dtype)

    @classmethod
    def load(
        cls, path: Path, dim: int, dtype: str, settings: dict[str, Any], *, view: bool
    ) -> VectorStore:
        """Load ``path`` into RAM, or memory-map it read-only (``view=True``)."""
        store = cls.new(dim, dtype, settings)
        try:
            store.index.view(str(path)) if view else store.index.load(str(path))
        except (RuntimeError, ValueError) as exc:
            raise IndexStoreError(f"{path}: unreadable vectors file ({exc})") from None
        if store.index.ndim != dim:
            raise IndexStoreError(f"{path}: vectors file has dim {store.index.ndim}, not {dim}")
        return store

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return quantize_i8(x) if self.dtype == "i8" else x

    def __len__(self) -> int:
        return len(self.index)

    def add(self, keys: np.ndarray, x: np.ndarray) -> None:
        self.index.add(keys.astype(np.uint64), self._encode(x))

    def remove(self, keys: list[int]) -> None:
        if keys:
            self.index.remove(np.asarray(keys, dtype=np.uint64))

    def search(
        self, queries: np.ndarray, k: int, exact: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top ``k`` per query: keys int64 [Q, k], scores float32 [Q, k], valid counts [Q]."""
        q = len(queries)
        if len(self.index) == 0 or k <= 0:
            return np.zeros((q, 0), np.int64), np.zeros((q, 0), np.float32), np.zeros(q, np.int64)
        m = self.index.search(self._encode(queries), k, exact=exact)
        # usearch returns Matches (no counts, 1-D) for a single query, BatchMatches otherwise
        counts = np.asarray(getattr(m, "counts", [len(m.keys)]), dtype=np.int64).reshape(q)
        keys = np.asarray(m.keys, dtype=np.int64).reshape(q, -1)
        # usearch distances: ip -> 1 - <a,b>; cos -> 1 - cos(a,b) (= <a,b> on unit vectors);
        # past a query's count they are unset padding (may be NaN), which callers never read
        with np.errstate(invalid="ignore"):
            scores = (1.0 - np.asarray(m.distances, dtype=np.float32)).reshape(q, -1)
        return keys, scores, counts

    def save(self, path: Path) -> None:
        try:
            self.index.save(str(path))
        except RuntimeError as exc:  # usearch reports I/O failures as RuntimeError
            raise IndexStoreError(f"{path}: cannot write vectors file ({exc})") from None
