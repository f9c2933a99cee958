"""The driver's side of a run: stop signals, the index's one writer, planning, commits."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from pig.engine.index import Entry, Plan, VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.work import FileFailure
from pig.errors import EnvironmentFault

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


def run_plans(index: VideoIndex, files: Iterable[str | os.PathLike[str]],
              options: PipelineOptions, embed: Embed, progress: bool = False,
              stop: StopSignals | None = None, commit: bool = True) -> IndexReport:
    """Plan ``files`` against the catalog, hand the ones to embed to ``embed`` (an engine's
    encode side: the local pipeline or Ray) with an :class:`IndexWriter`, commit at the end
    (unless ``commit`` is False: the caller commits).

    Ctrl-C or SIGTERM sets ``signum`` of the :class:`StopSignals` given to ``embed`` (``stop``
    when the caller installed its own); what is added by the time it returns (or raises
    ``KeyboardInterrupt``) is committed and the report says which signal stopped the run
    (``interrupted``)."""
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
    owned = stop is None
    stop = stop or StopSignals()
    with stop.installed() if owned else contextlib.nullcontext():
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
                except EnvironmentFault:  # the engine failed (a Ray node died): keep what
                    with stop.guarded():  # was added (whole files), then say why
                        index.commit()
                    raise
        if commit:
            with stop.guarded():
                index.commit()
            report.commits += 1
    report.interrupted = stop.signum
    report.seconds = time.perf_counter() - t0
    return report
