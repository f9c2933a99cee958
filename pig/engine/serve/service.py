"""What the routes call: one :class:`Searcher` over one index or several (shards of one
bundle fingerprint, searched as one), each kept at its newest committed generation, and the
micro-batcher in front of the encoder.

Threads and what they touch:

* a request's texts are tokenized on the event loop as it is queued (the tokenizer is only
  read from; the worker, the one serial resource, is spared that work, and a text the
  tokenizer refuses fails its own request, not a batch);
* the batcher's worker is the only caller of the text encoder (a TensorRT context has one
  stream; ONNX Runtime sessions are used from one thread), and it runs the batch's index
  searches;
* the indexes (each a read-only usearch view plus a SQLite snapshot) are used under
  ``_index_lock`` only, by the worker's searches, by catalog look-ups (``/v1/videos``) and by
  the swap to a new generation; usearch is not safe for a search concurrent with a change of
  the index object, and a snapshot's connection is not shared across threads without it;
* the watcher thread checks each index every ``reload_seconds``: the folder's commit id
  (:meth:`VideoIndex.committed_id`, unique per commit: another index put in the folder's
  place is seen whatever its generation number) and, while it is unchanged, the identity of
  the vectors files opened (:meth:`VideoIndex.changed_files`: a stat each). A new commit is
  opened *outside* the lock (so queries go on meanwhile), verified (sizes and checksums),
  then swapped in under the lock; a generation is what one commit made, so a half-committed
  state is never served. An index whose folder is gone, whose files changed in place or
  whose new commit cannot be opened is *taken out of service*: its searches (a search covers
  every index) get a 503 naming it and the cause, ``/v1/health/ready`` says ``degraded``
  naming it, the other routes serve on; once its folder changes again and opens, it is back.
  The vectors are read into memory (``view=False``), not memory-mapped: nothing done to the
  files can reach the served copy (a truncated mapped file is a SIGBUS that kills the whole
  server); bench/bench_served_files.py measures what that costs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pig.engine.index import INDEXED, FileRecord, Hit, VideoIndex
from pig.engine.index.catalog import SegmentRecord
from pig.engine.index.shards import search_shards
from pig.engine.query.search import Searcher
from pig.engine.serve.batcher import MicroBatcher
from pig.engine.serve.budget import CostBudget
from pig.engine.serve.media import MediaFiles
from pig.engine.serve.metrics import Metrics
from pig.errors import IndexDamaged, PigError


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
class Job:
    """One request's work: ``k`` None embeds only; otherwise search with ``k``, ``exact``
    and ``group_by``."""

    texts: list[str]
    k: int | None = None
    exact: bool | None = None
    group_by: str = "video"


@dataclass(frozen=True)
class _Tokenized:
    """A job with its texts' token ids ``[n, L]`` and truncation flags, as queued."""

    job: Job
    ids: np.ndarray
    truncated: list[bool]


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # [n, D] float32, unit rows
    tokens: list[int]  # tokens per text, BOS and EOS included (after truncation)


@dataclass(frozen=True)
class Found:
    generations: list[int]  # per index, in --index order
    hits: list[list[Hit]]
    truncated: list[bool]  # per query: longer than the model's text length (cut there)


