"""The cost budget: results (queries x k) per request and in flight, held until the answer
has left the server.

A request's cost is the number of results its answer holds (an embedding counts as
:data:`EMBEDDING_COST` results, about the bytes of its JSON). One request may cost up to
:data:`~pig.engine.limits.MAX_RESULTS_PER_REQUEST` (more: 422); all requests in flight
together up to ``in_flight`` (more: 503 with ``Retry-After``). A cost is held from the
moment the request is queued until its answer was handed to the transport in pieces that each
waited for the client to read the previous ones (:class:`Budgeted` splits the answer), so a
client that does not read pins at most its own answer, and the connection limits drop it
after ``--client-timeout``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pig.engine.limits import MAX_RESULTS_PER_REQUEST
from pig.engine.serve.batcher import QueueFull
from pig.errors import PigError

EMBEDDING_COST = 32  # results an embedding's answer weighs (512 floats as JSON ~ 32 hits)
IN_FLIGHT = 8 * MAX_RESULTS_PER_REQUEST
CHUNK = 64 * 1024  # bytes per piece of an answer

Release = Callable[[], None]
_held: ContextVar[list[Release] | None] = ContextVar("pig_cost_held", default=None)


class TooCostly(PigError):
    """A request whose answer would hold more results than one request may."""

    http_status = 422


class CostBudget:
    """Results held by the requests in flight (thread-safe)."""

    def __init__(self, in_flight: int = IN_FLIGHT,
                 per_request: int = MAX_RESULTS_PER_REQUEST) -> None:
        self.in_flight, self.per_request = in_flight, per_request
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, queries: int, k: int | None) -> Release:
        """Take the cost of ``queries`` queries of ``k`` results (None: embeddings); raises
        :class:`TooCostly` or :class:`QueueFull` instead. Returns the (idempotent) release."""
        cost = queries * (EMBEDDING_COST if k is None else k)
        if cost > self.per_request:
            what = f"{queries} texts" if k is None else f"{queries} queries x k {k}"
            raise TooCostly(f"{what} = {cost} results, more than {self.per_request} per "
                            "request: split it or lower k")
        with self._lock:
            if self.held + cost > self.in_flight:
                raise QueueFull(f"{self.held} results are in flight (the cost budget is "
                                f"{self.in_flight})")
            self.held += cost
        done = False

        def release() -> None:
            nonlocal done
            with self._lock:
                if not done:
                    done = True
                    self.held -= cost

        return release

    @staticmethod
    def defer(release: Release) -> bool:
        """Hand ``release`` to the request's :class:`Budgeted` scope (True), or say there is
        none (False: the caller releases it itself)."""
        held = _held.get()
        if held is None:
            return False
        held.append(release)
        return True


class Budgeted:
    """ASGI middleware: the scope in which a request's costs are held (released once the app
    returned), and its answer sent in :data:`CHUNK` pieces (each waits for the client to
    drain the previous ones)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: Any = getattr(app, "state", None)  # the app's (draining), if any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[Release] = []
        token = _held.set(held)

        async def pieces(message: Message) -> None:
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= CHUNK:
                await send(message)
                return
            more = message.get("more_body", False)
            view = memoryview(body)
            for start in range(0, len(body), CHUNK):
                last = start + CHUNK >= len(body)
                await send({"type": "http.response.body", "body": bytes(view[start:start + CHUNK]),
                            "more_body": more or not last})

        try:
            await self.app(scope, receive, pieces)
        finally:
            _held.reset(token)
            for release in held:
                release()
