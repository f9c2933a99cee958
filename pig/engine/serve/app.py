"""The FastAPI application: routes, bearer-key auth, JSON errors, the static search page.

Every error is a JSON :class:`ErrorResponse` (``{"error": {"type", "message"}}``): 400 for
malformed JSON or an unusable value (and for a video without ``?index=N`` when several
indexes are served), 422 for a request that breaks the schema or a limit, 401 without the
key, 404/410 for videos, 413 for an oversized body, 416 for an unsatisfiable Range, 503
(with ``Retry-After``) when the queue is full or the server is draining. An unexpected
failure is a 500 whose body says only that (the traceback goes to the log).
"""

from __future__ import annotations

import hmac
import mimetypes
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BeforeValidator
from pydantic_core import to_json
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pig.engine.index import FileRecord
from pig.engine.index.catalog import SegmentRecord
from pig.engine.limits import MAX_QUERIES_PER_REQUEST, MAX_QUERY_CHARS
from pig.engine.search import hit_json
from pig.engine.serve.batcher import Closed, QueueFull
from pig.engine.serve.fastlane import FastLane
from pig.engine.serve.metrics import RequestMetrics
from pig.engine.serve.models import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorResponse,
    Health,
    SearchRequest,
    SearchResponse,
    Segment,
    VideoRecord,
)
from pig.engine.serve.service import Encoded, Found, Job, Service, media_file
from pig.errors import PigError

STATIC = Path(str(files("pig.engine.serve") / "static"))
# The largest valid request: every query at the character limit, each character written as a
# 12-byte JSON escape pair (\ud83d\ude00), plus the rest of the object.
MAX_BODY_BYTES = MAX_QUERIES_PER_REQUEST * (12 * MAX_QUERY_CHARS + 8) + 4096
RETRY_AFTER_S = 1
MAX_ID = 2**63 - 1  # catalog ids are SQLite integers
MEDIA_COOKIE = "pig_api_key"  # the page sets it so that <video> requests carry the key


def _digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be written in decimal digits only")
    return value


VideoId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="catalog id (a hit's id)"),
                    BeforeValidator(_digits)]
IndexPosition = Annotated[int | None, Query(
    ge=0, description="the hit's index field: position of its index in the --index list; "
    "required when several indexes are served, else 0"), BeforeValidator(_digits)]

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


def _validation_error(_: Request, exc: RequestValidationError) -> Json:
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


def _http_error(_: Request, exc: StarletteHTTPException) -> Json:
    return error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def _pig_error(_: Request, exc: PigError) -> Json:
    return error(400, str(exc))


def _unavailable(_: Request, exc: Exception) -> Json:
    return error(503, str(exc), type_="overloaded" if isinstance(exc, QueueFull) else
                 "shutting_down", headers={"Retry-After": str(RETRY_AFTER_S)})


def _internal(_: Request, exc: Exception) -> Json:
    """The body of an unexpected failure (uvicorn logs its traceback)."""
    return error(500, "internal error (see the server log)", type_="internal")


