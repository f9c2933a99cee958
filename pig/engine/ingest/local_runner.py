"""The indexing pipeline behind ``pig-engine index``: decode -> preprocess -> encode -> index.

Threads, not processes: PyAV decodes and the C++ preprocessor resizes with the GIL released,
and threads let a worker preprocess straight into the shared batch input buffer::

    main thread:  plan files (catalog)            encode batch k | add + commit  ...
    workers (N):  stat+hash, decode, sample a segment -> reserve a slot in the open batch
                  -> preprocess into buffer[slot], next segment ...  (batch k+1, k+2 fill
                  while k encodes)

A slot holds one segment (``[T, 3, S, S]``); a file's segments may span several batches. The
main thread adds a file's segments as they are encoded, in order (a long file is *partial*
in the catalog until its last one, and a later run resumes it after the last committed
segment). The per-file work, :func:`decode_file`, is shared with the Ray runner.

A small pool of batch buffers bounds memory and is the back-pressure between the stages: a
worker waits for a free buffer only when every buffer is queued for, or in, the encoder.
The main thread alone touches the index (SQLite connections are per thread); encoder calls
run on their own thread (:class:`_EncoderThread`) so that a signal is handled at once.
Commits happen every ``commit_seconds`` and at the end, so a crash loses at most the batches
encoded since the last commit. Ctrl-C or SIGTERM stops the workers, lets the batch in the
encoder finish, adds its segments and commits, and reports ``interrupted``; a second one
stops at once, keeping every commit.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pig.engine.backends import Backend, open_backend
from pig.engine.bundle import Bundle
from pig.engine.index import Entry, Plan, VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.work import (
    FileFailure,
    decode_file,
    preprocess_segment,
    segment_thumbnail,
)
from pig.engine.ingest.writer import Embed, IndexWriter, run_plans
from pig.engine.media.decoders import choose_decoder
from pig.engine.media.segments import Segmenting
from pig.engine.media.video import VideoSegment
from pig.engine.recipe import PreprocessRecipe
from pig.signals import StopSignals


@dataclass(frozen=True)
class _Slot:
    """What a batch slot holds: segment ``ordinal`` of task ``task``, its span and the
    file's frame count."""

    task: int
    ordinal: int
    span: tuple[float, float]
    frames: int
    thumbnail: bytes | None


@dataclass(frozen=True)
class _Started:
    """Task ``task`` was opened: its Entry (stat, digest) and how many segments it has."""

    task: int
    entry: Entry
    total: int


@dataclass
class _File:
    """The main thread's view of one file in flight: the vectors encoded and not yet added,
    and the next segment to add (a resumed file starts after its committed ones)."""

    resume: int  # first segment of this run
    entry: Entry | None = None  # from _Started
    total: int | None = None
    final: Entry | None = None  # from _Done: every segment was decoded
    encoded: dict[int, tuple[np.ndarray, _Slot]] = field(default_factory=dict)
    next: int = -1

    def __post_init__(self) -> None:
        self.next = self.resume

    def commit(self, writer: IndexWriter) -> bool:
        """Add the segments encoded in a row from ``next``: a long file grows as its segments
        are encoded, marked partial until its last; True once the file is whole."""
        run: list[tuple[np.ndarray, _Slot]] = []
        while self.next + len(run) in self.encoded:
            run.append(self.encoded.pop(self.next + len(run)))
        end = None if self.final is None else self.resume + len(self.final.spans)
        complete = self.next + len(run) == end
        if not (run or complete):
            return False
        base = self.final or self.entry
        assert base is not None  # a segment is encoded only after its file's _Started
        entry = replace(base, frames=run[-1][1].frames if run else base.frames,
                        spans=tuple(slot.span for _, slot in run),
                        thumbnails=tuple(slot.thumbnail for _, slot in run))
        writer.extend(entry, self.next, [v for v, _ in run], complete=complete,
                      total=self.total)
        self.next += len(run)
        return complete


@dataclass(frozen=True)
class _Done:
    """Task ``task`` decoded all of its segments: ``result`` is its Entry or its failure."""

    task: int
    result: Entry | FileFailure


