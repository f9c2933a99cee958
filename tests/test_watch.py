"""``pig-engine watch``: a real process follows a folder while files appear, grow, are
renamed, moved out and deleted; it synchronises on the process's output and the index's
committed state, never on sleeps."""

from __future__ import annotations

import contextlib
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pig.engine.bundle import Bundle
from pig.engine.index import VideoIndex, file_digest
from pig.engine.ingest import watch as watch_mod
from pig.engine.ingest.watch import Watcher, WatchOptions
from tests.test_pipeline import fake_bundle, make_clips

__all__ = ["fake_bundle"]
DEADLINE = 120  # seconds a watched change may take to show, on a loaded 2-core machine


class WatchProcess:
    """``pig-engine watch ARGS`` as a subprocess whose stdout lines are read as they come."""

    def __init__(self, args: list[object], log: Path) -> None:
        self._log = log.open("w")
        cmd = [sys.executable, "-m", "pig.cli.engine", "watch", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, pred: Callable[[str], bool]) -> str:
        """The next output line for which ``pred`` holds (fails at EOF or the deadline)."""
        end = time.monotonic() + DEADLINE
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"watch said nothing expected in {DEADLINE} s: {self.seen[-20:]}")
            if line is None:
                pytest.fail(f"watch ended (exit {self.proc.wait()}): {self.seen[-20:]}")
            self.seen.append(line)
            if pred(line):
                return line

    def until(self, check: Callable[[], bool]) -> None:
        """Wait for commits until ``check()`` holds on the committed index."""
        while not check():
            self.line(lambda ln: ln.startswith("committed generation"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def committed(idx: Path) -> dict[str, tuple[int, str, str | None]]:
    """path -> (key, status, digest) as of the last commit."""
    with VideoIndex.open(idx) as vi:
        return {r.path: (r.key, r.status, r.digest) for r in vi.records()}


@pytest.mark.parametrize("mode", ["events", "polling"])
def test_watch_follows_a_folder(fake_bundle: Bundle, tmp_path: Path, mode: str) -> None:
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    clips = make_clips(lib, n=4)
    spare = make_clips(tmp_path / "spare", n=2, offset=5)
    args: list[object] = [lib, "--bundle", fake_bundle.dir, "--index", idx, "--settle-seconds",
                          0.3, "--commit-every", 0, "--batch-size", 2]
    if mode == "polling":
        args += ["--polling", "--poll-seconds", 0.2]
    w = WatchProcess(args, tmp_path / "watch.log")
    try:
        w.line(lambda ln: ln.startswith("watching 1 folders"))
        # in one mode a serve follows the index from the start: it must answer from the
        # watch's later commits
        server = serve(idx, tmp_path) if mode == "events" else contextlib.nullcontext()
        with server as s:
            follow_the_library(w, lib, idx, clips, spare, tmp_path, s)
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=DEADLINE) == 128 + signal.SIGTERM
        with VideoIndex.open(idx) as vi:
            assert vi.counts() == {"vectors": 5, "indexed": 5, "failed": 1}
    finally:
        w.close()


def serve(idx: Path, tmp_path: Path) -> contextlib.AbstractContextManager[object]:
    pytest.importorskip("fastapi")
    from tests.serving import Server

    return Server("--index", idx, log=tmp_path / "serve.log")


def follow_the_library(w: WatchProcess, lib: Path, idx: Path, clips: list[Path],
                       spare: list[Path], tmp_path: Path, server: object | None) -> None:
    """Files appear, grow, are renamed, moved out, deleted, moved in; checked on the
    committed index (and on what ``server``, if any, answers)."""
    first = committed(idx)
    assert sorted(first) == sorted(map(str, clips))
    keys = {p: v[0] for p, v in first.items()}

    # a file that appears by being written in pieces is indexed whole
    new = lib / "cam" / "rec.mp4"
    new.parent.mkdir()
    data = spare[0].read_bytes()
    with new.open("wb") as f:
        for i in range(0, len(data), 4096):
            f.write(data[i : i + 4096])
            f.flush()
    digest = file_digest(spare[0])
    w.until(lambda: committed(idx).get(str(new), (0, "", ""))[1:] == ("indexed", digest))

    # renamed inside: same key, nothing encoded; moved out and deleted: removed
    renamed = lib / "cam" / "renamed.mp4"
    clips[0].rename(renamed)
    clips[1].rename(tmp_path / "moved-out.mp4")
    clips[2].unlink()
    w.until(lambda: set(committed(idx)) == {str(renamed), str(clips[3]), str(new)})
    assert committed(idx)[str(renamed)][0] == keys[str(clips[0])]
    assert any(ln == f"moved {clips[0]} -> {renamed}" for ln in w.seen)

    # a folder moved in is indexed; a bad file is recorded as failed, the watch goes on
    shutil.copytree(tmp_path / "spare", tmp_path / "staging")
    (tmp_path / "staging" / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "staging").rename(lib / "in")
    w.until(lambda: {p: v[1] for p, v in committed(idx).items()
                     if p.startswith(str(lib / "in"))} == {
        str(lib / "in" / "clip00.mp4"): "indexed", str(lib / "in" / "clip01.mp4"): "indexed",
        str(lib / "in" / "bad.mp4"): "failed"})

    if server is not None:
        httpx = pytest.importorskip("httpx")
        from tests.serving import wait_until

        gen = VideoIndex.committed_generation(idx)
        indexed = {p for p, v in committed(idx).items() if v[1] == "indexed"}

        def served() -> dict[str, Any]:
            return httpx.post(f"{server.url}/v1/search",  # type: ignore[attr-defined]
                              json={"query": "a box", "k": 100}, timeout=30).json()

        wait_until(lambda: served()["generation"] >= gen, DEADLINE)
        assert {h["path"] for h in served()["results"][0]["results"]} == indexed


def test_files_settle_before_indexing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file is ready only once its size and mtime stayed the same for settle_seconds; a path
    gone is handed over after as long (so a move's two halves come together)."""
    clock = [1000.0]
    monkeypatch.setattr(watch_mod.time, "monotonic", lambda: clock[0])
    lib = tmp_path / "lib"
    lib.mkdir()
    index = SimpleNamespace(generation=0, under=lambda path: [
        SimpleNamespace(size=14)] if path == str(lib / "moved.mp4") else [])
    w = Watcher(index, None, [str(lib)], None, None,  # type: ignore[arg-type]
                WatchOptions(settle_seconds=5), None, print)  # type: ignore[arg-type]
    f = lib / "a.mp4"
    f.write_bytes(b"x" * 10)
    (lib / "notes.txt").write_text("not a video name")
    w.note([str(f), str(lib / "notes.txt"), str(lib / "old.mp4"),
            str(lib / "moved.mp4")])  # indexed with 14 bytes: maybe a.mp4 now
    assert w.ready() == ([], [])  # first look: stat recorded
    clock[0] += 4
    with f.open("ab") as out:
        out.write(b"more")  # still growing
    assert w.ready() == ([], [])
    clock[0] += 4.9
    assert w.ready() == ([], [str(lib / "old.mp4")])  # gone for 8.9 s; a.mp4 still for 4.9
    clock[0] += 0.2
    assert w.ready() == ([str(f)], [str(lib / "moved.mp4")])  # together: a move is seen
    assert w.ready() == ([], []) and not w.pending
