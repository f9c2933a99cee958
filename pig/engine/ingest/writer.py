"""The driver's side of a run: the index's one writer, planning, commits (stop signals:
:class:`pig.signals.StopSignals`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from pig.engine.index import Entry, Plan, VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.report import IndexReport
from pig.engine.ingest.work import FileFailure
from pig.engine.media.segments import format_time
from pig.errors import EnvironmentFault
from pig.signals import StopSignals


class IndexWriter:
    """The driver's side of a run, the one thread that touches the index: records each
    file's result and commits every ``commit_seconds``, stretched to 10x the last commit's
    duration (a commit writes the delta, and now and then compacts); 0 commits after every
    file."""

    def __init__(self, index: VideoIndex, report: IndexReport, commit_seconds: float,
                 advance: Callable[..., object], signals: StopSignals) -> None:
        self.index, self.report, self._advance = index, report, advance
        self._guarded = signals.guarded  # a second Ctrl-C never lands mid-update
        self._commit_seconds = self._interval = commit_seconds
        self._last_commit = time.monotonic()
        self._partial_segments: dict[str, int] = {}  # path -> segments added this run

    def fail(self, failure: FileFailure) -> None:
        with self._guarded():
            self.index.record_failure(failure.path, failure.reason)
        self.report.failed.append((failure.path, failure.reason))
        self.report.partial.discard(failure.path)
        self.report.segments -= self._partial_segments.pop(failure.path, 0)  # dropped
        self._advance(1, 0)

    def encoded(self, segments: int) -> None:
        """Progress: ``segments`` more encoded (a long file moves the bar before it is done)."""
        self._advance(0, segments)

    def planned(self, segments: int) -> None:
        """Progress: a file was opened with ``segments`` segments to encode."""
        self._advance(0, 0, segments)

    def add(self, entry: Entry, vectors: np.ndarray) -> None:
        """Add one file with its segment vectors (in span order); commit if one is due."""
        with self._guarded():
            self.index.add([entry], vectors)
        self.report.indexed += 1
        self.report.segments += len(entry.spans)
        self._advance(1, 0)
        self._commit_if_due()

    def extend(self, entry: Entry, first: int, vectors: Sequence[np.ndarray], *,
               complete: bool, total: int | None) -> None:
        """Add segments ``first, ...`` of a file as they are encoded (the file stays partial,
        searchable and resumable, until ``complete``); commit if one is due."""
        with self._guarded():
            self.index.extend(entry, first, vectors, complete=complete, total=total)
        self.report.segments += len(entry.spans)
        if complete:
            self.report.indexed += 1
            self.report.partial.discard(entry.path)
            self._partial_segments.pop(entry.path, None)
            self._advance(1, 0)
        else:
            self.report.partial.add(entry.path)
            self._partial_segments[entry.path] = (self._partial_segments.get(entry.path, 0)
                                                  + len(entry.spans))
        self._commit_if_due()

    def _commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self._interval:
            t = time.monotonic()
            with self._guarded():
                self.index.commit()
            self.report.commits += 1
            self._last_commit = time.monotonic()
            if self._commit_seconds > 0:  # keep commits under ~10% of the time
                self._interval = max(self._commit_seconds, 10 * (self._last_commit - t))


Embed = Callable[[list[Plan], IndexWriter, StopSignals], None]
"""A runner's encode side: embeds the planned files through the writer. Once the signals'
``signum`` is set (Ctrl-C, SIGTERM) it takes no new files and returns when those in flight are
added (the local pipeline), or raises ``KeyboardInterrupt`` at a safe point (Ray)."""


Runner = Callable[..., contextlib.AbstractContextManager[tuple[dict[str, Any], Embed]]]
"""Opens the encode side of a run (``--runner local|ray``): ``runner(bundle, backend,
precision, options, log)`` gives the producer facts recorded in the index (bundle, backend,
precision) and the :data:`Embed` that runs the planned files."""


def run_plans(index: VideoIndex, files: Iterable[str | os.PathLike[str]],
              options: PipelineOptions, embed: Embed, progress: bool = False,
              stop: StopSignals | None = None, commit: bool = True) -> IndexReport:
    """Plan ``files`` against the catalog, hand the ones to embed to ``embed`` (a runner's
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
                encoded = planned = 0
                started = time.monotonic()

                def advance(files: int, segments: int = 0, more: int = 0) -> None:
                    """``files`` done; ``segments`` encoded, ``more`` planned (a long file
                    shows its segments done/total and their ETA)."""
                    nonlocal encoded, planned
                    encoded += segments
                    planned += more
                    rate = encoded / max(time.monotonic() - started, 1e-9)
                    eta = (f", ETA {format_time((planned - encoded) / rate)}"
                           if encoded and planned > encoded else "")
                    bar.set_postfix_str(f"segments {encoded}/{planned}{eta}", refresh=False)
                    if files:
                        bar.update(files)
                    else:
                        bar.refresh()

                writer = IndexWriter(index, report, options.commit_seconds, advance, stop)
                try:
                    embed(todo, writer, stop)
                except KeyboardInterrupt:  # a second signal (or a runner that stops at once)
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