@dataclass
class _Batch:
    buffer: np.ndarray
    entries: list[_Slot | None]
    reserved: int = 0
    filled: int = 0
    sealed: bool = False


class _Stopped(Exception):
    """The run is being torn down; a waiting worker gives up."""


class _Assembler:
    """Hands out batch slots to workers and emits a batch once it is full and written."""

    def __init__(self, buffers: Sequence[np.ndarray], batch_size: int, tasks: int,
                 out: queue.Queue[Any], stop: threading.Event) -> None:
        self._free = list(buffers)
        self._batch_size = batch_size
        self._tasks_left = tasks
        self._out = out
        self._stop = stop
        self._cond = threading.Condition()
        self._open: _Batch | None = None

    def reserve(self) -> tuple[_Batch, int]:
        with self._cond:
            while self._open is None:
                if self._stop.is_set():
                    raise _Stopped
                if self._free:
                    self._open = _Batch(self._free.pop(), [None] * self._batch_size)
                else:
                    self._cond.wait(0.1)
            batch, slot = self._open, self._open.reserved
            batch.reserved += 1
            if batch.reserved == self._batch_size:
                batch.sealed, self._open = True, None
            return batch, slot

    def fill(self, batch: _Batch, slot: int, entry: _Slot | None) -> None:
        with self._cond:
            batch.entries[slot] = entry
            batch.filled += 1
            self._emit_if_ready(batch)

    def task_done(self) -> None:
        """Called once per task; after the last one the partial open batch is emitted."""
        self.cancel(1)

    def cancel(self, tasks: int) -> None:
        """``tasks`` will never run (or have ended): emit the partial batch after the last."""
        with self._cond:
            self._tasks_left -= tasks
            if self._tasks_left == 0 and self._open is not None:
                batch, self._open = self._open, None
                batch.sealed = True
                self._emit_if_ready(batch)

    def release(self, buffer: np.ndarray) -> None:
        with self._cond:
            self._free.append(buffer)
            self._cond.notify_all()

    def _emit_if_ready(self, batch: _Batch) -> None:
        if batch.sealed and batch.filled == batch.reserved:
            self._out.put(batch)


