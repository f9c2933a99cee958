"""``pig-engine watch``: sync folders into an index, then follow their file-system events.

Events (inotify through ``watchdog``, or its polling observer for network mounts where
events do not arrive) only name paths to look at again; what is done is decided from the
disk and the catalog, as by ``sync`` (:mod:`pig.engine.ingest.sync`). A new or changed file
waits until its size and mtime have stayed the same for ``settle_seconds`` (a copy or a
recording still being written is never indexed half-way, and if it was, its next change is
indexed again); a path that vanished waits as long, so that a move's two halves are seen
together and the file keeps its vectors. Changes are committed every ``commit_seconds``;
SIGTERM or Ctrl-C finishes the files in flight, commits and returns the signal.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pig.engine.display import display_path
from pig.engine.index import VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import open_run
from pig.engine.ingest.sync import MAX_REMOVAL, apply_sync, check_mass_removal, plan_sync
from pig.engine.ingest.writer import Embed, StopSignals, run_plans
from pig.engine.media.walk import discover, wanted
from pig.errors import PigError

TICK_SECONDS = 0.2  # how often pending files are looked at (and a signal is noticed)


@dataclass(frozen=True)
class WatchOptions:
    """``settle_seconds``: a file is indexed once its size and mtime stayed this long.
    ``polling``: stat the folders every ``poll_seconds`` instead of inotify events.
    ``max_removal``: the sync safety stop (``None``: off)."""

    settle_seconds: float = 5.0
    polling: bool = False
    poll_seconds: float = 2.0
    max_removal: float | None = MAX_REMOVAL


def _missing(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


class _Events:
    """The paths that file-system events named since the last :meth:`take` (thread-safe;
    filled by watchdog's observer thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: set[tuple[str, bool]] = set()  # (path, is a folder)

    def dispatch(self, event: Any) -> None:
        """watchdog's handler entry point."""
        if event.event_type in ("opened", "closed_no_write"):
            return
        with self._lock:
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if raw:
                    self._paths.add((os.fsdecode(raw), event.is_directory))

    def take(self) -> set[tuple[str, bool]]:
        with self._lock:
            taken, self._paths = self._paths, set()
        return taken


def _observer(roots: list[str], polling: bool, poll_seconds: float, events: _Events) -> Any:
    try:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver
    except ImportError:
        raise PigError("pig-engine watch needs watchdog: pip install 'pig-engine[watch]'") from None
    observer = PollingObserver(timeout=poll_seconds) if polling else Observer()
    for root in roots:
        observer.schedule(events, root, recursive=True)
    return observer


class Watcher:
    """The state of one ``watch``: files waiting to settle, paths seen vanishing."""

    def __init__(self, index: VideoIndex, embed: Embed, roots: list[str], glob: str | None,
                 options: PipelineOptions, watch: WatchOptions, stop: StopSignals,
                 say: Callable[[str], None]) -> None:
        self.index, self.embed, self.roots, self.glob = index, embed, roots, glob
        self.options, self.watch, self.stop, self.say = options, watch, stop, say
        self.pending: dict[str, tuple[tuple[int, int], float]] = {}  # path -> (stat, since)
        self.gone: dict[str, float] = {}  # path -> when first seen missing
        self.last_commit = time.monotonic()
        self.said = index.generation if index is not None else 0

    def note(self, touched: Iterable[tuple[str, bool]]) -> None:
        """Look again at the paths events named: files to settle, folders to walk, paths gone."""
        now = time.monotonic()
        for path, folder in touched:
            if _missing(path):
                self.gone.setdefault(path, now)
                self.pending.pop(path, None)
                continue
            self.gone.pop(path, None)
            if folder or os.path.isdir(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    for f in discover([path], self.glob, lambda p, why: None):
                        self._candidate(str(f), now)
            elif wanted(Path(path), [Path(r) for r in self.roots], self.glob):
                self._candidate(path, now)

    def _candidate(self, path: str, now: float) -> None:
        if path not in self.pending:
            self.pending[path] = ((-1, -1), now)

    def ready(self) -> tuple[list[str], list[str]]:
        """Files settled (same size and mtime for ``settle_seconds``) and paths gone as long."""
        now, settle = time.monotonic(), self.watch.settle_seconds
        files = []
        for path, (seen, since) in list(self.pending.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self.pending[path]
                self.gone.setdefault(path, now)
                continue
            if not stat.S_ISREG(st.st_mode):
                del self.pending[path]
                continue
            now_stat = (st.st_size, st.st_mtime_ns)
            if now_stat != seen:
                self.pending[path] = (now_stat, now)
            elif now - since >= settle:
                files.append(path)
                del self.pending[path]
        gone = [p for p, since in self.gone.items() if now - since >= settle]
        for p in gone:
            del self.gone[p]
        return sorted(files), sorted(gone)

    def apply(self, files: list[str], scope: list[str], strict: bool = False) -> None:
        """One round: moves and removals of the files gone at or under ``scope``, then index
        ``files``. A mass removal is refused: an error when ``strict`` (the first sync), else
        a line, and the files stay in the index."""
        plan = plan_sync(self.index, scope, files)
        try:
            check_mass_removal(self.index, self.roots, plan.removals, self.watch.max_removal)
        except PigError as refused:
            if strict:
                raise
            self.say(f"kept {len(plan.removals)} files gone from disk: {refused}")
            plan.removals = []
        moves, removed = apply_sync(self.index, plan)
        for m in moves:
            self.say(f"moved {display_path(m.old)} -> {display_path(m.new)}")
        for p in removed:
            self.say(f"removed {display_path(p)}")
        moved = {m.new for m in moves}
        rest = [f for f in files if f not in moved]
        if rest:
            report = run_plans(self.index, rest, self.options, self.embed, stop=self.stop,
                               commit=False)
            for path, reason in report.failed:
                self.say(f"failed {display_path(path)}: {display_path(reason)}")
            if report.indexed:
                self.say(f"indexed {report.indexed} files ({report.segments} segments)")

    def commit_if_due(self, force: bool = False) -> None:
        """Commit pending changes every ``commit_seconds`` (``force``: now); say each new
        generation (the run's writer may have committed during a round too)."""
        due = time.monotonic() - self.last_commit >= self.options.commit_seconds
        if self.index.dirty and (due or force):
            with self.stop.guarded():
                self.index.commit()
            self.last_commit = time.monotonic()
        if self.index.generation != self.said:
            self.said = self.index.generation
            c = self.index.counts()
            self.say(f"committed generation {self.said}: {c['indexed']} indexed, {c['failed']} "
                     f"failed, {c['vectors']} segments")


def watch_folders(
    paths: Iterable[str | os.PathLike[str]],
    bundle: Any,
    index_dir: str | os.PathLike[str],
    *,
    glob: str | None = None,
    options: PipelineOptions | None = None,
    watch: WatchOptions | None = None,
    say: Callable[[str], None] = print,
    **opening: Any,
) -> int:
    """Sync ``paths`` (folders) into ``index_dir``, then follow them until SIGTERM or Ctrl-C;
    returns the signal number after the last commit. ``opening``: the keywords of
    :func:`~pig.engine.ingest.run.open_run`."""
    options = options or PipelineOptions()
    watch = watch or WatchOptions()
    roots = [os.path.abspath(p) for p in paths]
    for r in roots:
        if not os.path.isdir(r):
            raise PigError(f"{display_path(r)}: not a folder (watch follows folders)")
    events = _Events()
    observer = _observer(roots, watch.polling, watch.poll_seconds, events)
    stop = StopSignals()
    with open_run(bundle, index_dir, options=options, **opening) as (index, embed), \
            stop.installed():
        observer.start()  # before the first scan: nothing created meanwhile is missed
        try:
            w = Watcher(index, embed, roots, glob, options, watch, stop, say)
            files = [str(f) for f in discover(roots, glob, lambda p, why: None)]
            w.apply(files, roots, strict=True)
            w.commit_if_due(force=True)
            how = (f"polling every {watch.poll_seconds:g} s" if watch.polling
                   else "file-system events")
            say(f"watching {len(roots)} folders ({how}; settle {watch.settle_seconds:g} s)")
            while not stop.signum:
                w.note(events.take())
                files, gone = w.ready()
                if files or gone:
                    w.apply(files, gone)
                w.commit_if_due()
                if not stop.signum:
                    time.sleep(TICK_SECONDS)
            w.commit_if_due(force=True)
        finally:
            observer.stop()
            observer.join()
    return stop.signum