class Service:
    """See the module docstring. Close with :meth:`close`."""

    def __init__(self, index_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 bundle_dir: str | os.PathLike[str] | None = None, backend: str = "auto",
                 precision: str | None = None, options: ServeOptions = ServeOptions(),
                 log: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.log = log or (lambda _msg: None)
        self.metrics = Metrics()
        self.searcher = Searcher(index_dirs, bundle_dir, backend, precision, log=log,
                                 view=False)
        self.index_dirs = [idx.path for idx in self.searcher.indexes]  # a hit's index: i
        bundle = self.searcher.bundle
        self.model = bundle.fingerprint
        self.model_name = options.model_name or default_model_name(bundle.dir)
        self.model_created = int((Path(bundle.dir) / "manifest.json").stat().st_mtime)
        self.dim = bundle.embedding_dim
        self._index_lock = threading.Lock()
        self._logged = [""] * len(self.index_dirs)  # the last reason logged, per index
        # taken out of service: position -> (reason, the folder's signature then)
        self._out: dict[int, tuple[str, tuple[tuple[str, int, int, int], ...]]] = {}
        self._publish_state()
        self.budget = CostBudget()
        self.media = MediaFiles()
        self.metrics.cost_in_flight.set_function(lambda: self.budget.held)
        self.batcher: MicroBatcher[_Tokenized, Encoded | Found] = MicroBatcher(
            self._run, max_batch=options.max_batch, max_wait_s=options.max_wait_ms / 1000,
            max_queue=options.max_queue)
        self.metrics.track_queue(lambda: self.batcher.depth)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="pig-index-watch", daemon=True)
        self._watcher.start()

    # --- what the routes call ------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future[Encoded | Found]:
        """Tokenize ``job`` and queue it for the batcher (raises QueueFull / Closed instead of
        queueing, PigError for a text the tokenizer refuses, TooCostly past the cost budget of
        one request); call it on the event loop that awaits the result. Its cost is held
        until the request's answer is sent (:mod:`.budget`)."""
        release = self.budget.reserve(len(job.texts), job.k)
        try:
            with self.metrics.stage("tokenize"):
                ids, cut = self.searcher.tokenizer.tokenize(job.texts, parallel=False)
            future = self.batcher.submit(_Tokenized(job, ids, cut), len(job.texts))
        except BaseException:
            release()
            raise
        if not self.budget.defer(release):
            future.add_done_callback(lambda _: release())
        return future

    def state(self) -> list[tuple[int, int]]:
        """(generation, vectors) being served, per index in ``index_dirs`` order."""
        with self._index_lock:
            return [(idx.generation, idx.counts()["vectors"]) for idx in self.searcher.indexes]

    def video(self, index: int, key: int) -> tuple[FileRecord, list[SegmentRecord]] | None:
        """The catalog row and segments of an indexed video with ``key`` in the served
        generation of the index at position ``index`` (a hit's ``index``; in range)."""
        with self._index_lock:
            self._refuse_out(index)
            idx = self.searcher.indexes[index]
            rec = idx.record(key)
            if rec is None or rec.status != INDEXED:
                return None
            return rec, idx.segments_of(rec.path)

    def close(self) -> None:
        """Finish the queued requests, stop the threads, close the searcher."""
        self._stop.set()
        self.batcher.close()
        self._watcher.join()
        self.searcher.close()

    # --- the batcher's worker ------------------------------------------------------------
    def _run(self, queued: list[_Tokenized]) -> list[Encoded | Found]:
        """One encoder call for every text of the queued jobs, then one search of the indexes
        per distinct (k, exact, group_by) among the search jobs."""
        jobs = [item.job for item in queued]
        ids = np.concatenate([item.ids for item in queued])
        m, s = self.metrics, self.searcher
        with m.stage("encode"):
            vectors = s.encoder.encode_text(ids)
        m.batch_size.observe(len(ids))
        eos = s.tokenizer.spec.eos_id
        tokens = (np.argmax(ids == eos, axis=1) + 1).tolist()
        bounds = np.cumsum([0, *(len(job.texts) for job in jobs)])
        rows = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        out: list[Encoded | Found | None] = [None] * len(jobs)
        groups: dict[tuple[int, bool | None, str], list[int]] = {}
        for i, job in enumerate(jobs):
            if job.k is None:
                out[i] = Encoded(vectors[rows[i]], tokens[rows[i]])
            else:
                groups.setdefault((job.k, job.exact, job.group_by), []).append(i)
        with m.stage("search"), self._index_lock:
            generations = [idx.generation for idx in s.indexes]
            if groups and self._out:  # a search would miss an index's hits: none is answered
                out_err = self._out_error()
                for members in groups.values():
                    for i in members:
                        out[i] = out_err  # type: ignore[assignment]
                groups = {}
            for (k, exact, group_by), members in groups.items():
                q = np.concatenate([vectors[rows[i]] for i in members])
                hits = search_shards(s.indexes, q, k, exact=exact, group_by=group_by)
                start = 0
                for i in members:
                    n = len(jobs[i].texts)
                    out[i] = Found(generations, hits[start:start + n], queued[i].truncated)
                    start += n
        return out  # type: ignore[return-value]

    def _out_error(self) -> IndexDamaged:
        """The error of a search while indexes are out of service (under the lock)."""
        return IndexDamaged("; ".join(
            f"index {p} ({self.index_dirs[p]}) is out of service: {reason}"
            for p, (reason, _) in sorted(self._out.items())))

    def _refuse_out(self, position: int) -> None:
        """Raise the out-of-service error of the index at ``position`` (under the lock)."""
        if position in self._out:
            raise IndexDamaged(f"index {position} ({self.index_dirs[position]}) is out of "
                               f"service: {self._out[position][0]}")

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
                    self._take_out(position, str(err))

    def _check(self, position: int) -> None:
        """Keep the index at ``position`` what its folder holds: reload a new commit (or
        another index put in its place), take it out while its files are gone, changed in
        place or unreadable, and back in once its folder can be opened again."""
        directory = self.index_dirs[position]
        served = self.searcher.indexes[position]  # only this thread changes it
        out = self._out.get(position)
        if out is not None and _signature(directory) == out[1]:
            return  # nothing changed since it was taken out: do not reopen (and rehash)
        if not (directory / "catalog.sqlite").is_file():
            self._take_out(position, f"{directory}: the index folder (or its catalog) is gone")
            return
        if out is None and VideoIndex.committed_id(directory) == served.commit_id:
            changed = served.changed_files()
            if changed:
                self._take_out(position, "; ".join(changed))
            return
        fresh = VideoIndex.open(directory, view=False)
        if fresh.fingerprint != self.model:
            fresh.close()
            raise PigError(f"{directory}: now holds vectors of another model "
                           f"({fresh.fingerprint[:16]})")
        with self._index_lock:
            old = self.searcher.replace_index(position, fresh)
            came_back = self._out.pop(position, None) is not None
        old.close()
        self._logged[position] = ""
        self.metrics.reloads.labels(str(position), "ok").inc()
        self.metrics.out_of_service.labels(str(position)).set(0)
        generation, vectors = self._publish_state()[position]
        again = " again" if came_back else ""
        self.log(f"pig-engine serve: {directory}: now serving{again} generation {generation} "
                 f"({vectors} vectors)")

    def _take_out(self, position: int, reason: str) -> None:
        """Answer the searches of the index at ``position`` with a 503 naming ``reason``
        until its folder changes and opens again; say so once per distinct reason."""
        directory = self.index_dirs[position]
        with self._index_lock:
            self._out[position] = (reason, _signature(directory))
        self.metrics.reloads.labels(str(position), "error").inc()
        self.metrics.out_of_service.labels(str(position)).set(1)
        if reason != self._logged[position]:
            self.log(f"pig-engine serve: index {position} taken out of service: {reason}")
            self._logged[position] = reason

    def degraded(self) -> list[tuple[int, str]]:
        """(position, reason) of each index taken out of service."""
        with self._index_lock:
            return sorted((position, reason) for position, (reason, _) in self._out.items())


def _signature(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
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
