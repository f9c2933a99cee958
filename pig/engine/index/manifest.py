"""``manifest.json`` of an index directory: what produced the vectors and how they are stored."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from pig.engine.host.fsutil import write_atomic
from pig.engine.media.segments import WHOLE, Segmenting
from pig.errors import IndexDamaged, IndexIOError, IndexStoreError, PigError

FORMAT = "pig-index"
FORMAT_VERSION = 2  # 2: base + delta vectors files, checksums (1: one vectors file)
MANIFEST_NAME = "manifest.json"
DTYPES = ("f16", "i8", "f32")
_HNSW = ("connectivity", "expansion_add", "expansion_search")
_HNSW_MAX = 1 << 16  # beyond any useful HNSW setting; bounds the memory one can ask for


@dataclass
class IndexManifest:
    """Static settings (fixed at create) plus a summary of the last commit.

    ``metric`` is always ``"ip"``: scores are inner products of unit vectors (of unit text
    vectors with vectors of any length where ``unit_vectors`` is False: a bundle of the
    two-matrix variant; such an index cannot store ``i8``). The usearch
    settings (``usearch``) record how they are stored: for ``i8`` usearch's ``cos`` metric on
    per-vector-scaled int8 codes, which equals the inner product on unit vectors.
    ``bundle_producers`` lists each distinct ``bundle_info`` (precision, backend, ...) that
    wrote vectors; all share ``fingerprint`` (the model), so their vectors are comparable.
    ``generation`` and ``counts`` describe the last commit; the catalog's generation is the
    authority if they disagree after a crash. ``skipped`` lists ``{path, reason}`` of what
    the indexing runs passed over (unreadable folders, FIFOs, sockets, looping symlinks).
    ``segmenting``: the :class:`~pig.engine.media.segments.Segmenting` setting; indexes made before
    segments existed have none and are read as one whole-video segment per file.
    """

    fingerprint: str
    dim: int
    dtype: str
    usearch: dict[str, Any]
    bundle_producers: list[dict[str, Any]]
    segmenting: dict[str, Any] = field(default_factory=WHOLE.to_dict)
    generation: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    metric: str = "ip"
    skipped: list[dict[str, str]] = field(default_factory=list)
    unit_vectors: bool = True
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    def write(self, directory: Path) -> None:
        write_atomic(directory / MANIFEST_NAME, self.to_json())

    @classmethod
    def read(cls, directory: Path) -> IndexManifest:
        path = directory / MANIFEST_NAME
        if not directory.is_dir():
            raise IndexStoreError(f"{directory}: index directory does not exist")
        if not path.is_file():
            raise IndexStoreError(f"{directory}: not a pig-engine index (no {MANIFEST_NAME})")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise IndexIOError(f"{path}: unreadable index manifest ({exc.strerror})") from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        except (ValueError, RecursionError) as exc:
            raise IndexDamaged(f"{path}: invalid index manifest ({exc})") from None
        if doc.get("format") != FORMAT:  # another tool's file: the user's choice of folder
            raise IndexStoreError(f"{path}: format is {doc.get('format')!r}, expected "
                                  f"{FORMAT!r}")
        if doc.get("format_version") != FORMAT_VERSION:
            raise IndexStoreError(f"{path}: format_version {doc.get('format_version')}, this "
                                  f"pig-engine reads {FORMAT_VERSION}")
        try:
            m = cls(**{k: v for k, v in doc.items() if k not in ("format", "format_version")})
            _check_fields(m)
            Segmenting.from_dict(m.segmenting)
        except (ValueError, TypeError, AttributeError, RecursionError, PigError) as exc:
            raise IndexDamaged(f"{path}: invalid index manifest ({exc})") from None
        return m


def _check_fields(m: IndexManifest) -> None:
    """ValueError naming the first field of a read manifest with a wrong type or value."""
    def is_int(v: Any) -> TypeGuard[int]:
        return isinstance(v, int) and not isinstance(v, bool)

    if m.dtype not in DTYPES or m.metric != "ip" or not is_int(m.dim) or m.dim <= 0:
        raise ValueError(f"unsupported dtype/metric/dim {m.dtype!r}/{m.metric!r}/{m.dim!r}")
    if not isinstance(m.fingerprint, str) or not is_int(m.generation) or m.generation < 0:
        raise ValueError("fingerprint must be a string and generation an integer >= 0")
    if not isinstance(m.usearch, dict) or m.usearch.get("metric") not in ("ip", "cos"):
        raise ValueError("usearch must be an object with metric 'ip' or 'cos'")
    for name in _HNSW:
        value, low = m.usearch.get(name), 2 if name == "connectivity" else 1
        if not (is_int(value) and low <= value <= _HNSW_MAX):
            raise ValueError(f"usearch.{name} = {value!r} is not an integer in "
                             f"{low}..{_HNSW_MAX}")
    if not isinstance(m.counts, dict) or not all(is_int(v) for v in m.counts.values()):
        raise ValueError("counts must map names to integers")
    if not (isinstance(m.bundle_producers, list)
            and all(isinstance(p, dict) for p in m.bundle_producers)):
        raise ValueError("bundle_producers must be a list of objects")
    if not (isinstance(m.skipped, list) and all(
            isinstance(e, dict) and isinstance(e.get("path"), str)
            and isinstance(e.get("reason"), str) for e in m.skipped)):
        raise ValueError("skipped must be a list of {path, reason}")
    if not isinstance(m.unit_vectors, bool):
        raise ValueError("unit_vectors must be a boolean")
    for name in ("created", "updated"):
        if not isinstance(getattr(m, name), (int, float)):
            raise ValueError(f"{name} must be a number")
