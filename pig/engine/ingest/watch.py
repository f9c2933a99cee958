"""``pig-engine watch``: sync folders (or bucket prefixes) into an index, then follow them.

Events (inotify through ``watchdog``, or its polling observer for network mounts where
events do not arrive; for a prefix, a listing every ``poll_seconds``) only name paths to
look at again; what is done is decided from the disk and the catalog, as by ``sync``
(:mod:`pig.engine.ingest.sync`). A new or changed file waits until its stat has stayed the
same for ``settle_seconds``, so a copy or a recording is not indexed while it grows (one
that pauses longer is, and its next change is indexed again); a path that vanished waits as
long, and while a settling file of its size may be where it moved, so that a move's two
halves are seen together and the file keeps its vectors. Changes are committed every
``commit_seconds``; SIGTERM or Ctrl-C finishes the files in flight, commits and returns the
signal.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pig.engine.display import display_path
from pig.engine.index import VideoIndex
from pig.engine.ingest.options import PipelineOptions
from pig.engine.ingest.run import open_run
from pig.engine.ingest.sync import MAX_REMOVAL, apply_sync, check_mass_removal, plan_sync
from pig.engine.ingest.writer import Embed, run_plans
from pig.engine.media import sources
from pig.engine.media.walk import discover, discover_sources, list_objects, wanted
from pig.errors import PigError
from pig.signals import StopSignals

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


class _Events:
    """The paths that file-system events named since the last :meth:`take` (thread-safe;
    filled by watchdog's observer thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: set[str] = set()

    def dispatch(self, event: Any) -> None:
        """Note the paths of one watchdog event."""
        if event.event_type in ("opened", "closed_no_write"):
            return
        with self._lock:
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if raw:
                    self._paths.add(os.fsdecode(raw))

    def take(self) -> set[str]:
        with self._lock:
            taken, self._paths = self._paths, set()
        return taken

    def add(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._paths.update(paths)


class _ObjectPoller(threading.Thread):
    """Lists the URL roots every ``seconds`` and names the objects that appeared, changed
    or vanished since the last listing to ``events`` (object stores send no events here).
    A root whose listing fails keeps its last listing (a glitch removes nothing)."""

    def __init__(self, roots: list[str], glob: str | None, seconds: float,
                 events: _Events) -> None:
        super().__init__(name="pig-watch-objects", daemon=True)
        self.roots, self.glob, self.seconds, self.events = roots, glob, seconds, events
        self.halt = threading.Event()
        self.seen = {root: self._list(root) or {} for root in roots}

    def _list(self, root: str) -> dict[str, sources.SourceStat] | None:
        try:
            return list_objects(root, self.glob)
        except (OSError, PigError):
            return None

    def run(self) -> None:
        while not self.halt.wait(self.seconds):
            for root in self.roots:
                now = self._list(root)
                if now is None:
                    continue
                before = self.seen[root]
                self.events.add(p for p in now.keys() | before.keys()
                                if now.get(p) != before.get(p))
                self.seen[root] = now

    def stop(self) -> None:
        self.halt.set()


def _observer(roots: list[str], polling: bool, poll_seconds: float, events: _Events) -> Any:
    """watchdog's observer of the local ``roots`` (inotify, or polling)."""
    try:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver
    except ImportError:
        raise PigError("pig-engine watch needs watchdog: pip install 'pig-engine[watch]'") from None

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            events.dispatch(event)

    observer = PollingObserver(timeout=poll_seconds) if polling else Observer()
    for root in roots:
        observer.schedule(Handler(), root, recursive=True)
    return observer


class Watcher:
    """The state of one ``watch``: files waiting to settle, paths seen vanishing."""

    def __init__(self, index: VideoIndex, embed: Embed, roots: list[str], glob: str | None,
                 options: PipelineOptions, watch: WatchOptions, stop: StopSignals,
                 say: Callable[[str], None]) -> None:
        self.index, self.embed, self.roots, self.glob = index, embed, roots, glob
        self.options, self.watch, self.stop, self.say = options, watch, stop, say
        self.pending: dict[str, tuple[sources.SourceStat | None, float]] = {}  # (stat, since)
        self.gone: dict[str, float] = {}  # path -> when first seen missing
        self.last_commit = time.monotonic()
        self.said = index.generation if index is not None else 0

    def note(self, touched: Iterable[str]) -> None:
        """Look again at the paths events named: files to settle, folders to walk, paths gone."""
        now = time.monotonic()
        for path in touched:
            local = not sources.is_url(path)
            if local and os.path.isdir(path):
                self.gone.pop(path, None)
                if not os.path.islink(path):
                    for f in discover([path], self.glob, lambda p, why: None):
                        self._candidate(str(f), now)
                continue
            try:
                st = sources.stat(path)
            except OSError:  # unknown for now: the next event or poll looks again
                continue
            if st is None:  # gone (or no longer a regular file)
                self.gone.setdefault(path, now)
                self.pending.pop(path, None)
            else:
                self.gone.pop(path, None)
                if wanted(path, self.roots, self.glob):
                    self._candidate(path, now)

    def _candidate(self, path: str, now: float) -> None:
        if path not in self.pending:
            self.pending[path] = (None, now)

    def ready(self) -> tuple[list[str], list[str]]:
        """Files settled (same stat for ``settle_seconds``) and paths gone as long."""
        now, settle = time.monotonic(), self.watch.settle_seconds
        files = []
        for path, (seen, since) in list(self.pending.items()):
            try:
                st = sources.stat(path)
            except OSError:
                continue
            if st is None:
                del self.pending[path]
                self.gone.setdefault(path, now)
            elif st != seen:
                self.pending[path] = (st, now)
            elif now - since >= settle:
                files.append(path)
                del self.pending[path]
        gone = [p for p, since in self.gone.items()
                if now - since >= settle and not self._maybe_moved(p)]
        for p in gone:
            del self.gone[p]
        return sorted(files), sorted(gone)

    def _maybe_moved(self, gone: str) -> bool:
        """Whether a file still settling may be where ``gone`` moved to (one of the files
        indexed there has its size, or its size is not known yet): then ``gone`` waits, so
        that the move keeps the vectors."""
        sizes = {st.size if st else None for st, _ in self.pending.values()}
        return bool(sizes) and (None in sizes or any(
            r.size in sizes for r in self.index.under(gone)))

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
    roots = [sources.identity(p) for p in paths]
    local = [r for r in roots if not sources.is_url(r)]
    urls = [r for r in roots if sources.is_url(r)]
    for r in local:
        if not os.path.isdir(r):
            raise PigError(f"{display_path(r)}: not a folder (watch follows folders)")
    events = _Events()
    observer = _observer(local, watch.polling, watch.poll_seconds, events) if local else None
    stop = StopSignals()
    with open_run(bundle, index_dir, options=options, **opening) as (index, embed), \
            stop.installed():
        # watching starts before the first scan: nothing created meanwhile is missed
        poller = _ObjectPoller(urls, glob, watch.poll_seconds, events) if urls else None
        for follower in (observer, poller):
            if follower is not None:
                follower.start()
        try:
            w = Watcher(index, embed, roots, glob, options, watch, stop, say)
            w.apply(discover_sources(roots, glob, lambda p, why: None), roots, strict=True)
            w.commit_if_due(force=True)
            how = (f"polling every {watch.poll_seconds:g} s" if watch.polling or not local
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
            for follower in (observer, poller):
                if follower is not None:
                    follower.stop()
                    follower.join()
    return stop.signum

