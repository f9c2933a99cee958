"""The serve micro-batcher: batches of what queued, results on the submitting loop, bounds."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pig.engine.serve.batcher import Closed, MicroBatcher, QueueFull


class Gated:
    """``run`` that doubles its values, records each batch, and holds the first batch until
    ``release`` (so that the test can queue behind it)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, values: list[int]) -> list[int | BaseException]:
        self.batches.append(values)
        self.started.set()
        self.release.wait(10)
        return [ValueError(f"bad {v}") if v < 0 else 2 * v for v in values]


def test_batches_take_what_queued_and_settle_on_the_loop() -> None:
    run = Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, max_wait_s=0,
                                                   max_queue=16)

    async def main() -> list[object]:
        first = batcher.submit(1, 1)
        await asyncio.to_thread(run.started.wait, 10)  # the worker holds batch [1]
        rest = [batcher.submit(v, 1) for v in (2, 3, -4, 5, 6)]
        cancelled = batcher.submit(7, 1)
        cancelled.cancel()  # its client went away before the worker took it
        run.release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close(10)
    assert results[:3] == [2, 4, 6] and results[4:] == [10, 12]
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad -4"
    assert run.batches == [[1], [2, 3, -4, 5], [6]]  # max_batch 4; 7 was dropped


def test_queue_bound_and_close() -> None:
    run = Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=1, max_wait_s=0,
                                                   max_queue=2)

    async def main() -> list[int]:
        first = batcher.submit(1, 1)
        await asyncio.to_thread(run.started.wait, 10)
        queued = [batcher.submit(2, 1), batcher.submit(3, 1)]
        with pytest.raises(QueueFull, match="2 requests are waiting"):
            batcher.submit(4, 1)
        assert batcher.depth == 2
        run.release.set()
        return list(await asyncio.gather(first, *queued))

    assert asyncio.run(main()) == [2, 4, 6]
    batcher.close(10)

    async def late() -> None:
        batcher.submit(5, 1)

    with pytest.raises(Closed):
        asyncio.run(late())