class ApiKey:
    """The key of ``--api-key-file``, compared in constant time."""

    def __init__(self, key: str) -> None:
        self._expected = key.encode()

    def accepts(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._expected)

    def in_header(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value is ``Bearer <the key>``."""
        scheme, credentials = get_authorization_scheme_param(authorization)
        return scheme.lower() == "bearer" and self.accepts(credentials)


def _auth(key: ApiKey | None) -> list[Any]:
    """The dependency that guards the data routes, or none without a key."""
    if key is None:
        return []
    bearer = HTTPBearer(auto_error=False, description="the key in --api-key-file")
    cookie = APIKeyCookie(name=MEDIA_COOKIE, auto_error=False,
                          description="the same key, for <video> elements (media only)")

    async def require_key(  # defaults, not Annotated: the closure's names stay unresolved
            request: Request,
            header: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
            cookie_key: str | None = Depends(cookie)) -> None:
        given = header.credentials if header is not None else None
        if given is None and request.url.path.endswith("/media"):
            given = cookie_key
        if not key.accepts(given):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    return [Depends(require_key)]


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


class MediaResponse(FileResponse):
    """A FileResponse whose Range errors are JSON like every other error."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ranges = Headers(scope=scope).get("range")
        if ranges is not None and self.stat_result is not None:
            try:
                self._parse_range_header(ranges, self.stat_result.st_size)
            except MalformedRangeHeader as exc:
                await error(400, f"Range: {exc.content}")(scope, receive, send)
                return
            except RangeNotSatisfiable as exc:
                await error(416, f"Range: outside the file's {exc.max_size} bytes",
                            headers={"Content-Range": f"bytes */{exc.max_size}"})(
                    scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(service: Service, api_key: str | None = None) -> FastLane:
    """The application serving ``service`` (the FastAPI app behind its :class:`FastLane`);
    ``api_key`` guards every data route."""
    app = FastAPI(title="pig-engine", summary="PIG text-to-video search",
                  version="0.1.0", default_response_class=Json)
    app.state.draining = False
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(PigError, _pig_error)  # type: ignore[arg-type]
    app.add_exception_handler(QueueFull, _unavailable)
    app.add_exception_handler(Closed, _unavailable)
    app.add_exception_handler(Exception, _internal)
    key = ApiKey(api_key) if api_key is not None else None
    lane = FastLane(app, metrics=service.metrics, body_limit=MAX_BODY_BYTES,
                    authorize=key.in_header if key is not None else None)
    api = APIRouter(dependencies=_auth(key), responses=ERRORS)

    async def run(job: Job) -> Encoded | Found:
        return await service.submit(job)

    @api.post("/v1/search", response_model=SearchResponse, tags=["search"])
    @lane.hot
    async def search(req: SearchRequest) -> Response:
        """Top ``k`` videos per query, the same hits as ``pig-engine search --json``."""
        texts = req.texts()
        found = await run(Job(texts, req.k, req.exact, req.group_by))
        assert isinstance(found, Found)
        results = [{"query": text, "truncated": cut,
                    "results": [hit_json(r, h) for r, h in enumerate(hits, 1)]}
                   for text, hits, cut in zip(texts, found.hits, found.truncated, strict=True)]
        return Json({"generation": found.generations[0], "generations": found.generations,
                     "results": results})

    @api.post("/v1/embeddings", response_model=EmbeddingsResponse, tags=["search"])
    @lane.hot
    async def embeddings(req: EmbeddingsRequest) -> Response:
        """Unit text vectors (OpenAI-style); ``model`` is the bundle fingerprint."""
        if req.model is not None and req.model != service.model:
            raise HTTPException(404, f"model {req.model!r} is not served here "
                                f"(this server serves {service.model})")
        enc = await run(Job(list(req.input)))
        assert isinstance(enc, Encoded)
        data = [{"object": "embedding", "index": i, "embedding": v}
                for i, v in enumerate(enc.vectors.tolist())]
        n = sum(enc.tokens)
        return Json({"object": "list", "data": data, "model": service.model,
                     "usage": {"prompt_tokens": n, "total_tokens": n}})

    def indexed(video_id: int, index: int | None
                ) -> tuple[int, FileRecord, list[SegmentRecord]]:
        """(index position, record, segments) of ``video_id`` in the index ``?index=`` names:
        400 without one when several are served (never a guess), 404 outside the list."""
        served = len(service.index_dirs)
        if index is None:
            if served > 1:
                raise HTTPException(400, "several indexes are served: give ?index=N (the "
                                    "hit's index field)")
            index = 0
        if index >= served:
            raise HTTPException(404, f"no index {index}: this server serves {served} "
                                f"(?index=0..{served - 1})")
        found = service.video(index, video_id)
        if found is None:
            where = f" in index {index}" if served > 1 else ""
            raise HTTPException(404, f"no indexed video with id {video_id}{where}")
        rec, segments = found
        return index, rec, segments

    @api.get("/v1/videos/{video_id}", response_model=VideoRecord, tags=["videos"])
    def video(video_id: VideoId, index: IndexPosition = None) -> VideoRecord:
        """A video's catalog record and its segments."""
        index, rec, segments = indexed(video_id, index)
        return VideoRecord(id=rec.key, index=index, path=rec.path, size=rec.size,
                           mtime_ns=rec.mtime_ns, frames=rec.frames, digest=rec.digest,
                           duration_s=segments[-1].end_s if segments else None,
                           segments=[Segment(segment=g.ordinal, start_s=g.start_s,
                                             end_s=g.end_s) for g in segments],
                           media=f"/v1/videos/{rec.key}/media?index={index}")

    @api.get("/v1/videos/{video_id}/media", response_class=FileResponse, tags=["videos"],
             responses={200: {"content": {"video/*": {}}}, 206: {"description": "a Range"},
                        410: {"model": ErrorResponse}, 416: {"model": ErrorResponse}})
    def media(video_id: VideoId, index: IndexPosition = None) -> Response:
        """The indexed file itself, with HTTP Range support; only files in the catalog, and
        only while they are the file that was indexed (same size and mtime), else 410."""
        found = media_file(indexed(video_id, index)[1])
        if found is None:
            raise HTTPException(410, f"video {video_id}: the file is missing or changed since "
                                "it was indexed")
        path, st = found
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return MediaResponse(path, media_type=media_type, stat_result=st)

    @api.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    app.include_router(api)
    lane.bind(api)

    @app.get("/v1/health/live", response_model=Health, tags=["operations"])
    def live() -> Health:
        return Health(status="live")

    @app.get("/v1/health/ready", response_model=Health, tags=["operations"],
             responses={503: {"model": Health}})
    def ready() -> Any:
        """Ready while serving (the index and backend are open before the port is bound)."""
        if app.state.draining:
            return Json(Health(status="draining").model_dump(), status_code=503)
        state = service.state()
        return Health(status="ready", generation=state[0][0],
                      vectors=sum(vectors for _, vectors in state), model=service.model)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return lane
