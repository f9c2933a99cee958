"""The processes of a local Ray that a run started, recorded so that none outlives it.

``ray.shutdown()`` stops them, but a driver killed with SIGKILL (or by the OOM killer) runs no
code: Ray's head processes follow it, and its dashboard and runtime-env agents (~170 MB) and
idle workers stay. So while a run holds a local Ray, a record in a private folder lists
the driver and the processes of its Ray (the head processes, and the raylet's children,
rescanned every few seconds; each as pid + start time, so a reused pid is never taken for
one of them). The next run that starts a local Ray first sweeps the records of drivers that
are gone: it kills what is left of their Ray (also workers started after the last rescan,
known by the ``RAY_RAYLET_PID`` Ray gives them) and says so in one line.

While the run goes on, the head processes and the raylet's agents are watched (a stat each,
every :data:`WATCH_S`): when one dies (what an OOM killer may pick), Ray's core worker would
end this process with exit 1 and no word, or the run would fail much later on a missed
heartbeat. Instead the run stops at once with one line naming what died, kills the rest of
its Ray, and exits with :data:`~pig.errors.EXIT_ENVIRONMENT`: what was committed is kept
(commits are atomic), the files in flight are not in the catalog, so a rerun indexes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pig.engine.display import log_stderr
from pig.engine.host.fsutil import write_atomic
from pig.errors import EXIT_ENVIRONMENT

RESCAN_S = 2.0
WATCH_S = 0.25

Proc = tuple[int, int]  # pid, start time (clock ticks after boot)


def records_dir() -> Path:
    """The private folder of this user's records."""
    d = Path(tempfile.gettempdir()) / f"pig-engine-ray-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def start_time(pid: int) -> int | None:
    """When ``pid`` started (None: no such process, or one that ended and awaits its parent's
    wait, a zombie: Ray's driver reaps its head processes late)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(proc: Proc) -> bool:
    return start_time(proc[0]) == proc[1]


def _children(parent: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _workers_of(raylet: int) -> list[int]:
    """Processes Ray started for the raylet ``raylet`` (its ``RAY_RAYLET_PID``)."""
    needle = f"RAY_RAYLET_PID={raylet}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    out.append(int(d.name))
    return out


def _kill(procs: Iterable[Proc]) -> int:
    killed = 0
    for pid, started in procs:
        if pid != os.getpid() and start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


class LocalRay:
    """The record of the local Ray this process starts (see the module docstring)."""

    def __init__(self, log: Callable[[str], None] | None) -> None:
        self.log = log or log_stderr
        me = os.getpid()
        self.driver: Proc = (me, start_time(me) or 0)
        self.path = records_dir() / f"{me}-{self.driver[1]}.json"
        self.raylet: Proc | None = None
        self.procs: set[Proc] = set()
        self.watched: dict[Proc, str] = {}  # head processes and agents: a death ends the run
        self._stop = threading.Event()
        self._scanner: threading.Thread | None = None

    def sweep(self) -> None:
        """Kill what is left of the local Rays of drivers that are gone; one line if any."""
        for path in sorted(records_dir().glob("*.json")):
            try:
                doc: dict[str, Any] = json.loads(path.read_text())
                driver = tuple(doc["driver"])
                procs = {tuple(p) for p in doc["procs"]}
                raylet = tuple(doc["raylet"]) if doc.get("raylet") else None
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if _alive(driver):
                continue
            if raylet is not None:
                procs |= {(pid, start_time(pid) or -1) for pid in _workers_of(raylet[0])}
            killed = _kill(procs)
            path.unlink(missing_ok=True)
            if killed:
                self.log(f"ray: stopped {killed} process(es) of the local Ray of an earlier "
                         f"run (pid {driver[0]}) that was killed before it could stop them")

    def record(self, ray: Any) -> None:
        """Record the Ray ``ray.init`` just started here, and rescan it every few seconds."""
        node = ray._private.worker._global_node
        for kind, infos in node.all_processes.items():
            for info in infos:
                pid = info.process.pid
                proc = (pid, start_time(pid) or -1)
                self.procs.add(proc)
                self.watched[proc] = kind.replace("_", " ")
                if kind == "raylet":
                    self.raylet = proc
        self._rescan()
        self._scanner = threading.Thread(target=self._scan, name="pig-ray-record",
                                         daemon=True)
        self._scanner.start()

    def stop_watching(self) -> None:
        """Before ``ray.shutdown()``: its processes are about to end, as they should."""
        self._stop.set()
        if self._scanner is not None and self._scanner is not threading.current_thread():
            self._scanner.join()

    def release(self) -> None:
        """After ``ray.shutdown()``: kill any straggler, drop the record."""
        self.stop_watching()
        _kill(p for p in self.procs if _alive(p))
        self.path.unlink(missing_ok=True)

    def _scan(self) -> None:
        """Wake on the death of a watched process (a pidfd each, polled), rescan the raylet's
        children now and then (often until its agents are seen)."""
        fds: dict[int, Proc] = {}
        poller = select.poll()
        waited = 0.0
        try:
            while not self._stop.is_set():
                for proc in self.watched.keys() - set(fds.values()):
                    with contextlib.suppress(OSError):
                        fd = os.pidfd_open(proc[0])
                        fds[fd] = proc
                        poller.register(fd, select.POLLIN)
                ready = poller.poll(WATCH_S * 1000)
                if self._stop.is_set():
                    return
                dead = [fds[fd] for fd, _ in ready] or [p for p in self.watched if not _alive(p)]
                if dead:
                    self._died(dead[0], self.watched[dead[0]])
                waited += WATCH_S
                agents = sum(name.endswith("agent") for name in self.watched.values())
                if waited >= (RESCAN_S if agents >= 2 else WATCH_S):
                    waited = 0.0
                    self._rescan()
        finally:
            for fd in fds:
                os.close(fd)

    def _died(self, proc: Proc, name: str) -> None:
        self.log(f"ray: error: the local Ray's {name} (pid {proc[0]}) died mid-run (killed, "
                 "or out of memory?); the run stops: what was committed is kept, a rerun "
                 "indexes the rest")
        self._stop.set()
        # Killing the rest of Ray from here would let Ray's core worker see its raylet die
        # and end this process with 1 first: a shell does it once this process is gone.
        pids = " ".join(str(pid) for pid, _ in self.procs if _alive((pid, _)))
        me = os.getpid()  # gone, or a zombie its parent has not waited for yet
        subprocess.Popen(["sh", "-c", f"while kill -0 {me} 2>/dev/null && ! grep -qs "
                          f"'^State:.Z' /proc/{me}/status; do sleep 0.05; done; "
                          f"kill -9 {pids} 2>/dev/null"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        self.path.unlink(missing_ok=True)
        os._exit(EXIT_ENVIRONMENT)

    def _rescan(self) -> None:
        found = set()
        if self.raylet is not None and _alive(self.raylet):
            for pid in _children(self.raylet[0]):
                proc = (pid, start_time(pid) or -1)
                found.add(proc)
                with contextlib.suppress(OSError):
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                    if title.startswith(b"ray::") and title.endswith(b"Agent"):
                        self.watched.setdefault(proc, _words(title[5:].decode()))
        if found - self.procs or not self.path.exists():
            self.procs |= found
            write_atomic(self.path, json.dumps({
                "driver": self.driver, "raylet": self.raylet,
                "procs": sorted(self.procs)}).encode())


def _words(name: str) -> str:
    """``RuntimeEnvAgent`` -> ``runtime env agent``."""
    return "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
