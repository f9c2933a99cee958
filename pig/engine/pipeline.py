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
The per-file work, :func:`decode_file`, is shared with the other indexing engines.

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
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pig.engine import shots
from pig.engine.backends import Backend, open_backend
from pig.engine.backends.base import log_stderr
from pig.engine.backends.onnxruntime import OrtOptions
from pig.engine.bundle import Bundle
from pig.engine.decoders import choose_decoder
from pig.engine.display import display_path
from pig.engine.index import Entry, Plan, VideoIndex
from pig.engine.index.manifest import MANIFEST_NAME
from pig.engine.preprocess import preprocess_frames
from pig.engine.recipe import PreprocessRecipe
from pig.engine.segments import Segmenting
from pig.engine.video import VideoSegment, WholeReader, read_segments
from pig.engine.walk import discover
from pig.errors import VideoReadError


@dataclass(frozen=True)
class PipelineOptions:
    """Throughput knobs; defaults measured on 2 cores (bench/bench_pipeline.py).

    ``workers``: decode+preprocess threads. ``encoder_threads``: ONNX Runtime intra-op
    threads (0 = one per core). ``buffers``: batch buffers in flight (one filling, one
    queued, one encoding). ``commit_seconds``: time between commits, stretched to 10x the
    last commit's duration (a commit writes the delta, and now and then compacts); 0 commits
    after every batch. ``decoder``: ``auto``, ``pyav`` or ``nvdec`` (pig.engine.decoders).
    """

    batch_size: int = 8
    workers: int = 2
    encoder_threads: int = 0
    buffers: int = 3
    commit_seconds: float = 10.0
    retry_failed: bool = False
    decoder: str = "auto"


@dataclass
class IndexReport:
    """What one run did. ``skipped`` counts plan reasons (unchanged, touched, failed);
    ``skipped_paths`` holds the (path, reason) of what discovery passed over: folders that
    could not be read, FIFOs, sockets, devices and broken or looping symlinks."""

    files: int = 0
    indexed: int = 0
    segments: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped_paths: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    commits: int = 0
    interrupted: int = 0  # the signal (SIGINT, SIGTERM) that stopped the run early, or 0

    @property
    def videos_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        reasons = {"failed": "failed before, unchanged"}
        skipped = ", ".join(f"{n} {reasons.get(why, why)}"
                            for why, n in sorted(self.skipped.items()))
        lines = [
            f"{self.files} files: {self.indexed} indexed, {len(self.failed)} failed, "
            f"{sum(self.skipped.values())} skipped{f' ({skipped})' if skipped else ''}; "
            f"{self.seconds:.1f} s, {self.videos_per_second:.2f} videos/s; {self.segments} segments"
        ]
        if self.skipped.get("failed"):
            lines.append("(--retry-failed decodes files that failed before again)")
        lines += [f"failed: {display_path(path)}: {display_path(reason)}"
                  for path, reason in self.failed]
        lines += [f"skipped: {display_path(path)}: {reason}" for path, reason in self.skipped_paths]
        if self.interrupted:
            left = self.files - self.indexed - len(self.failed) - sum(self.skipped.values())
            lines.append(f"interrupted: {left} files not done; the work encoded so far is "
                         "committed: run again to resume")
        return "\n".join(lines)


@dataclass(frozen=True)
class FileFailure:
    """A file that cannot be indexed, and why (recorded in the catalog)."""

    path: str
    reason: str


def decode_file(plan: Plan, recipe: PreprocessRecipe, segmenting: Segmenting,
                whole_reader: WholeReader | None = None
                ) -> Iterator[VideoSegment | Entry | FileFailure]:
    """The per-file work of every indexing engine (one decode pass, bounded memory).

    Yields each segment's sampled frames (:class:`~pig.engine.video.VideoSegment`, in order),
    then the file's :class:`Entry` (stat and digest taken before decoding, one span per
    segment), or a :class:`FileFailure` instead: the segments yielded so far are then void.
    """
    spans, frames = [], 0
    try:
        entry = Entry.from_file(plan.path, frames=0, digest=plan.digest)
        for seg in read_segments(plan.path, recipe.num_frames, segmenting, threads=1,
                                 sampling=recipe.sampling, whole_reader=whole_reader):
            spans.append((seg.start_s, seg.end_s))
            frames = seg.frame_count
            yield seg
    except VideoReadError as err:
        yield FileFailure(plan.path, err.reason)
        return
    except OSError as err:
        yield FileFailure(plan.path, f"cannot read the file ({err.strerror})")
        return
    except Exception as err:  # an unforeseen decoder error must not stop the run
        yield FileFailure(plan.path, f"unexpected {type(err).__name__}: {err}")
        return
    yield replace(entry, frames=frames, spans=tuple(spans))


