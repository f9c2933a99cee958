"""JSON errors: the one error shape of every route, and the app's exception handlers.

Every error is ``{"error": {"type", "message"}}``: 400 for malformed JSON or an unusable
value, 422 for a request that breaks the schema or a limit, 401 without the key, 404/410 for
videos, 413 for an oversized body, 416 for an unsatisfiable Range, 503 (with ``Retry-After``)
when the queue is full or the server is draining. An unexpected failure is a 500 whose body
says only that (the traceback goes to the log).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from pig.engine.serve.batcher import QueueFull
from pig.engine.serve.models import ErrorResponse
from pig.errors import PigError

RETRY_AFTER_S = 1
_ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 404: "not_found",
                405: "method_not_allowed", 410: "gone", 413: "request_too_large",
                416: "range_not_satisfiable", 422: "invalid_request", 503: "unavailable"}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)}


class Json(JSONResponse):
    """JSON rendered by pydantic-core (compiled: a page of 10 hits in 5.8 us, ``json.dumps``
    28 us). Non-finite floats become null."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


def error(status: int, message: str, *, type_: str | None = None,
          details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> Json:
    body: dict[str, Any] = {"type": type_ or _ERROR_TYPES.get(status, "error"),
                            "message": message}
    if details is not None:
        body["details"] = details
    return Json({"error": body}, status_code=status, headers=headers)


def validation_error(_: Request, exc: RequestValidationError) -> Json:
    errors = list(exc.errors())
    details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""),
                "type": e.get("type", "")} for e in errors]  # no "input": it can be huge
    if any(e.get("type") == "json_invalid" for e in errors):
        return error(400, "the body is not valid JSON", type_="invalid_json", details=details)
    lines = []
    for d in details[:3]:
        where = ".".join(d["loc"][1:] if d["loc"][:1] == ["body"] else d["loc"])
        lines.append(f"{where}: {d['msg']}" if where else d["msg"])
    return error(422, "; ".join(lines) or "invalid request", details=details)


def http_error(_: Request, exc: StarletteHTTPException) -> Json:
    return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def pig_error(_: Request, exc: PigError) -> Json:
    """400 for a user's mistake, 503 for a fault of the environment (a damaged index...)."""
    status = exc.http_status
    return error(status, str(exc), type_="environment_fault" if status >= 500 else None,
                 headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None)


def unavailable(_: Request, exc: Exception) -> Json:
    return error(503, str(exc), type_="overloaded" if isinstance(exc, QueueFull) else
                 "shutting_down", headers={"Retry-After": str(RETRY_AFTER_S)})


def internal(_: Request, exc: Exception) -> Json:
    """The body of an unexpected failure (uvicorn logs its traceback)."""
    return error(500, "internal error (see the server log)", type_="internal")
