"""The serve fast lane: it answers a hot route's happy path itself, with the route's own
endpoint, and hands everything else to the FastAPI app, body intact.

A toy app (no model) driven with raw ASGI messages, so that each case can be told apart:
the FastAPI app is wrapped in a spy that records every request it is given. The real server's
routes through the lane are compared with FastAPI's own handling in tests/test_serve.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from pig.engine.serve.errors import Json, http_error, internal, validation_error
from pig.engine.serve.fastlane import FastLane
from pig.engine.serve.metrics import Metrics

KEY = "sesame"
LIMIT = 200


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str
    times: int = 1


class Spy:
    """ASGI wrapper recording the bodies of the requests that reach the FastAPI app."""

    def __init__(self, app: Any) -> None:
        self.app, self.bodies = app, []
        self.state = app.state
        self.exception_handlers = app.exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""

        async def recorded() -> Message:
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            return message

        try:
            await self.app(scope, recorded, send)
        finally:
            self.bodies.append(body)


def make_lane(key: str | None = KEY) -> tuple[FastLane, Spy, Metrics]:
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal)
    metrics = Metrics()
    lane = FastLane(app, metrics=metrics, body_limit=LIMIT,
                    authorize=None if key is None else (lambda h: h == f"Bearer {key}"))
    api = APIRouter()

    @api.post("/echo")
    @lane.hot
    async def echo(req: Echo) -> Json:
        if req.text == "missing":
            raise HTTPException(404, "no such thing")
        if req.text == "boom":
            raise RuntimeError("boom")
        return Json({"echo": req.text * req.times})

    @api.get("/plain")
    def plain() -> dict[str, str]:
        return {"plain": "yes"}

    app.include_router(api)
    lane.bind(api)
    spy = Spy(lane.app)
    lane.app = spy  # type: ignore[assignment]
    return lane, spy, metrics


def call(lane: FastLane, body: bytes | list[bytes], *, method: str = "POST",
         path: str = "/echo", content_type: str | None = "application/json",
         auth: str | None = f"Bearer {KEY}", length: bool = True,
         extra: tuple[tuple[bytes, bytes], ...] = ()) -> tuple[int, dict[str, Any]]:
    """One request as raw ASGI; ``body`` as a list: sent in chunks (no Content-Length);
    ``extra`` headers go last."""
    chunks = body if isinstance(body, list) else [body]
    headers = [(b"host", b"test")]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if auth is not None:
        headers.append((b"authorization", auth.encode()))
    if length and not isinstance(body, list):
        headers.append((b"content-length", str(len(body)).encode()))
    headers.extend(extra)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "scheme": "http", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(lane(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in sent
                                       if m["type"] == "http.response.body"))


def requests_counted(metrics: Metrics, status: int) -> float:
    value = metrics.registry.get_sample_value(
        "pig_requests_total", {"route": "/echo", "method": "POST", "status": str(status)})
    return value or 0.0


def test_happy_path_is_answered_by_the_lane_with_the_routes_endpoint() -> None:
    lane, spy, metrics = make_lane()
    body = b'{"text": "ab", "times": 2}'
    assert call(lane, body) == (200, {"echo": "abab"})
    assert call(lane, [b'{"text": ', b'"ab", "times": 2}']) == (200, {"echo": "abab"})
    assert call(lane, body, content_type="application/json; charset=utf-8")[0] == 200
    assert spy.bodies == []  # none reached FastAPI
    assert requests_counted(metrics, 200) == 3
    # the same request through FastAPI (it takes +json types; the lane does not): same answer
    assert call(lane, body, content_type="application/vnd.test+json") == (200, {"echo": "abab"})
    assert spy.bodies == [body]
    assert requests_counted(metrics, 200) == 3  # FastAPI's own requests: RequestMetrics counts


@pytest.mark.parametrize(("case", "kwargs", "status"), [
    ("invalid JSON", {"body": b'{"text": '}, 400),
    ("schema", {"body": b'{"text": 1}'}, 422),
    ("unknown field", {"body": b'{"text": "a", "x": 1}'}, 422),
    ("no content type", {"body": b'{"text": "a"}', "content_type": None}, 422),
    ("text/plain", {"body": b'{"text": "a"}', "content_type": "text/plain"}, 422),
    ("no key", {"body": b'{"text": "a"}', "auth": None}, 200),
    ("wrong key", {"body": b'{"text": "a"}', "auth": "Bearer nope"}, 200),
    ("wrong key, then the key", {"body": b'{"text": "a"}', "auth": "Bearer nope",
                                 "extra": ((b"authorization", f"Bearer {KEY}".encode()),)}, 200),
    ("+json, then json", {"body": b'{"text": "a"}', "content_type": "application/x+json",
                          "extra": ((b"content-type", b"application/json"),)}, 200),
    ("over the limit", {"body": b'{"text": "' + b"a" * LIMIT + b'"}'}, 200),
    ("chunked over the limit", {"body": [b'{"text": "', b"a" * LIMIT, b'"}']}, 200),
    ("valid JSON, then over the limit", {"body": [b'{"text": "a"}', b" " * LIMIT]}, 200),
])
def test_everything_else_goes_to_fastapi_with_its_body(case: str, kwargs: dict[str, Any],
                                                       status: int) -> None:
    """The toy app has no auth dependency or body limit of its own, so a refused key or an
    oversized body shows up as FastAPI answering (200 or its 422), with the whole body."""
    lane, spy, _ = make_lane()
    body = kwargs["body"]
    got, _reply = call(lane, **kwargs)
    assert got == status, case
    assert spy.bodies == [b"".join(body) if isinstance(body, list) else body], case


def test_no_key_required_and_other_routes() -> None:
    lane, spy, _ = make_lane(key=None)
    assert call(lane, b'{"text": "a"}', auth=None) == (200, {"echo": "a"})
    assert spy.bodies == []
    assert call(lane, b"", method="GET", path="/plain") == (200, {"plain": "yes"})
    assert call(lane, b"", method="GET", path="/echo")[0] == 405
    assert len(spy.bodies) == 2


def test_endpoint_errors_get_the_apps_handlers() -> None:
    lane, spy, metrics = make_lane()
    status, reply = call(lane, b'{"text": "missing"}')
    assert status == 404 and reply["error"]["message"] == "no such thing"
    with pytest.raises(RuntimeError, match="boom"):  # re-raised after its 500 went out
        call(lane, b'{"text": "boom"}')
    assert spy.bodies == []
    assert requests_counted(metrics, 404) == 1 and requests_counted(metrics, 500) == 1


def test_bind_refuses_what_it_cannot_serve() -> None:
    app, metrics = FastAPI(), Metrics()
    lane = FastLane(app, metrics=metrics, body_limit=LIMIT, authorize=None)
    api = APIRouter()

    @api.get("/get")
    @lane.hot
    async def get(req: Echo) -> Json:
        return Json({})

    with pytest.raises(TypeError, match="only POST"):
        lane.bind(api)
    lane = FastLane(app, metrics=metrics, body_limit=LIMIT, authorize=None)
    lane.hot(get)
    with pytest.raises(TypeError, match="not a route"):
        lane.bind(APIRouter())