def preprocess_segment(segment: VideoSegment, recipe: PreprocessRecipe, out: np.ndarray,
                       path: str) -> FileFailure | None:
    """Preprocess one decoded segment of ``path`` into ``out`` (a batch slot); on failure
    zeroes the slot and returns the file's failure (its other segments are then void)."""
    try:
        preprocess_frames(segment.frames, recipe, out=out, threads=1)
    except (ValueError, TypeError) as err:
        out[...] = 0
        return FileFailure(path, f"preprocessing failed ({err})")
    return None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Ctrl-C (SIGINT) or SIGTERM sets :attr:`signum` instead of raising mid-update: the run
    stops taking new files, encodes and adds what is in flight (the last partial batch too)
    and commits. A second signal raises ``KeyboardInterrupt`` at once, but never inside a
    :meth:`guarded` update (it is raised when the update ends). Signals are handled by the
    main thread only; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signum = 0
        self._guarded = False
        self._pending = False

    def _handle(self, signum: int, frame: object) -> None:
        if not self.signum:
            self.signum = signum
        elif self._guarded:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        self._guarded = True
        try:
            yield
        finally:
            self._guarded = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt


class IndexWriter:
    """The driver's side of a run, the one thread that touches the index: records each
    file's result and commits every ``commit_seconds``, stretched to 10x the last commit's
    duration (a commit writes the delta, and now and then compacts); 0 commits after every
    file."""

    def __init__(self, index: VideoIndex, report: IndexReport, commit_seconds: float,
                 advance: Callable[[int, int], object], signals: StopSignals) -> None:
        self.index, self.report, self._advance = index, report, advance
        self._guarded = signals.guarded  # a second Ctrl-C never lands mid-update
        self._commit_seconds = self._interval = commit_seconds
        self._last_commit = time.monotonic()

    def fail(self, failure: FileFailure) -> None:
        with self._guarded():
            self.index.record_failure(failure.path, failure.reason)
        self.report.failed.append((failure.path, failure.reason))
        self._advance(1, 0)

    def encoded(self, segments: int) -> None:
        """Progress: ``segments`` more encoded (a long file moves the bar before it is done)."""
        self._advance(0, segments)

    def add(self, entry: Entry, vectors: np.ndarray) -> None:
        """Add one file with its segment vectors (in span order); commit if one is due."""
        with self._guarded():
            self.index.add([entry], vectors)
        self.report.indexed += 1
        self.report.segments += len(entry.spans)
        self._advance(1, 0)
        if time.monotonic() - self._last_commit >= self._interval:
            t = time.monotonic()
            with self._guarded():
                self.index.commit()
            self.report.commits += 1
            self._last_commit = time.monotonic()
            if self._commit_seconds > 0:  # keep commits under ~10% of the time
                self._interval = max(self._commit_seconds, 10 * (self._last_commit - t))


Embed = Callable[[list[Plan], IndexWriter, StopSignals], None]
"""An engine's encode side: embeds the planned files through the writer. Once the signals'
``signum`` is set (Ctrl-C, SIGTERM) it takes no new files and returns when those in flight are
added (the local pipeline), or raises ``KeyboardInterrupt`` at a safe point (Ray)."""


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


