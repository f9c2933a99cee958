"""The Python API (``import pig``): open an index and search it, index videos, encode texts
and videos. The CLI and the server run the same query engine (:mod:`pig.engine.query`), so
the three give the same hits.

    import pig

    with pig.open_index("idx") as index:
        page = index.search("a dog on a beach", k=5, where="duration_s >= 10")
        for hit in page.hits:
            print(hit.score, hit.path, hit.start_s, hit.end_s)
        more = index.search("a dog on a beach", k=5, where="duration_s >= 10",
                            offset=page.next)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from pig.engine.bundle import Bundle
from pig.engine.index import Hit
from pig.engine.ingest.report import IndexReport
from pig.engine.query.engine import QueryEngine
from pig.engine.query.filters import Filter, parse_json, parse_where
from pig.engine.query.request import Answer, Example, Request, Term

__all__ = ["Answer", "Example", "Hit", "Index", "Term", "index_videos", "open_index"]

PathLike = str | os.PathLike[str]
Where = str | Sequence[str] | Mapping[str, Any] | Filter | None
Like = PathLike | Example | Sequence[PathLike | Example] | None


def _quiet(_: str) -> None:
    pass


def _filter(where: Where) -> Filter:
    """``where`` as a filter: CLI expressions (a string or a list, AND-ed), the HTTP JSON
    form (a mapping) or a :class:`Filter`."""
    if where is None or isinstance(where, Filter):
        return where or Filter()
    if isinstance(where, str):
        return parse_where([where])
    if isinstance(where, Mapping):
        return parse_json(dict(where))
    return parse_where(list(where))


def _example(like: PathLike | Example) -> Example:
    if isinstance(like, Example):
        return like
    return Example.parse(os.fspath(like))


class Index:
    """An index (or several of one bundle, searched as one) opened for searching, with the
    text encoder of its bundle; close it (or use ``with``)."""

    def __init__(self, engine: QueryEngine) -> None:
        self.engine = engine

    def request(
        self,
        query: str | Sequence[str] | None = None,
        *,
        k: int = 10,
        where: Where = None,
        min_score: float | None = None,
        offset: int = 0,
        like: Like = None,
        not_: str | Sequence[str] = (),
        weights: Sequence[float] | None = None,
        group_by: str = "video",
        exact: bool | None = None,
        moments: int = 1,
        merge_adjacent: bool = False,
    ) -> Request:
        """The request :meth:`search` runs (see there)."""
        texts = [query] if isinstance(query, str) else list(query or [])
        likes = [like] if isinstance(like, str | os.PathLike | Example) else list(like or [])
        terms = [Term(text=t) for t in texts] + [Term(like=_example(x)) for x in likes]
        if weights is not None:
            if len(weights) != len(terms):
                raise ValueError(f"{len(weights)} weights for {len(terms)} terms")
            terms = [Term(t.text, t.like, float(w)) for t, w in zip(terms, weights, strict=True)]
        negatives = [not_] if isinstance(not_, str) else list(not_)
        return Request(tuple(terms), tuple(Term(text=n) for n in negatives), _filter(where),
                       k, offset, min_score, group_by, exact, moments, merge_adjacent)

    def search(
        self,
        query: str | Sequence[str] | None = None,
        *,
        k: int = 10,
        where: Where = None,
        min_score: float | None = None,
        offset: int = 0,
        like: Like = None,
        not_: str | Sequence[str] = (),
        weights: Sequence[float] | None = None,
        group_by: str = "video",
        exact: bool | None = None,
        moments: int = 1,
        merge_adjacent: bool = False,
    ) -> Answer:
        """One query: the texts of ``query`` and the examples of ``like`` (a video or image
        file, ``"@ID"``/``"@ID:SEGMENT"`` or an :class:`Example`), summed with ``weights``
        (default 1 each; in that order: texts, then examples), minus the texts of ``not_``,
        normalised. ``where``: a filter (``"duration_s >= 60"``, a list of such, or
        ``{"duration_s": {"gte": 60}}``). Returns the page of ``k`` hits from ``offset`` at
        or above ``min_score`` (:class:`Answer`: ``hits``, ``truncated``, ``next``: the
        offset of the next page or None). ``group_by``: ``"video"`` (each file's best
        segment) or ``"segment"``; ``exact``: scan (True), HNSW (False) or by size (None).
        ``moments``: each video hit's best N segments (``Hit.moments``); ``merge_adjacent``:
        adjacent ones among them become one span."""
        return self.engine.run([self.request(
            query, k=k, where=where, min_score=min_score, offset=offset, like=like, not_=not_,
            weights=weights, group_by=group_by, exact=exact, moments=moments,
            merge_adjacent=merge_adjacent)])[0]

    def search_many(self, requests: Sequence[Request]) -> list[Answer]:
        """Several requests (:meth:`request`) with one text-encoder call for all."""
        return self.engine.run(requests)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text vectors ``[n, D]`` float32 (the vectors text queries search with)."""
        return self.engine.encode(self.engine.tokenizer.encode(list(texts)))

    def encode_video(self, path: PathLike) -> np.ndarray:
        """The unit vector of a video or image file, as ``like=path`` searches with it (the
        normalised mean of its segments, cut as the index cuts files)."""
        return self.engine.encode_file(path)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_index(path: PathLike | Sequence[PathLike], *, bundle: PathLike | None = None,
               backend: str = "auto", precision: str | None = None,
               log: Callable[[str], None] | None = _quiet) -> Index:
    """Open an index directory (or a list of them, one bundle fingerprint, searched as one)
    for searching; ``bundle``: default the one the index records."""
    return Index(QueryEngine(path, bundle, backend, precision, log=log))


def index_videos(paths: Iterable[PathLike], *, bundle: PathLike | Bundle, index: PathLike,
                 metadata: Mapping[str, Mapping[str, Any]] | PathLike | None = None,
                 **options: Any) -> IndexReport:
    """Index the video files and folders of ``paths`` into ``index`` (created if missing)
    with the bundle in ``bundle``; incremental like ``pig-engine index``. ``metadata``: a
    JSON-lines/CSV file or a mapping of path -> user metadata. Other keywords: those of
    :func:`pig.engine.ingest.run.index_videos` (``glob``, ``backend``, ``segmenting``,
    ``options``, ``progress``, ...). Returns the run's report."""
    from pig.engine.ingest.metadata import read_metadata
    from pig.engine.ingest.run import index_videos as run

    if metadata is not None and not isinstance(metadata, Mapping):
        metadata = read_metadata(metadata)
    tags = {os.path.abspath(p): dict(m) for p, m in (metadata or {}).items()}
    options.setdefault("log", _quiet)
    return run(paths, bundle if isinstance(bundle, Bundle) else Bundle.load(bundle), index,
               metadata=tags, **options)
