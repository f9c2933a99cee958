"""Micro-batching: requests from many connections, one worker thread, one call per batch.

A request is an *item* of ``size`` texts. The worker takes the oldest item, then waits for
more until the batch holds ``max_batch`` texts or ``max_wait_s`` has passed since that item
arrived (an item that already waited that long while the worker was busy goes at once, with
whatever queued behind it), and hands the batch to ``run`` in one call. Under load the queue
fills while a batch runs, so batches grow without any added wait. At most ``max_queue``
items wait; :meth:`MicroBatcher.submit` raises :class:`QueueFull` beyond that, so memory is
bounded. Items are submitted from an event loop and their results (or per-item exceptions)
come back as that loop's futures, all of a batch in one hop onto the loop (a hop per item,
as ``asyncio.wrap_future`` makes, costs the loop more than the request itself at high
load); an item whose future was cancelled (its client went away) before the worker took it
is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The queue holds ``max_queue`` items already; retry later."""


class Closed(Exception):
    """The batcher is shutting down and takes no new items."""


@dataclass
class _Item(Generic[T, R]):
    value: T
    size: int
    future: asyncio.Future[R]
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[T, R]):
    """One worker thread running ``run(values) -> results`` (one result or exception per
    value, in order) on batches of queued items; see the module docstring."""

    def __init__(self, run: Callable[[list[T]], Sequence[R | BaseException]], *, max_batch: int,
                 max_wait_s: float, max_queue: int, name: str = "pig-batcher") -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_s >= 0")
        self._run = run
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._queue: deque[_Item[T, R]] = deque()
        self._queued_size = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting (not yet taken by the worker)."""
        return len(self._queue)

    def submit(self, value: T, size: int) -> asyncio.Future[R]:
        """Queue ``value`` (``size`` texts); raises QueueFull or Closed instead of queueing.
        Call it on an event loop: the result is that loop's future."""
        item: _Item[T, R] = _Item(value, size, asyncio.get_running_loop().create_future())
        with self._cond:
            if self._closed:
                raise Closed("the service is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (--max-queue)")
            self._queue.append(item)
            self._queued_size += size
            self._cond.notify()
        return item.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new items, run those queued, stop the worker (waits up to ``timeout``)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Item[T, R]] | None:
        """The next batch; None once closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._queue[0].arrived + self.max_wait_s
            while self._queued_size < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[_Item[T, R]] = []
            size = 0
            while self._queue and (not batch or size + self._queue[0].size <= self.max_batch):
                item = self._queue.popleft()
                self._queued_size -= item.size
                if not item.future.cancelled():  # read across threads: _settle checks again
                    batch.append(item)
                    size += item.size
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            try:
                results = self._run([item.value for item in batch])
            except BaseException as exc:  # handed to every request of the batch
                results = [exc] * len(batch)
            done: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], object]]] = {}
            for item, result in zip(batch, results, strict=True):
                done.setdefault(item.future.get_loop(), []).append((item.future, result))
            for loop, settled in done.items():
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                    loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[R], object]]) -> None:
    """Hand results to their futures (on their loop); a cancelled one is left as it is."""
    for future, result in settled:
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # an R: not an exception
