"""The hot routes (``POST /v1/search``, ``/v1/embeddings``) answered in a lean ASGI layer in
front of the FastAPI app.

Under load the service is bound by the time Python holds the GIL per request, and FastAPI's
per-request machinery (its middleware layers, route resolution, dependency solving, JSON
parsing then validation in Python) held it longer than everything else a batched search does
(bench/bench_serve.py, py-spy). The lane answers a request for a hot route only on its happy
path: a Content-Length within the body limit, a JSON content type, the right key when one is
required, and a body the route's request model accepts, validated from the raw bytes by
pydantic-core. Any other request, and every other route, goes to the FastAPI app unchanged
(the body read so far replayed), so every refusal is the one the FastAPI route gives.

A route is written once, as a FastAPI route (schema, OpenAPI, errors); :meth:`FastLane.hot`
marks its endpoint, and the lane calls that same function with the validated model.
Exceptions it raises get the app's own exception handlers; the requests answered here are
counted in the same request metrics.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from pig.engine.serve.errors import route_path
from pig.engine.serve.metrics import Metrics

Endpoint = Callable[[Any], Awaitable[Response]]
JSON_TYPES = (b"application/json",)


@dataclass(frozen=True)
class _Hot:
    route: str  # the path template (the metrics label)
    model: type[BaseModel]
    endpoint: Endpoint


class FastLane:
    """ASGI app: ``app`` behind the lane; see the module docstring. ``authorize`` takes the
    ``Authorization`` header (None: absent) and says whether it carries the key; None: no key
    is required."""

    def __init__(self, app: FastAPI, *, metrics: Metrics, body_limit: int,
                 authorize: Callable[[str | None], bool] | None) -> None:
        self.app, self.state = app, app.state
        self._metrics, self._limit, self._authorize = metrics, body_limit, authorize
        self._endpoints: set[Endpoint] = set()
        self._hot: dict[str, _Hot] = {}

    def hot(self, endpoint: Endpoint) -> Endpoint:
        """Mark a POST endpoint taking one request model (a decorator, under the route's)."""
        self._endpoints.add(endpoint)
        return endpoint

    def bind(self, router: APIRouter) -> None:
        """Find the marked endpoints among ``router``'s routes (after they are declared)."""
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint in self._endpoints:
                if route.methods != {"POST"}:
                    raise TypeError(f"{route.path}: only POST routes can be hot")
                hints = typing.get_type_hints(route.endpoint)
                hints.pop("return", None)
                (model,) = hints.values()
                self._hot[route.path] = _Hot(route.path, model, route.endpoint)
        if len(self._hot) != len(self._endpoints):
            raise TypeError("a hot endpoint is not a route of this router")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self._hot.get(route_path(scope)) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of each name, as Starlette reads them
        length, auth = headers.get(b"content-length"), headers.get(b"authorization")
        if not (headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() in JSON_TYPES
                and (self._authorize is None or (auth is not None
                                                 and self._authorize(auth.decode("latin-1"))))
                and (length is None or (length.isdigit() and int(length) <= self._limit))):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            read.append(message)
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size > self._limit:
                break
        request = None
        if size <= self._limit:
            with contextlib.suppress(ValidationError):
                request = hot.model.model_validate_json(b"".join(m.get("body", b"") for m in read))
        if request is None:
            await self.app(scope, _replay(read, receive), send)
            return
        status, unexpected = 500, None
        try:
            try:
                response = await hot.endpoint(request)
            except Exception as exc:
                response, unexpected = await self._handled(scope, exc)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            self._metrics.observe_request(hot.route, "POST", status, time.perf_counter() - t0)
        if unexpected is not None:
            raise unexpected  # after its 500 was sent: uvicorn logs the traceback

    async def _handled(self, scope: Scope, exc: Exception
                       ) -> tuple[Response, Exception | None]:
        """The response the app's exception handler for ``exc`` gives, and ``exc`` again
        when only ``Exception``'s handler takes it (an unexpected failure, to be logged)."""
        handlers = self.app.exception_handlers
        kind = next(k for k in type(exc).__mro__ if k in handlers)
        response = handlers[kind](Request(scope), exc)
        if inspect.isawaitable(response):
            response = await response
        return response, exc if kind is Exception else None


def _replay(read: list[Message], receive: Receive) -> Receive:
    """``receive`` that first returns the messages already read."""
    pending = list(read)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
