"""What the routes call: one :class:`QueryEngine` over one index or several (shards of one
bundle fingerprint, searched as one), each kept at its newest committed generation, and the
micro-batcher in front of the encoder.

Threads and what they touch:

* a request's texts are tokenized on the event loop as it is queued (the tokenizer is only
  read from; the worker, the one serial resource, is spared that work, and a text the
  tokenizer refuses fails its own request, not a batch);
* the batcher's worker is the only caller of the text encoder (a TensorRT context has one
  stream; ONNX Runtime sessions are used from one thread), and it runs the batch's
  :meth:`QueryEngine.execute` (query vectors, filters, index searches, pages);
* the indexes (each read-only usearch vectors in memory plus a SQLite snapshot) are used under
  ``_index_lock`` only, by the worker's searches, by catalog look-ups (``/v1/videos``) and by
  the swap to a new generation; usearch is not safe for a search concurrent with a change of
  the index object, and a snapshot's connection is not shared across threads without it;
* the watcher thread checks each index every ``reload_seconds``: the folder's commit id
  (:meth:`VideoIndex.committed_id`, unique per commit: another index put in the folder's
  place is seen whatever its generation number) and, while it is unchanged, the identity of
  the vectors files opened (:meth:`VideoIndex.changed_files`: a stat each). A new commit is
  opened *outside* the lock (so queries go on meanwhile), verified (sizes and checksums),
  then swapped in under the lock; a generation is what one commit made, so a half-committed
  state is never served.

An index whose folder is gone, whose files changed in place, whose catalog is damaged
(:class:`~pig.errors.IndexDamaged`, met by the watcher, a search or a look-up) or whose new
commit cannot be opened is *taken out of service* (degraded): its searches (a search covers
every index) and look-ups get a 503 naming it and the cause, ``/v1/health/ready`` answers 503
``degraded`` naming it, the other routes serve on; once its folder changes again and opens
(its catalog passing ``quick_check``: after ``pig-engine restore-catalog``, say), it is back.
Each catalog is checked so at start-up too. The vectors are read into memory
(``view=False``), not memory-mapped: nothing done to the files can reach the served copy (a
truncated mapped file is a SIGBUS that kills the whole server); bench/bench_served_files.py
measures what that costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pig.engine.backends.base import text_lengths
from pig.engine.index import INDEXED, FileRecord, VideoIndex
from pig.engine.index.catalog import CATALOG_NAME, SegmentRecord
from pig.engine.query.engine import Prepared, QueryEngine
from pig.engine.query.request import Answer, Request
from pig.engine.serve.batcher import MicroBatcher
from pig.engine.serve.budget import CostBudget
from pig.engine.serve.media import MediaFiles
from pig.engine.serve.metrics import Metrics
from pig.errors import IndexDamaged, PigError

Signature = tuple[tuple[str, int, int, int], ...]  # a folder's files: name, inode, size, mtime


@dataclass(frozen=True)
class ServeOptions:
    """Batching, queueing and reload settings (``pig-engine serve`` flags)."""

    max_batch: int = 64  # texts per encoder call
    # How long the first request of a batch waits for company. 0: batch what queued while the
    # encoder was busy, which adds no latency and, on CPU, where a call costs about the same
    # per query at any batch size, loses nothing; a GPU call costs about the same for 1 or 64
    # queries, so there a few ms of wait buy throughput at moderate load.
    max_wait_ms: float = 0.0
    max_queue: int = 512  # requests waiting for the encoder; more get 503
    reload_seconds: float = 0.5  # how often the committed generation is checked
    media_redirect: bool = False  # an object's media: redirect (presigned URL), not proxy
    model_name: str | None = None  # the name /v1/models lists (default: the bundle's folder)


def default_model_name(bundle_dir: str | os.PathLike[str]) -> str:
    """The served model's name when ``--model-name`` is not given: the bundle folder's."""
    return Path(bundle_dir).resolve().name or "pig"


@dataclass(frozen=True)
class _Queued:
    """A job as queued: its texts' token ids ``[n, L]`` (and truncation flags) for an
    embeddings job (``prepared`` None), or its search requests, prepared."""

    ids: np.ndarray
    prepared: list[Prepared] | None = None


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # [n, D] float32, unit rows
    tokens: list[int]  # tokens per text, BOS and EOS included (after truncation)


@dataclass(frozen=True)
class Found:
    generations: list[int]  # per index, in --index order
    answers: list[Answer]  # per request


class Service:
    """See the module docstring. Close with :meth:`close`."""

    def __init__(self, index_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 bundle_dir: str | os.PathLike[str] | None = None, backend: str = "auto",
                 precision: str | None = None, options: ServeOptions = ServeOptions(),
                 log: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.log = log or (lambda _msg: None)
        self.metrics = Metrics()
        self.engine = QueryEngine(index_dirs, bundle_dir, backend, precision, log=log,
                                  view=False)
        self.index_dirs = [idx.path for idx in self.engine.indexes]  # a hit's index: i
        bundle = self.engine.bundle
        self.model = bundle.fingerprint
        self.model_name = options.model_name or default_model_name(bundle.dir)
        self.model_created = int((Path(bundle.dir) / "manifest.json").stat().st_mtime)
        self.dim = bundle.embedding_dim
        self._index_lock = threading.Lock()
        self._logged = [""] * len(self.index_dirs)  # the last reason logged, per index
        # taken out of service: position -> (reason, the folder's signature then)
        self._out: dict[int, tuple[str, Signature]] = {}
        try:
            for idx in self.engine.indexes:
                idx.check_catalog()
        except BaseException:
            self.engine.close()
            raise
        self._publish_state()
        self.budget = CostBudget()
        self.media = MediaFiles()
        self.metrics.cost_in_flight.set_function(lambda: self.budget.held)
        self.batcher: MicroBatcher[_Queued, Encoded | Found] = MicroBatcher(
            self._run, max_batch=options.max_batch, max_wait_s=options.max_wait_ms / 1000,
            max_queue=options.max_queue)
        self.metrics.track_queue(lambda: self.batcher.depth)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="pig-index-watch", daemon=True)
        self._watcher.start()

    # --- what the routes call ------------------------------------------------------------
    def submit(self, job: list[str] | list[Request]) -> asyncio.Future[Encoded | Found]:
        """Tokenize ``job`` (texts to embed, or search requests) and queue it for the batcher
        (raises QueueFull / Closed instead of queueing, PigError for a text the tokenizer
        refuses, TooCostly past the cost budget of one request); call it on the event loop
        that awaits the result. A search request may name a file as an example only if the
        catalog holds it. Its cost is held until the request's answer is sent
        (:mod:`.budget`)."""
        texts = all(isinstance(j, str) for j in job)
        release = self.budget.reserve(
            len(job), None if texts else max(r.k for r in job))  # type: ignore[union-attr]
        try:
            with self.metrics.stage("tokenize"):
                if texts:
                    ids, _ = self.engine.tokenizer.tokenize(job, parallel=False)  # type: ignore[arg-type]
                    item = _Queued(ids)
                else:
                    prepared = [self.engine.prepare(r, files=False) for r in job]  # type: ignore[arg-type]
                    item = _Queued(np.concatenate([p.ids for p in prepared]), prepared)
            future = self.batcher.submit(item, max(1, len(item.ids)))
        except BaseException:
            release()
            raise
        if not self.budget.defer(release):
            future.add_done_callback(lambda _: release())
        return future

    def state(self) -> list[tuple[int, int]]:
        """(generation, vectors) being served, per index in ``index_dirs`` order (no vectors
        from an index taken out of service)."""
        with self._index_lock:
            return [(idx.generation, 0 if position in self._out else idx.counts()["vectors"])
                    for position, idx in enumerate(self.engine.indexes)]

    def video(self, index: int, key: int) -> tuple[FileRecord, list[SegmentRecord]] | None:
        """The catalog row and segments of an indexed video with ``key`` in the served
        generation of the index at position ``index`` (a hit's ``index``; in range)."""
        with self._index_lock, self._degrading(index):
            idx = self.engine.indexes[index]
            rec = idx.record(key)
            if rec is None or rec.status != INDEXED:
                return None
            return rec, idx.segments_of(rec.path)

    def library(self) -> dict[str, Any]:
        """What the served indexes hold (:meth:`VideoIndex.summary`, summed over them)."""
        with self._index_lock, self._degrading():
            parts = [idx.summary() for idx in self.engine.indexes]
        out: dict[str, Any] = {"files": 0, "segments": 0, "duration_s": 0.0}
        for part in parts:
            for name in out:
                out[name] += part[name]
            for name in ("extensions", "codecs", "folders"):
                for value, n in part[name].items():
                    out.setdefault(name, {})[value] = out.get(name, {}).get(value, 0) + n
        return out

    def thumbnail(self, index: int, key: int, segment: int) -> bytes | None:
        """The JPEG thumbnail of segment ``segment`` of the indexed video ``key`` in the
        served generation of the index at position ``index`` (in range)."""
        with self._index_lock, self._degrading(index):
            return self.engine.indexes[index].thumbnail(key, segment)

    def close(self) -> None:
        """Finish the queued requests, stop the threads, close the searcher."""
        self._stop.set()
        self.batcher.close()
        self._watcher.join()
        self.engine.close()

    # --- the batcher's worker ------------------------------------------------------------
    def _run(self, queued: list[_Queued]) -> list[Encoded | Found | BaseException]:
        """One encoder call for every text of the queued jobs, then one
        :meth:`QueryEngine.execute` for every search request among them."""
        m, engine = self.metrics, self.engine
        ids = np.concatenate([item.ids for item in queued])
        with m.stage("encode"):
            vectors = engine.encode(ids)
        m.batch_size.observe(len(ids))
        tokens = text_lengths(ids, engine.tokenizer.spec.eos_id).tolist()
        out: list[Encoded | Found | BaseException] = []
        prepared, parts, owners = [], [], []
        start = 0
        for i, item in enumerate(queued):
            rows = slice(start, start + len(item.ids))
            start = rows.stop
            if item.prepared is None:
                out.append(Encoded(vectors[rows], tokens[rows]))
                continue
            out.append(Found([], []))
            at = rows.start
            for p in item.prepared:
                prepared.append(p)
                parts.append(vectors[at:at + len(p.ids)])
                owners.append(i)
                at += len(p.ids)
        if prepared:
            with m.stage("search"), self._index_lock:
                generations = [idx.generation for idx in engine.indexes]
                try:
                    with self._degrading():
                        answers = engine.execute(prepared, parts)
                        if damaged := next((a for a in answers
                                            if isinstance(a, IndexDamaged)), None):
                            raise damaged  # a search covers every index: the 503 names it
                except IndexDamaged as err:
                    answers = [err] * len(prepared)
            for i, answer in zip(owners, answers, strict=True):
                found = out[i]
                if isinstance(found, Found):
                    if isinstance(answer, PigError):
                        out[i] = answer
                    else:
                        found.answers.append(answer)
                        found.generations[:] = generations
        return out

    # --- indexes taken out of service (degraded) ------------------------------------------
    @contextlib.contextmanager
    def _degrading(self, position: int | None = None) -> Iterator[None]:
        """Refuse to use the index at ``position`` (None: any, for what covers every index)
        while it is out of service, and take out the index whose catalog raises
        :class:`IndexDamaged` (its position found by the path the error names). Under
        ``_index_lock``."""
        out = sorted(self._out) if position is None else [p for p in (position,)
                                                           if p in self._out]
        if out:
            raise IndexDamaged("; ".join(
                f"index {p} ({self.index_dirs[p]}) is out of service: {self._out[p][0]}"
                for p in out))
        try:
            yield
        except IndexDamaged as err:
            named = [i for i, d in enumerate(self.index_dirs)
                     if str(err).startswith(f"{d}{os.sep}")]
            self._take_out(named[0] if named else position or 0, str(err))
            raise

    def _take_out(self, position: int, reason: str) -> None:
        """Answer the searches and look-ups of the index at ``position`` with a 503 naming
        ``reason`` until its folder changes and opens again, and close it (so that
        ``restore-catalog`` meets no reader of a damaged catalog); say so once per distinct
        reason. Under ``_index_lock``."""
        if position not in self._out:
            self.engine.indexes[position].close()
        self._out[position] = (reason, _signature(self.index_dirs[position]))
        self.metrics.reloads.labels(str(position), "error").inc()
        self.metrics.out_of_service.labels(str(position)).set(1)
        if reason != self._logged[position]:
            self.log(f"pig-engine serve: index {position} taken out of service (degraded): "
                     f"{reason}")
            self._logged[position] = reason

    def degraded(self) -> list[tuple[int, str]]:
        """(position, reason) of each index taken out of service."""
        with self._index_lock:
            return sorted((position, reason) for position, (reason, _) in self._out.items())

    # --- live generations ----------------------------------------------------------------
    def _publish_state(self) -> list[tuple[int, int]]:
        """Set the per-index gauges (label ``index``: the position); returns :meth:`state`."""
        state = self.state()
        for position, (generation, vectors) in enumerate(state):
            self.metrics.generation.labels(str(position)).set(generation)
            self.metrics.vectors.labels(str(position)).set(vectors)
        return state

    def _watch(self) -> None:
        while not self._stop.wait(self.options.reload_seconds):
            for position in range(len(self.index_dirs)):
                try:
                    self._check(position)
                except Exception as err:  # the watcher must outlive any failure
                    if not isinstance(err, PigError | OSError | sqlite3.Error):
                        err = RuntimeError(f"unexpected {type(err).__name__}: {err}")
                    with self._index_lock:
                        self._take_out(position, str(err))

    def _check(self, position: int) -> None:
        """Keep the index at ``position`` what its folder holds: reload a new commit (or
        another index put in its place), take it out while its files are gone, changed in
        place or unreadable, and back in once its folder can be opened again."""
        directory = self.index_dirs[position]
        served = self.engine.indexes[position]  # only this thread changes it
        out = self._out.get(position)
        if out is not None and _signature(directory) == out[1]:
            return  # nothing changed since it was taken out: do not reopen (and rehash)
        if not (directory / CATALOG_NAME).is_file():
            with self._index_lock:
                self._take_out(position, f"{directory}: the index folder (or its catalog) is "
                                         "gone")
            return
        if out is None and VideoIndex.committed_id(directory) == served.commit_id:
            if changed := served.changed_files():
                with self._index_lock:
                    self._take_out(position, "; ".join(changed))
            return
        fresh = VideoIndex.open(directory, view=False)
        try:
            if fresh.fingerprint != self.model:
                raise PigError(f"{directory}: now holds vectors of another model "
                               f"({fresh.fingerprint[:16]})")
            if out is not None:
                fresh.check_catalog()
        except BaseException:
            fresh.close()
            raise
        with self._index_lock:
            old = self.engine.replace_index(position, fresh)
            came_back = self._out.pop(position, None) is not None
        old.close()
        self._logged[position] = ""
        self.metrics.reloads.labels(str(position), "ok").inc()
        self.metrics.out_of_service.labels(str(position)).set(0)
        generation, vectors = self._publish_state()[position]
        again = " again" if came_back else ""
        self.log(f"pig-engine serve: {directory}: now serving{again} generation {generation} "
                 f"({vectors} vectors)")


def _signature(directory: Path) -> Signature:
    """What a folder holds, cheaply: (name, inode, size, mtime) of each file in it."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return ()
    out = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        out.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))