def run_plans(index: VideoIndex, files: Iterable[str | os.PathLike[str]],
              options: PipelineOptions, embed: Embed, progress: bool = False) -> IndexReport:
    """Plan ``files`` against the catalog, hand the ones to embed to ``embed`` (an engine's
    encode side: the local pipeline or Ray) with an :class:`IndexWriter`, commit at the end.

    Ctrl-C or SIGTERM sets ``signum`` of the :class:`StopSignals` given to ``embed``; what is
    added by the time it returns (or raises ``KeyboardInterrupt``) is committed and the report
    says which signal stopped the run (``interrupted``)."""
    t0 = time.perf_counter()
    report = IndexReport()
    todo: list[Plan] = []
    for f in files:
        plan = index.plan(f, retry_failed=options.retry_failed)
        report.files += 1
        if plan.action == "embed":
            todo.append(plan)
        else:
            report.skipped[plan.reason] += 1
    stop = StopSignals()
    with stop.installed():
        if todo:
            with tqdm(total=len(todo), unit="video", desc="indexing", disable=not progress,
                      file=sys.stderr, smoothing=0.1) as bar:
                encoded = 0

                def advance(files: int, segments: int = 0) -> None:
                    """``files`` done; ``segments`` encoded (a long file shows progress)."""
                    nonlocal encoded
                    encoded += segments
                    bar.set_postfix(segments=encoded, refresh=False)
                    if files:
                        bar.update(files)
                    else:
                        bar.refresh()

                writer = IndexWriter(index, report, options.commit_seconds, advance, stop)
                try:
                    embed(todo, writer, stop)
                except KeyboardInterrupt:  # a second signal (or an engine that stops at once)
                    stop.signum = stop.signum or signal.SIGINT
        with stop.guarded():
            index.commit()
    report.interrupted = stop.signum
    report.commits += 1
    report.seconds = time.perf_counter() - t0
    return report


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


Engine = Callable[..., contextlib.AbstractContextManager[tuple[dict[str, Any], Embed]]]
"""Opens the encode side of a run: ``engine(bundle, backend, precision, options, log)``
gives the producer facts recorded in the index (bundle, backend, precision) and the
:data:`Embed` that runs the planned files."""


@contextlib.contextmanager
def local_engine(bundle: Bundle, backend: str, precision: str | None, options: PipelineOptions,
                 log: Callable[[str], None] | None) -> Iterator[tuple[dict[str, Any], Embed]]:
    """This process: decode threads and one encoder (:class:`Pipeline`)."""
    kwargs: dict[str, Any] = {"log": log} if log is not None else {}
    encoder = open_backend(bundle, backend, precision, branches=("video",),
                           ort_options=OrtOptions(threads=options.encoder_threads), **kwargs)
    try:
        info = {"bundle": str(Path(bundle.dir).resolve()), "backend": encoder.name,
                "device": encoder.device, "precision": encoder.precision}
        yield info, Pipeline(encoder, bundle.recipe, options)._embed
    finally:
        encoder.close()


def index_videos(
    paths: Iterable[str | os.PathLike[str]],
    bundle: Bundle,
    index_dir: str | os.PathLike[str],
    *,
    glob: str | None = None,
    backend: str = "auto",
    precision: str | None = None,
    dtype: str | None = None,
    segmenting: Segmenting | None = None,
    usearch_settings: dict[str, int | None] | None = None,
    options: PipelineOptions | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> IndexReport:
    """Discover ``paths``, open the engine (the encoder; default :func:`local_engine`) and
    the index (created if missing), run.

    What discovery passes over (folders that cannot be read, FIFOs, sockets, ...) is listed
    in the report and recorded in the index manifest (``info`` shows it); the files under an
    unreadable folder that an earlier run indexed stay in the index. ``segmenting``: the
    setting of a new index (default auto); for an existing one it must be the index's, or
    ``None``.
    """
    options = options or PipelineOptions()
    decoder = choose_decoder(options.decoder)  # refuse an unavailable one before any work
    engine = engine or local_engine
    paths = list(paths)
    passed_over: list[tuple[str, str]] = []
    files = discover(paths, glob, lambda path, why: passed_over.append((path, why)))
    # refuse a read-only folder or a foreign index before opening the encoder (a TensorRT
    # build takes minutes)
    VideoIndex.check_writable(index_dir)
    if (Path(index_dir) / MANIFEST_NAME).is_file():
        with VideoIndex.open(index_dir, fingerprint=bundle.fingerprint, view=True) as existing:
            existing.require_segmenting(segmenting)
            segmenting = existing.segmenting
    if segmenting is not None and segmenting.mode == "shots":
        shots.require()
    (log or log_stderr)(f"decoder: {decoder}")
    with engine(bundle, backend, precision, options, log) as (info, embed), \
            VideoIndex.open_or_create(
                index_dir, fingerprint=bundle.fingerprint, dim=bundle.embedding_dim,
                bundle_info=info, dtype=dtype, segmenting=segmenting,
                unit_vectors=bundle.unit_vectors,
                **(usearch_settings or {}),
            ) as index:
        index.record_skipped(paths, sorted(passed_over))
        report = run_plans(index, files, options, embed, progress)
    report.skipped_paths = sorted(passed_over)
    return report
