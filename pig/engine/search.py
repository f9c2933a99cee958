"""The query path of ``pig-engine search``: tokenise -> encode text (batched) -> index search."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from pig.engine.backends import open_backend
from pig.engine.bundle import Bundle
from pig.engine.index import Hit, VideoIndex
from pig.engine.index.store import GROUP_BY
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import BundleError, IndexStoreError, PigError

HIT_FIELDS = ("rank", "score", "path", "id", "start_s", "end_s", "segment")


def hit_json(rank: int, hit: Hit) -> dict[str, Any]:
    """The JSON form of a hit (every client of the engine uses this one): ``rank`` from 1,
    ``score`` (inner product), ``path``, ``id`` (the file's catalog key), the segment's span
    ``start_s``/``end_s`` (seconds from the first frame; ``end_s`` null when unknown) and its
    ordinal ``segment`` within the file."""
    values = (rank, hit.score, hit.path, hit.key, hit.start_s, hit.end_s, hit.segment)
    return dict(zip(HIT_FIELDS, values, strict=True))


def recorded_bundle(index: VideoIndex) -> Path:
    """The bundle directory that most recently wrote vectors into ``index``."""
    for producer in reversed(index.manifest.bundle_producers):
        if producer.get("bundle"):
            return Path(producer["bundle"])
    raise IndexStoreError(f"{index.path}: the index records no bundle directory; pass --bundle")


def bundle_for(index: VideoIndex, bundle_dir: str | os.PathLike[str] | None = None) -> Bundle:
    """``bundle_dir`` (or the one the index records), refused unless it made the index."""
    bundle = Bundle.load(bundle_dir if bundle_dir is not None else recorded_bundle(index))
    if bundle.fingerprint != index.fingerprint:
        raise BundleError(
            f"{bundle.dir}: bundle {bundle.fingerprint[:16]} is not the model that built the "
            f"index {index.path} ({index.fingerprint[:16]}); use the bundle it was built with"
        )
    return bundle


class Searcher:
    """An index opened read-only (memory-mapped) with the text encoder of its bundle."""

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        bundle_dir: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        precision: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.index = VideoIndex.open(index_dir, view=True)
        try:
            self.bundle = bundle_for(self.index, bundle_dir)
            self.tokenizer = ClipTokenizer(self.bundle.tokenizer_spec)
            kwargs: dict[str, Any] = {"log": log} if log is not None else {}
            self.encoder = open_backend(self.bundle, backend, precision, branches=("text",),
                                        **kwargs)
        except BaseException:
            self.index.close()
            raise

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """Unit text vectors ``[Q, D]`` float32, one batch through the encoder."""
        for i, q in enumerate(queries):
            if not q.strip():
                raise PigError(f"query {i + 1} is empty")
        return self.encoder.encode_text(self.tokenizer.encode(list(queries)))

    def truncated(self, queries: Sequence[str]) -> list[bool]:
        """Whether each query is longer than the model's text length (the official collator
        cuts it there: only its beginning is searched)."""
        return self.tokenizer.truncated(list(queries))

    def search(
        self, queries: Sequence[str], k: int = 10, exact: bool | None = None,
        group_by: str = "video",
    ) -> list[list[Hit]]:
        """Top ``k`` videos (``group_by="video"``, each with its best segment) or segments
        (``"segment"``) per query, best first; ``exact``: see :meth:`VideoIndex.search`."""
        if k < 1:
            raise PigError(f"k must be >= 1, got {k}")
        if group_by not in GROUP_BY:
            raise PigError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
        if not queries:
            return []
        return self.index.search(self.encode(queries), k, exact=exact, group_by=group_by)

    def close(self) -> None:
        try:
            self.encoder.close()
        finally:
            self.index.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
