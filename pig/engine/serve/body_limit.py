"""Request bodies bounded in bytes (ASGI middleware)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pig.engine.serve.errors import Json, error


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a JSON 413, refused from its
    Content-Length before it is read, or as soon as a chunked body passes the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await self._too_large()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._too_large_message())
            return message

        await self.app(scope, counted, send)

    def _too_large_message(self) -> str:
        return f"the request body is over {self.limit} bytes"

    def _too_large(self) -> Json:
        return error(413, self._too_large_message(), headers={"Connection": "close"})