class _EncoderThread:
    """Runs the encoder's calls on one daemon thread while the main thread waits in short
    steps, so that Ctrl-C is handled within a second even during a long encoder call. After
    a second Ctrl-C abandons a call, :attr:`busy` stays True: the backend must not be closed
    under it (the process is exiting)."""

    def __init__(self, encoder: Backend) -> None:
        self._encoder = encoder
        self._jobs: queue.Queue[tuple[np.ndarray, Future[np.ndarray]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.busy = False

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pig-encode", daemon=True)
            self._thread.start()
        done: Future[np.ndarray] = Future()
        self.busy = True
        self._jobs.put((x, done))
        while True:
            try:
                out = done.result(timeout=0.1)
            except FutureTimeout:
                continue
            except BaseException:
                self.busy = not done.done()  # a second Ctrl-C left the call running
                raise
            self.busy = False
            return out

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            x, done = job
            try:
                done.set_result(self._encoder.encode_video(x))
            except BaseException as err:  # handed to the waiting caller
                done.set_exception(err)

    def close(self) -> None:
        if self._thread is not None and not self.busy:
            self._jobs.put(None)
            self._thread.join()


class Pipeline:
    """Runs decode/preprocess workers against one encoder and one writable index."""

    def __init__(self, encoder: Backend, recipe: PreprocessRecipe,
                 options: PipelineOptions | None = None) -> None:
        self.encoder = encoder
        self.encoder_thread = _EncoderThread(encoder)
        self.recipe = recipe
        self.options = options or PipelineOptions()
        self.decoder = choose_decoder(self.options.decoder)
        # PyAV decodes inside read_segments' own pass; another decoder takes whole-video files
        chosen = self.decoder.decoder
        self.whole_reader = None if chosen.name == "pyav" else chosen.read
        if self.options.batch_size < 1 or self.options.workers < 1 or self.options.buffers < 2:
            raise ValueError(f"need batch_size >= 1, workers >= 1, buffers >= 2: {self.options}")

    def run(self, index: VideoIndex, files: Iterable[str | os.PathLike[str]],
            progress: bool = False) -> IndexReport:
        """Index ``files`` (already discovered) into ``index``; see the module docstring."""
        return run_plans(index, files, self.options, self._embed, progress)

    def _embed(self, todo: list[Plan], writer: IndexWriter, signals: StopSignals) -> None:
        opts = self.options
        results: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        # the encoder's own input arrays (pinned memory for TensorRT): no copy before encoding
        buffers = self.encoder.video_input_buffers(opts.buffers, opts.batch_size)
        assembler = _Assembler(buffers, opts.batch_size, len(todo), results, stop)
        pool = ThreadPoolExecutor(opts.workers, thread_name_prefix="pig-decode")
        segmenting = writer.index.segmenting
        files = {task: _File(plan.resume) for task, plan in enumerate(todo)}
        try:
            for task, plan in enumerate(todo):
                pool.submit(self._work, task, plan, segmenting, assembler, results)
            pending = len(todo)
            while pending and not signals.signum:  # Ctrl-C: the batch encoded is committed
                try:
                    item = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Started):
                    f = files[item.task]
                    f.entry, f.total = item.entry, item.total
                    writer.planned(item.total - f.resume)
                    continue
                if isinstance(item, _Done):
                    if isinstance(item.result, FileFailure):
                        files.pop(item.task)
                        writer.fail(item.result)
                        pending -= 1
                        continue
                    files[item.task].final = item.result
                    ready = [item.task]
                else:
                    vectors = self.encoder_thread.encode(item.buffer[: item.reserved])
                    assembler.release(item.buffer)
                    for slot, v in zip(item.entries[: item.reserved], vectors, strict=True):
                        if slot is not None and slot.task in files:
                            files[slot.task].encoded[slot.ordinal] = (v, slot)
                    ready = list({s.task for s in item.entries if s is not None})
                    writer.encoded(sum(s is not None for s in item.entries))
                for task in ready:
                    if task in files and files[task].commit(writer):
                        del files[task]
                        pending -= 1
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _work(self, task: int, plan: Plan, segmenting: Segmenting, assembler: _Assembler,
              results: queue.Queue[Any]) -> None:
        """One file (worker thread): each decoded segment is preprocessed into a batch slot."""
        try:
            files = decode_file(plan, self.recipe, segmenting, self.whole_reader,
                                lambda entry, total: results.put(_Started(task, entry, total)),
                                thumbnails=False)
            for item in files:
                if not isinstance(item, VideoSegment):
                    results.put(_Done(task, item))
                    return
                batch, slot = assembler.reserve()
                failure = preprocess_segment(item, self.recipe, batch.buffer[slot], plan.path)
                if failure is not None:
                    assembler.fill(batch, slot, None)
                    files.close()
                    results.put(_Done(task, failure))
                    return
                assembler.fill(batch, slot, _Slot(task, item.ordinal, (item.start_s, item.end_s),
                                                  item.frame_count, segment_thumbnail(item)))
        except _Stopped:
            pass
        except BaseException as err:  # a bug, not a bad file: stop the run with it
            results.put(err)
        finally:
            assembler.task_done()


@contextlib.contextmanager
def open_local(bundle: Bundle, backend: str, precision: str | None, options: PipelineOptions,
                 log: Callable[[str], None] | None) -> Iterator[tuple[dict[str, Any], Embed]]:
    """This process: decode threads and one encoder (:class:`Pipeline`)."""
    kwargs: dict[str, Any] = {"log": log} if log is not None else {}
    encoder = open_backend(bundle, backend, precision, branches=("video",),
                           threads=options.encoder_threads, **kwargs)
    pipeline: Pipeline | None = None
    try:
        info = {"bundle": str(Path(bundle.dir).resolve()), "backend": encoder.name,
                "device": encoder.device, "precision": encoder.precision}
        pipeline = Pipeline(encoder, bundle.recipe, options)
        yield info, pipeline._embed
    finally:
        if pipeline is None or not pipeline.encoder_thread.busy:
            if pipeline is not None:
                pipeline.encoder_thread.close()
            encoder.close()  # else a second Ctrl-C left a call running: the process exits
