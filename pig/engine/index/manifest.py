"""``manifest.json`` of an index directory: what produced the vectors and how they are stored."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pig.engine.fsutil import write_atomic
from pig.engine.segments import WHOLE, Segmenting
from pig.errors import IndexStoreError, PigError

FORMAT = "pig-index"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DTYPES = ("f16", "i8", "f32")


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
    authority if they disagree after a crash. ``segmenting``: the
    :class:`~pig.engine.segments.Segmenting` setting; indexes made before segments existed
    have none and are read as one whole-video segment per file.
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
            text = path.read_text()
        except OSError as exc:
            raise IndexStoreError(f"{path}: unreadable index manifest ({exc.strerror})") from None
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"format_version {doc.get('format_version')}, this pig-engine reads "
                    f"{FORMAT_VERSION}"
                )
            m = cls(**{k: v for k, v in doc.items() if k not in ("format", "format_version")})
            if m.dtype not in DTYPES or m.metric != "ip" or int(m.dim) <= 0:
                raise ValueError(f"unsupported dtype/metric/dim {m.dtype}/{m.metric}/{m.dim}")
            Segmenting.from_dict(m.segmenting)
        except (ValueError, TypeError, AttributeError, PigError) as exc:
            raise IndexStoreError(f"{path}: invalid index manifest ({exc})") from None
        return m
