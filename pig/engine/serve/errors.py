"""JSON errors: the one error shape of every route, and the app's exception handlers.

Every error is ``{"error": {"type", "message"}}``; on the OpenAI-compatible routes
(:data:`OPENAI_ROUTES`) it is OpenAI's ``{"error": {"message", "type", "param", "code"}}``
(an OpenAI client reads those). 400 for malformed JSON or an unusable value, 422 for a
request that breaks the schema or a limit, 401 without the key, 404/410 for videos, 413 for an
oversized body, 415 for a body not sent as JSON, 416 for an unsatisfiable Range, 503 (with
``Retry-After``) when the queue is full or the server is draining. An unexpected failure is a
500 whose body says only that (the traceback goes to the log).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from pig.engine.serve.batcher import QueueFull
from pig.engine.serve.models import ErrorResponse
from pig.errors import PigError

RETRY_AFTER_S = 1
_ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 404: "not_found",
                405: "method_not_allowed", 410: "gone", 413: "request_too_large",
                415: "unsupported_media_type", 416: "range_not_satisfiable",
                422: "invalid_request", 503: "unavailable"}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 503)}
# Routes whose errors take OpenAI's shape and types, by route path (the root path removed).
OPENAI_ROUTES = ("/v1/embeddings", "/v1/models")
_OPENAI_TYPES = {401: "authentication_error", 429: "rate_limit_error", 503: "server_error",
                 500: "server_error"}
JSON_ONLY = "send the body as JSON, with the header Content-Type: application/json"


class ApiError(StarletteHTTPException):
    """An HTTP error naming the request field at fault (``param``) and a machine-readable
    ``code`` (OpenAI's ``error.param`` / ``error.code``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(status, message)
        self.param, self.code = param, code


def route_path(scope: Scope) -> str:
    """The request's path below the root path (``--root-path``): what routes match."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


def is_openai(scope: Scope) -> bool:
    path = route_path(scope)
    return any(path == r or path.startswith(r + "/") for r in OPENAI_ROUTES)


class Json(JSONResponse):
    """JSON rendered by pydantic-core (compiled: a page of 10 hits in 5.8 us, ``json.dumps``
    28 us). Non-finite floats become null."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


def error(status: int, message: str, *, type_: str | None = None,
          details: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None, scope: Scope | None = None,
          param: str | None = None, code: str | None = None) -> Json:
    """The error response; OpenAI's shape when ``scope`` is a request to an OpenAI route."""
    if scope is not None and is_openai(scope):
        kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else
                                 "server_error")
        return Json({"error": {"message": message, "type": kind, "param": param,
                               "code": code or type_ or _ERROR_TYPES.get(status)}},
                    status_code=status, headers=headers)
    body: dict[str, Any] = {"type": type_ or _ERROR_TYPES.get(status, "error"),
                            "message": message}
    if details is not None:
        body["details"] = details
    return Json({"error": body}, status_code=status, headers=headers)


def validation_error(request: Request, exc: RequestValidationError) -> Json:
    errors = list(exc.errors())
    details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""),
                "type": e.get("type", "")} for e in errors]  # no "input": it can be huge
    if any(e.get("type") == "json_invalid" for e in errors):
        return error(400, "the body is not valid JSON", type_="invalid_json", details=details,
                     scope=request.scope)
    lines, fields = [], []
    for d in details[:3]:
        where = ".".join(d["loc"][1:] if d["loc"][:1] == ["body"] else d["loc"])
        lines.append(f"{where}: {d['msg']}" if where else d["msg"])
        fields.append(where)
    return error(422, "; ".join(lines) or "invalid request", details=details,
                 scope=request.scope, param=fields[0] if fields and fields[0] else None)


def http_error(request: Request, exc: StarletteHTTPException) -> Json:
    return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None),
                 scope=request.scope, param=getattr(exc, "param", None),
                 code=getattr(exc, "code", None))


def pig_error(request: Request, exc: PigError) -> Json:
    """400 for a user's mistake, 503 for a fault of the environment (a damaged index...)."""
    status = exc.http_status
    return error(status, str(exc), type_="environment_fault" if status >= 500 else None,
                 headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None,
                 scope=request.scope)


def unavailable(request: Request, exc: Exception) -> Json:
    return error(503, str(exc), type_="overloaded" if isinstance(exc, QueueFull) else
                 "shutting_down", headers={"Retry-After": str(RETRY_AFTER_S)},
                 scope=request.scope)


def internal(request: Request, exc: Exception) -> Json:
    """The body of an unexpected failure (uvicorn logs its traceback)."""
    return error(500, "internal error (see the server log)", type_="internal",
                 scope=request.scope)


async def require_json(request: Request) -> None:
    """415 for a body sent with another content type (curl -d sends a form's): a dependency
    of the JSON routes, so FastAPI answers it before validating the body."""
    ctype = request.headers.get("content-type")
    if ctype is not None and not is_json_type(ctype.encode("latin-1")):
        raise ApiError(415, f"Content-Type {ctype.split(';')[0].strip()!r}: {JSON_ONLY}",
                       code="unsupported_media_type")


def is_json_type(ctype: bytes) -> bool:
    """``application/json`` or a ``+json`` type (parameters such as charset ignored)."""
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                            and media.endswith(b"+json"))
