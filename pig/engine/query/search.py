"""The query path of ``pig-engine search``: tokenise -> encode text (batched) -> index search."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from pig.engine.backends import open_backend
from pig.engine.bundle import Bundle
from pig.engine.display import display_path
from pig.engine.index import Hit, VideoIndex
from pig.engine.index.shards import check_same_model, search_shards
from pig.engine.index.store import GROUP_BY
from pig.engine.limits import MAX_K, MAX_QUERIES_FILE_BYTES, MAX_QUERIES_FILE_LINES, MAX_QUERY_CHARS
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import BundleError, IndexStoreError, PigError

HIT_FIELDS = ("rank", "score", "path", "id", "start_s", "end_s", "segment", "index")


def hit_json(rank: int, hit: Hit) -> dict[str, Any]:
    """The JSON form of a hit (every client of the engine uses this one): ``rank`` from 1,
    ``score`` (inner product), ``path`` (through :func:`display_path`), ``id`` (the file's
    catalog key), the segment's span ``start_s``/``end_s`` (seconds from the first frame;
    ``end_s`` null when unknown), its ordinal ``segment`` within the file, and ``index``, the
    0-based position of the hit's index in the ``--index`` list (``id`` is unique only within
    its index)."""
    values = (rank, hit.score, display_path(hit.path, controls=False), hit.key, hit.start_s,
              hit.end_s, hit.segment, hit.index)
    return dict(zip(HIT_FIELDS, values, strict=True))


def recorded_bundle(index: VideoIndex) -> Path:
    """The bundle directory that most recently wrote vectors into ``index``."""
    for producer in reversed(index.manifest.bundle_producers):
        if producer.get("bundle"):
            return Path(producer["bundle"])
    raise IndexStoreError(f"{index.path}: the index records no bundle directory; pass --bundle")


def bundle_for(index: VideoIndex, bundle_dir: str | os.PathLike[str] | None = None) -> Bundle:
    """``bundle_dir`` (or the one the index records), refused unless it made the index."""
    if bundle_dir is not None:
        bundle = Bundle.load(bundle_dir)
    else:
        try:
            bundle = Bundle.load(recorded_bundle(index))
        except BundleError as err:
            raise BundleError(f"{err}; the index {index.path} recorded this bundle: if it "
                              "moved, pass --bundle DIR") from None
    if bundle.fingerprint != index.fingerprint:
        raise BundleError(
            f"{bundle.dir}: bundle {bundle.fingerprint[:16]} is not the model that built the "
            f"index {index.path} ({index.fingerprint[:16]}); use the bundle it was built with"
        )
    return bundle


def check_k(k: int) -> None:
    """Refuse a result count outside ``1..MAX_K``."""
    if not 1 <= k <= MAX_K:
        raise PigError(f"k must be between 1 and {MAX_K}, got {k}")


def check_queries(queries: Sequence[str]) -> None:
    """Refuse an empty query or one longer than ``MAX_QUERY_CHARS`` (numbered from 1)."""
    for i, q in enumerate(queries, 1):
        if not q.strip():
            raise PigError(f"query {i} is empty")
        if len(q) > MAX_QUERY_CHARS:
            raise PigError(f"query {i} has {len(q)} characters; at most {MAX_QUERY_CHARS}")


def read_queries_file(path: str | os.PathLike[str]) -> list[str]:
    """The non-blank lines of a UTF-8 file (or FIFO; ``-``: standard input), stripped. Reads
    at most ``MAX_QUERIES_FILE_BYTES`` (+1 to tell a larger file) and refuses more than that or
    more than ``MAX_QUERIES_FILE_LINES`` queries, so ``/dev/zero`` is refused, not read to the
    end."""
    stdin = os.fspath(path) == "-"
    name = "standard input" if stdin else display_path(path)
    try:
        if stdin:
            data = sys.stdin.buffer.read(MAX_QUERIES_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_QUERIES_FILE_BYTES + 1)
    except OSError as err:
        raise PigError(f"{name}: cannot read queries ({err.strerror or err})") from None
    if len(data) > MAX_QUERIES_FILE_BYTES:
        raise PigError(f"{name}: queries file larger than {MAX_QUERIES_FILE_BYTES >> 20} MiB "
                       "(the limit); split it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PigError(f"{name}: queries file is not UTF-8 text (byte {err.start})") from None
    queries = [line.strip() for line in text.splitlines() if line.strip()]
    if len(queries) > MAX_QUERIES_FILE_LINES:
        raise PigError(f"{name}: {len(queries)} queries, at most {MAX_QUERIES_FILE_LINES} per "
                       "file; split it")
    return queries


class Searcher:
    """One or several indexes (shards of one bundle fingerprint, searched as one) opened
    read-only (memory-mapped, or with ``view=False`` read into memory), with the text encoder
    of their bundle."""

    def __init__(
        self,
        index_dir: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        bundle_dir: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        precision: str | None = None,
        log: Callable[[str], None] | None = None,
        *,
        view: bool = True,
    ) -> None:
        dirs = [index_dir] if isinstance(index_dir, (str, os.PathLike)) else list(index_dir)
        if not dirs:
            raise PigError("no index given")
        self.indexes: list[VideoIndex] = []
        try:
            for d in dirs:
                self.indexes.append(VideoIndex.open(d, view=view))
            check_same_model(self.indexes)
            self.bundle = bundle_for(self.index, bundle_dir)
            self.tokenizer = ClipTokenizer(self.bundle.tokenizer_spec)
            kwargs: dict[str, Any] = {"log": log} if log is not None else {}
            self.encoder = open_backend(self.bundle, backend, precision, branches=("text",),
                                        **kwargs)
        except BaseException:
            self._close_indexes()
            raise

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        """Unit text vectors ``[Q, D]`` float32, one batch through the encoder."""
        check_queries(queries)
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
        check_k(k)
        if group_by not in GROUP_BY:
            raise PigError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
        if not queries:
            return []
        return search_shards(self.indexes, self.encode(queries), k, exact=exact,
                             group_by=group_by)

    def _close_indexes(self) -> None:
        for idx in self.indexes:
            idx.close()

    @property
    def index(self) -> VideoIndex:
        """The first index (the only one unless several were given)."""
        return self.indexes[0]

    def replace_index(self, position: int, index: VideoIndex) -> VideoIndex:
        """Search ``index`` (a newer generation of the directory at ``position``) from now
        on; returns the one it replaces, for the caller to close."""
        old, self.indexes[position] = self.indexes[position], index
        return old

    def close(self) -> None:
        try:
            self.encoder.close()
        finally:
            self._close_indexes()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
