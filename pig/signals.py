"""The one home of signal handling: which signals stop a program, how it says so, and handlers
installed for a while (main thread only).

Three users: the console-script entry points (:mod:`pig.startup`: exit at once with one line
until a program takes the signals over), an indexing run (:class:`StopSignals`: finish what
is in flight, commit, exit ``128 + signum``) and the server (``pig.engine.serve.server``:
drain the requests in flight, exit 0). Standard library only, so the entry points can install
it before importing anything heavy.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPED = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}  # the one-line word

Handler = Callable[[int, FrameType | None], object]


def said(signum: int) -> str:
    """The word a program prints when ``signum`` stopped it."""
    return STOPPED.get(signal.Signals(signum), "stopped")


@contextlib.contextmanager
def handling(handler: Handler) -> Iterator[None]:
    """``handler`` answers SIGINT and SIGTERM inside the block; the previous handlers come
    back after it. Signals reach the main thread only: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class StopSignals:
    """Ctrl-C (SIGINT) or SIGTERM sets :attr:`signum` instead of raising mid-update and says on
    stderr what happens: the run stops decoding, adds what the encoder is finishing (the
    local engine; Ray stops at its next batch) and commits. A second signal raises
    ``KeyboardInterrupt`` at once, but never inside a :meth:`guarded` update (it is raised
    when the update ends)."""

    def __init__(self) -> None:
        self.signum = 0
        self._guarded = False
        self._pending = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.signum:
            self.signum = signum
            print(f"\n{signal.Signals(signum).name}: committing what is encoded (the batch in "
                  "the encoder first); press Ctrl-C again to stop now, keeping every commit",
                  file=sys.stderr, flush=True)
        elif self._guarded:
            self._pending = True
        else:
            raise KeyboardInterrupt

    def installed(self) -> contextlib.AbstractContextManager[None]:
        return handling(self._handle)

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
