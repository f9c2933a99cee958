"""The indexing pipeline behind ``pig-engine index``: decode -> preprocess -> encode -> index.

Threads, not processes: PyAV decodes and the C++ preprocessor resizes with the GIL released,
and threads let a worker preprocess straight into the shared batch input buffer::

    main thread:  plan files (catalog)            encode batch k | add + commit  ...
    workers (N):  stat+hash, decode, sample a segment -> reserve a slot in the open batch
                  -> preprocess into buffer[slot], next segment ...  (batch k+1, k+2 fill
                  while k encodes)

A slot holds one segment (``[T, 3, S, S]``); a file's segments may span several batches. The
main thread keeps a file's segment vectors until all of them are encoded and adds the file
with all of its segments at once, so a commit (or a crash) has a file whole or not at all.
The per-file work, :func:`decode_file`, is shared with the Ray runner.

A small pool of batch buffers bounds memory and is the back-pressure between the stages: a
worker waits for a free buffer only when every buffer is queued for, or in, the encoder.
The main thread alone touches the index (SQLite connections are per thread). Commits happen
every ``commit_seconds`` and at the end, so a crash loses at most the batches encoded since
the last commit. Ctrl-C or SIGTERM stops taking new files, encodes and commits what is in
flight (the last partial batch included) and reports ``interrupted``; a second one stops at
once, keeping what was added.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pig.engine.backends import Backend, open_backend
from pig.engine.bundle import Bundle
from pig.engine.index import Entry, Plan, VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.work import FileFailure, decode_file, preprocess_segment
from pig.engine.ingest.writer import Embed, IndexWriter, run_plans
from pig.engine.media.decoders import choose_decoder
from pig.engine.media.segments import Segmenting
from pig.engine.media.video import VideoSegment
from pig.engine.recipe import PreprocessRecipe
from pig.signals import StopSignals


@dataclass(frozen=True)
class _Slot:
    """What a batch slot holds: segment ``ordinal`` of task ``task``."""

    task: int
    ordinal: int


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


class Pipeline:
    """Runs decode/preprocess workers against one encoder and one writable index."""

    def __init__(self, encoder: Backend, recipe: PreprocessRecipe,
                 options: PipelineOptions | None = None) -> None:
        self.encoder = encoder
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
        encoded: dict[int, dict[int, np.ndarray]] = {}  # task -> ordinal -> vector
        done: dict[int, Entry] = {}  # tasks decoded whole, waiting for their last vectors
        void: set[int] = set()  # failed tasks: vectors still coming for them are dropped
        try:
            futures = [pool.submit(self._work, task, plan, segmenting, assembler, results)
                       for task, plan in enumerate(todo)]
            pending, draining = len(todo), False
            while pending:
                if signals.signum and not draining:  # finish the files in flight, take no more
                    draining = True
                    cancelled = sum(f.cancel() for f in futures)
                    pending -= cancelled
                    assembler.cancel(cancelled)
                    continue
                try:
                    item = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Done):
                    if isinstance(item.result, FileFailure):
                        encoded.pop(item.task, None)
                        void.add(item.task)
                        writer.fail(item.result)
                        pending -= 1
                        continue
                    done[item.task] = item.result
                    ready = [item.task]
                else:
                    vectors = self.encoder.encode_video(item.buffer[: item.reserved])
                    assembler.release(item.buffer)
                    for slot, v in zip(item.entries[: item.reserved], vectors, strict=True):
                        if slot is not None and slot.task not in void:
                            encoded.setdefault(slot.task, {})[slot.ordinal] = v
                    ready = list({s.task for s in item.entries if s is not None})
                    writer.encoded(sum(s is not None for s in item.entries))
                for task in ready:
                    entry = done.get(task)
                    got = encoded.get(task, {})
                    if entry is None or len(got) < len(entry.spans):
                        continue
                    writer.add(entry, np.stack([got[i] for i in range(len(entry.spans))]))
                    del done[task], encoded[task]
                    pending -= 1
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _work(self, task: int, plan: Plan, segmenting: Segmenting, assembler: _Assembler,
              results: queue.Queue[Any]) -> None:
        """One file (worker thread): each decoded segment is preprocessed into a batch slot."""
        try:
            files = decode_file(plan, self.recipe, segmenting, self.whole_reader)
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
                assembler.fill(batch, slot, _Slot(task, item.ordinal))
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
    try:
        info = {"bundle": str(Path(bundle.dir).resolve()), "backend": encoder.name,
                "device": encoder.device, "precision": encoder.precision}
        yield info, Pipeline(encoder, bundle.recipe, options)._embed
    finally:
        encoder.close()
