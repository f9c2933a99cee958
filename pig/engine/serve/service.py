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

A damaged catalog (:class:`~pig.errors.IndexDamaged`, met by a search, a look-up or the
watcher) marks its index degraded: ``/v1/health/ready`` answers 503 naming it, and searches
answer 503 with the same line (embeddings go on), until the watcher reopens the index and its
catalog passes ``quick_check`` (after ``pig-engine restore-catalog``). Each catalog is checked
so at start-up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pig.engine.backends.base import text_lengths
from pig.engine.index import INDEXED, FileRecord, VideoIndex, file_digest
from pig.engine.index.catalog import SegmentRecord
from pig.engine.query.engine import Prepared, QueryEngine
from pig.engine.query.request import Answer, Request
from pig.engine.serve.batcher import MicroBatcher
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
        self.engine = QueryEngine(index_dirs, bundle_dir, backend, precision, log=log)
        self.index_dirs = [idx.path for idx in self.engine.indexes]  # a hit's index: i
        bundle = self.engine.bundle
        self.model = bundle.fingerprint
        self.model_name = options.model_name or default_model_name(bundle.dir)
        self.model_created = int((Path(bundle.dir) / "manifest.json").stat().st_mtime)
        self.dim = bundle.embedding_dim
        self._index_lock = threading.Lock()
        self._reload_errors = [""] * len(self.index_dirs)  # the last one logged, per index
        self.damage = [""] * len(self.index_dirs)  # per index: why it is degraded ("": not)
        try:
            for idx in self.engine.indexes:
                idx.check_catalog()
        except BaseException:
            self.engine.close()
            raise
        self._publish_state()
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
        refuses); call it on the event loop that awaits the result. A search request may
        name a file as an example only if the catalog holds it."""
        with self.metrics.stage("tokenize"):
            if all(isinstance(j, str) for j in job):
                ids, _ = self.engine.tokenizer.tokenize(job, parallel=False)  # type: ignore[arg-type]
                item = _Queued(ids)
            else:
                prepared = [self.engine.prepare(r, files=False) for r in job]  # type: ignore[arg-type]
                item = _Queued(np.concatenate([p.ids for p in prepared]), prepared)
        return self.batcher.submit(item, max(1, len(item.ids)))

    def state(self) -> list[tuple[int, int]]:
        """(generation, vectors) being served, per index in ``index_dirs`` order."""
        with self._index_lock:
            return [(idx.generation, idx.counts()["vectors"]) for idx in self.engine.indexes]

    def video(self, index: int, key: int) -> tuple[FileRecord, list[SegmentRecord]] | None:
        """The catalog row and segments of an indexed video with ``key`` in the served
        generation of the index at position ``index`` (a hit's ``index``; in range)."""
        with self._index_lock, self._degrading():
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
        with self._index_lock, self._degrading():
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

    # --- degraded indexes ----------------------------------------------------------------
    @contextlib.contextmanager
    def _degrading(self) -> Iterator[None]:
        """Refuse to use a degraded index, and mark the index whose catalog raises
        :class:`IndexDamaged` degraded (its position found by the path the error names)."""
        if why := next((d for d in self.damage if d), ""):
            raise IndexDamaged(why)
        try:
            yield
        except IndexDamaged as err:
            named = [i for i, d in enumerate(self.index_dirs)
                     if str(err).startswith(f"{d}{os.sep}")]
            self._degrade(named[0] if named else 0, err)
            raise

    def _degrade(self, position: int, err: IndexDamaged) -> None:
        """Mark the index at ``position`` degraded and close its catalog connection (so that
        ``restore-catalog`` meets no reader of the damaged file). Under ``_index_lock``."""
        if not self.damage[position]:
            self.log(f"pig-engine serve: {self.index_dirs[position]}: degraded ({err})")
            self.engine.indexes[position].close()
        self.damage[position] = str(err)

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
                except IndexDamaged as err:
                    with self._index_lock:
                        self._degrade(position, err)
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
        current = self.engine.indexes[position].generation  # only this thread changes it
        damaged = bool(self.damage[position])  # reopened once its catalog checks out again
        if VideoIndex.committed_generation(directory) == current and not damaged:
            return
        fresh = VideoIndex.open(directory, view=True)
        try:
            if fresh.fingerprint != self.model:
                raise PigError(f"{directory}: now holds vectors of another model "
                               f"({fresh.fingerprint[:16]})")
            if damaged:
                fresh.check_catalog()
        except BaseException:
            fresh.close()
            raise
        if fresh.generation == current and not damaged:
            fresh.close()
            return
        with self._index_lock:
            old = self.engine.replace_index(position, fresh)
            if damaged:
                self.damage[position] = ""
                self.log(f"pig-engine serve: {directory}: catalog readable again")
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
