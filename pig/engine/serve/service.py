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
* the watcher thread polls each index's committed generation
  (:meth:`VideoIndex.committed_generation`, a read of the catalog's commit record) every
  ``reload_seconds``, opens a newer generation *outside* the lock (so queries go on
  meanwhile), checks it, then swaps it in under the lock. Each index is reloaded on its own:
  one that cannot be reopened keeps serving its previous generation, the others move on. A
  generation is what one commit made, so a half-committed state is never served; removals
  arrive the same way.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pig.engine.index import INDEXED, FileRecord, Hit, VideoIndex, file_digest
from pig.engine.index.catalog import SegmentRecord
from pig.engine.index.shards import search_shards
from pig.engine.query.search import Searcher
from pig.engine.serve.batcher import MicroBatcher
from pig.engine.serve.metrics import Metrics
from pig.errors import PigError


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
        self.searcher = Searcher(index_dirs, bundle_dir, backend, precision, log=log)
        self.index_dirs = [idx.path for idx in self.searcher.indexes]  # a hit's index: i
        bundle = self.searcher.bundle
        self.model = bundle.fingerprint
        self.model_name = options.model_name or default_model_name(bundle.dir)
        self.model_created = int((Path(bundle.dir) / "manifest.json").stat().st_mtime)
        self.dim = bundle.embedding_dim
        self._index_lock = threading.Lock()
        self._reload_errors = [""] * len(self.index_dirs)  # the last one logged, per index
        self._publish_state()
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
        queueing, PigError for a text the tokenizer refuses); call it on the event loop that
        awaits the result."""
        with self.metrics.stage("tokenize"):
            ids, cut = self.searcher.tokenizer.tokenize(job.texts, parallel=False)
        return self.batcher.submit(_Tokenized(job, ids, cut), len(job.texts))

    def state(self) -> list[tuple[int, int]]:
        """(generation, vectors) being served, per index in ``index_dirs`` order."""
        with self._index_lock:
            return [(idx.generation, idx.counts()["vectors"]) for idx in self.searcher.indexes]

    def video(self, index: int, key: int) -> tuple[FileRecord, list[SegmentRecord]] | None:
        """The catalog row and segments of an indexed video with ``key`` in the served
        generation of the index at position ``index`` (a hit's ``index``; in range)."""
        with self._index_lock:
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
            for (k, exact, group_by), members in groups.items():
                q = np.concatenate([vectors[rows[i]] for i in members])
                hits = search_shards(s.indexes, q, k, exact=exact, group_by=group_by)
                start = 0
                for i in members:
                    n = len(jobs[i].texts)
                    out[i] = Found(generations, hits[start:start + n], queued[i].truncated)
                    start += n
        return out  # type: ignore[return-value]  # every slot is filled above

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
            for position, directory in enumerate(self.index_dirs):
                try:
                    self._reload(position)
                except Exception as err:  # the watcher must outlive any failure
                    # keep serving this index's last good generation; say why once per
                    # distinct error
                    self.metrics.reloads.labels(str(position), "error").inc()
                    if not isinstance(err, PigError | OSError | sqlite3.Error):
                        err = RuntimeError(f"unexpected {type(err).__name__}: {err}")
                    if str(err) != self._reload_errors[position]:
                        self.log(f"pig-engine serve: {directory}: cannot open the new "
                                 f"generation ({err}); still serving the previous one")
                    self._reload_errors[position] = str(err)

    def _reload(self, position: int) -> None:
        """Swap in the index at ``position`` if a newer generation was committed there."""
        directory = self.index_dirs[position]
        current = self.searcher.indexes[position].generation  # only this thread changes it
        if VideoIndex.committed_generation(directory) == current:
            return
        fresh = VideoIndex.open(directory, view=True)
        if fresh.fingerprint != self.model:
            fresh.close()
            raise PigError(f"{directory}: now holds vectors of another model "
                           f"({fresh.fingerprint[:16]})")
        if fresh.generation == current:
            fresh.close()
            return
        with self._index_lock:
            old = self.searcher.replace_index(position, fresh)
        old.close()
        self._reload_errors[position] = ""
        self.metrics.reloads.labels(str(position), "ok").inc()
        generation, vectors = self._publish_state()[position]
        self.log(f"pig-engine serve: {directory}: now serving generation {generation} "
                 f"({vectors} vectors)")


def media_file(record: FileRecord) -> tuple[Path, os.stat_result] | None:
    """The file of ``record`` and its stat if it is still the regular file that was indexed,
    else None: a path is only ever taken from the catalog. Same size and modification time
    is the file; same size and another time (a ``touch``, a copy) is the file if its content
    digest is the indexed one (hashed once per state of the file)."""
    path = Path(record.path)
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size != record.size:
        return None
    if st.st_mtime_ns != record.mtime_ns and not _same_content(
            record.path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            record.digest):
        return None
    return path, st


@functools.lru_cache(maxsize=4096)
def _same_content(path: str, dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int,
                  digest: str | None) -> bool:
    """Whether ``path`` (in the state its stat fields name) holds content of ``digest``."""
    try:
        return digest is not None and file_digest(path) == digest
    except OSError:
        return False
