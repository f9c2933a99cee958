"""The query engine: requests (:mod:`pig.engine.query.request`) in, pages of hits out. The
CLI, the server and the Python API all call it.

A batch of requests is executed with ONE text-encoder call for all of their texts
(:meth:`QueryEngine.run`; the server splits it: :meth:`prepare` tokenizes a request as it
arrives, its batcher makes the one encoder call, :meth:`execute` does the rest). Then, per
request: the query vector (the normalised weighted sum of its terms minus its negatives;
examples are stored vectors, or files encoded by the video encoder, opened on first use),
the filter's matching segments per index (:meth:`VideoIndex.matching`), the search of every
index (requests with the same search settings share one call), ``min_score``, and the page.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from pig.engine.backends import open_backend
from pig.engine.backends.base import Backend
from pig.engine.bundle import Bundle
from pig.engine.index import INDEXED, Hit, VideoIndex
from pig.engine.index.shards import check_same_model, search_shards
from pig.engine.index.store import Moment
from pig.engine.index.vectors import Subset
from pig.engine.query.request import Answer, Example, Request, Term
from pig.engine.query.search import bundle_for
from pig.engine.tokenizer import ClipTokenizer
from pig.errors import PigError, VideoReadError

MIN_QUERY_NORM = 1e-4  # a combined query shorter than this (its terms cancel) is refused


@dataclass(frozen=True)
class Prepared:
    """A request with its texts' token ids ``[n, L]`` and the vectors of its file examples
    (by position among its terms, then negatives) encoded already."""

    request: Request
    ids: np.ndarray
    truncated: bool
    files: dict[int, np.ndarray] = field(default_factory=dict)


class QueryEngine:
    """One or several indexes (shards of one bundle fingerprint, searched as one) opened
    read-only (memory-mapped, or with ``view=False`` read into memory), with the text encoder
    of their bundle. Not thread-safe: the
    server calls :meth:`execute` under its index lock and only from its batcher thread."""

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
        dirs = [index_dir] if isinstance(index_dir, str | os.PathLike) else list(index_dir)
        if not dirs:
            raise PigError("no index given")
        self.indexes: list[VideoIndex] = []
        self._backend, self._precision = backend, precision
        self._log: dict[str, Any] = {"log": log} if log is not None else {}
        self._video: Backend | None = None
        try:
            for d in dirs:
                self.indexes.append(VideoIndex.open(d, view=view))
            check_same_model(self.indexes)
            self.bundle: Bundle = bundle_for(self.indexes[0], bundle_dir)
            self.tokenizer = ClipTokenizer(self.bundle.tokenizer_spec)
            self.encoder = open_backend(self.bundle, backend, precision, branches=("text",),
                                        **self._log)
        except BaseException:
            self._close_indexes()
            raise

    # --- the three steps -----------------------------------------------------------------
    def prepare(self, request: Request, *, files: bool = True) -> Prepared:
        """Tokenize ``request``'s texts; with ``files``, encode its examples that are files
        not in any index's catalog (the server passes False: a path must be indexed)."""
        ids, cut = self.tokenizer.tokenize(request.texts, parallel=False)
        encoded = {}
        for i, term in enumerate((*request.terms, *request.negatives)):
            ex = term.like
            if ex is not None and ex.path is not None and files and self._stored(ex) is None:
                encoded[i] = self.encode_file(ex.path)
        return Prepared(request, ids, any(cut), encoded)

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Unit text vectors ``[n, D]`` of token ids ``[n, L]``: one encoder call."""
        if not len(ids):
            return np.zeros((0, self.bundle.embedding_dim), np.float32)
        return self.encoder.encode_text(ids)

    def execute(self, prepared: Sequence[Prepared], vectors: Sequence[np.ndarray]
                ) -> list[Answer | PigError]:
        """The answers of ``prepared`` requests whose text vectors are ``vectors`` (one
        array per request, its texts' rows); a request that cannot be answered gets its
        error, the others their answers."""
        out: list[Answer | PigError] = []
        queries: dict[int, np.ndarray] = {}  # the requests that have a query vector
        for i, (p, v) in enumerate(zip(prepared, vectors, strict=True)):
            try:
                queries[i] = self._query_vector(p, v)
                out.append(Answer([], p.truncated, None))
            except PigError as err:
                out.append(err)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, p in enumerate(prepared):
            if i in queries:
                r = p.request
                sql = r.where.sql() if r.where else None
                key = (r.offset + r.k + 1, r.exact, r.group_by,
                       None if sql is None else (sql[0], tuple(sql[1])))
                groups.setdefault(key, []).append(i)
        for (fetch, exact, group_by, sql), members in groups.items():
            try:
                allowed = None if sql is None else [idx.matching(sql[0], sql[1])
                                                    for idx in self.indexes]
                q = np.stack([queries[i] for i in members])
                found = search_shards(self.indexes, q, fetch, exact=exact, group_by=group_by,
                                      allowed=allowed)
            except PigError as err:
                for i in members:
                    out[i] = err
                continue
            for i, hits in zip(members, found, strict=True):
                answer = _page(prepared[i], hits)
                r = prepared[i].request
                if r.moments > 1 or r.merge_adjacent:
                    answer.hits[:] = [dataclasses.replace(h, moments=self._moments(
                        r, queries[i], h, None if allowed is None else allowed[h.index]))
                        for h in answer.hits]
                out[i] = answer
        return out

    def _moments(self, r: Request, q: np.ndarray, hit: Hit, allowed: Subset | None
                 ) -> tuple[Moment, ...]:
        """The best ``r.moments`` segments of ``hit``'s file (those ``allowed``, at or above
        ``min_score``), scored exactly against its stored vectors, best first; with
        ``merge_adjacent``, runs of consecutive segments among them become one span."""
        idx = self.indexes[hit.index]
        segs = idx.segments_of(hit.path)
        if allowed is not None:
            keys = np.fromiter((s.key for s in segs), np.int64, len(segs))
            pos = np.searchsorted(allowed.keys, keys).clip(0, max(len(allowed.keys) - 1, 0))
            segs = [s for s, ok in zip(segs, allowed.keys[pos] == keys, strict=True) if ok]
        if not segs:
            return ()
        scores = idx.vectors_of([s.key for s in segs]) @ q
        best = sorted(np.argsort(-scores, kind="stable")[:r.moments].tolist())
        if r.min_score is not None:
            best = [b for b in best if scores[b] >= r.min_score]
        runs: list[list[int]] = []
        for b in best:  # in time order
            if r.merge_adjacent and runs and segs[b].ordinal == segs[runs[-1][-1]].ordinal + 1:
                runs[-1].append(b)
            else:
                runs.append([b])
        spans = [Moment(tuple(segs[b].ordinal for b in run), segs[run[0]].start_s,
                        segs[run[-1]].end_s, float(max(scores[b] for b in run)))
                 for run in runs]
        return tuple(sorted(spans, key=lambda m: -m.score))

    def run(self, requests: Sequence[Request]) -> list[Answer]:
        """Answer ``requests`` (one text-encoder call for all); raises the first error."""
        prepared = [self.prepare(r) for r in requests]
        vectors = self.encode(np.concatenate([p.ids for p in prepared]) if prepared
                              else np.zeros((0, 1), np.int64))
        bounds = np.cumsum([0, *(len(p.ids) for p in prepared)])
        parts = [vectors[a:b] for a, b in itertools.pairwise(bounds)]
        answers = self.execute(prepared, parts)
        for a in answers:
            if isinstance(a, PigError):
                raise a
        return answers  # type: ignore[return-value]

    def search(self, queries: Sequence[str], k: int = 10, exact: bool | None = None,
               group_by: str = "video") -> list[list[Hit]]:
        """Top ``k`` hits of each text, best first (one request per text)."""
        return [a.hits for a in self.run([Request((Term(q),), k=k, exact=exact,
                                                  group_by=group_by) for q in queries])]

    def truncated(self, queries: Sequence[str]) -> list[bool]:
        """Whether each text is longer than the model's text length (only its beginning is
        searched: the official collator cuts it there)."""
        return self.tokenizer.truncated(list(queries))

    # --- query vectors -------------------------------------------------------------------
    def _query_vector(self, p: Prepared, text_vectors: np.ndarray) -> np.ndarray:
        r = p.request
        texts = iter(text_vectors)
        terms = (*r.terms, *r.negatives)
        if len(terms) == 1 and terms[0].text is not None and terms[0].weight == 1:
            return np.asarray(text_vectors[0], np.float32)  # a plain text query, as encoded
        total = np.zeros(self.bundle.embedding_dim, np.float64)
        for i, term in enumerate(terms):
            if term.text is not None:
                v = next(texts)
            elif i in p.files:
                v = p.files[i]
            else:
                v = self._example_vector(term.like)  # type: ignore[arg-type]
            sign = 1.0 if i < len(r.terms) else -1.0
            total += sign * term.weight * np.asarray(v, np.float64)
        norm = float(np.linalg.norm(total))
        if norm < MIN_QUERY_NORM:
            raise PigError(f"query {r.describe()!r}: its terms cancel out (no direction left)")
        return (total / norm).astype(np.float32)

    def _stored(self, ex: Example) -> tuple[VideoIndex, int] | None:
        """(index, file key) of an example held by the catalogs, None for a file they lack."""
        if ex.id is not None:
            if ex.index >= len(self.indexes):
                raise PigError(f"example {ex.describe()}: no index {ex.index} (there are "
                               f"{len(self.indexes)})")
            return self.indexes[ex.index], ex.id
        for idx in self.indexes:
            rec = idx.lookup(ex.path)  # type: ignore[arg-type]
            if rec is not None and rec.status == INDEXED:
                return idx, rec.key
        return None

    def _example_vector(self, ex: Example) -> np.ndarray:
        """The stored vector of a segment, or the normalised mean of a file's segments."""
        found = self._stored(ex)
        if found is None:
            raise PigError(f"example {ex.describe()}: not in the index (only indexed files "
                           "can be examples here)")
        idx, key = found
        if ex.segment is None:
            keys = [s.key for s in idx.segments_of(rec.path)] if (rec := idx.record(key)) \
                and rec.status == INDEXED else []
        else:
            seg = idx.segment_key(key, ex.segment)
            keys = [] if seg is None else [seg]
        if not keys:
            raise PigError(f"example {ex.describe()}: no such indexed video or segment")
        return _unit_mean(idx.vectors_of(keys))

    def encode_file(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The unit vector of a video file (the normalised mean of its segments, cut as the
        first index cuts files) or an image (a still video), by the video encoder."""
        from pig.engine.media.preprocess import preprocess_frames
        from pig.engine.media.video import read_segments

        recipe = self.bundle.recipe
        try:
            pixels = [preprocess_frames(seg.frames, recipe, threads=0)
                      for seg in read_segments(path, recipe.num_frames,
                                               self.indexes[0].segmenting,
                                               sampling=recipe.sampling)]
        except VideoReadError as err:
            raise PigError(f"{err.path}: {err.reason}") from None
        if self._video is None:
            self._video = open_backend(self.bundle, self._backend, self._precision,
                                       branches=("video",), **self._log)
        return _unit_mean(np.concatenate([self._video.encode_video(px[None])
                                          for px in pixels]))

    # --- life ----------------------------------------------------------------------------
    def replace_index(self, position: int, index: VideoIndex) -> VideoIndex:
        """Search ``index`` (a newer generation of the directory at ``position``) from now
        on; returns the one it replaces, for the caller to close."""
        old, self.indexes[position] = self.indexes[position], index
        return old

    def _close_indexes(self) -> None:
        for idx in self.indexes:
            idx.close()

    def close(self) -> None:
        try:
            self.encoder.close()
            if self._video is not None:
                self._video.close()
        finally:
            self._close_indexes()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _unit_mean(vectors: np.ndarray) -> np.ndarray:
    mean = np.asarray(vectors, np.float64).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def _page(p: Prepared, hits: list[Hit]) -> Answer:
    """The page ``[offset, offset + k)`` of ``hits`` (searched for ``offset + k + 1``) at or
    above ``min_score``; ``next`` when a hit lies beyond it."""
    r = p.request
    if r.min_score is not None:
        hits = [h for h in hits if h.score >= r.min_score]
    end = r.offset + r.k
    return Answer(hits[r.offset:end], p.truncated, end if len(hits) > end else None)
