"""A real ``pig-engine serve`` process on a free loopback port, for tests and bench_serve."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

READY = re.compile(r"pig-engine serve: ready at (https?://127\.0\.0\.1:\d+)")


class Server:
    """``pig-engine serve --port 0 ARGS`` as a subprocess; ``url`` once it printed its ready
    line. Leaving the ``with`` block stops it (SIGTERM, then SIGKILL after 20 s)."""

    def __init__(self, *args: object, log: Path, start_timeout: float = 90.0) -> None:
        self.log_path = log
        self._log = log.open("wb")
        cmd = [sys.executable, "-m", "pig.cli.engine", "serve", "--port", "0",
               *(str(a) for a in args)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.stdout: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                self.stdout.append(line)
                if not self.url and (m := READY.search(line)):
                    self.url = m.group(1)
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(start_timeout) or not self.url:
            self.stop()
            raise RuntimeError(f"server did not start: {self.output()}")

    def output(self) -> str:
        """Everything it printed so far (stdout, then stderr)."""
        if not self._log.closed:
            self._log.flush()
        return "".join(self.stdout) + self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.wait(5)
        self._log.close()
        return code

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def wait_until(predicate: Callable[[], object], timeout: float, every: float = 0.05) -> float:
    """Seconds until ``predicate()`` was true; raises TimeoutError after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not true after {timeout} s")
        time.sleep(every)
    return time.monotonic() - t0
