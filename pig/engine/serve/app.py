"""The FastAPI application: wires the error handlers, the body limit, metrics, auth and the
route groups of :mod:`pig.engine.serve.routes` (one module each), behind the fast lane."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pig.engine.limits import MAX_QUERIES_PER_REQUEST, MAX_QUERY_CHARS
from pig.engine.serve import errors
from pig.engine.serve.auth import ApiKey, auth_dependencies
from pig.engine.serve.batcher import Closed, QueueFull
from pig.engine.serve.body_limit import BodyLimit
from pig.engine.serve.budget import Budgeted
from pig.engine.serve.fastlane import FastLane
from pig.engine.serve.hosts import HostCheck
from pig.engine.serve.metrics import RequestMetrics
from pig.engine.serve.routes import GROUPS, Context
from pig.engine.serve.service import Service
from pig.errors import PigError
from pig.version import version

# The largest valid request: every query at the character limit, each character written as a
# 12-byte JSON escape pair (\ud83d\ude00), plus the rest of the object.
MAX_BODY_BYTES = MAX_QUERIES_PER_REQUEST * (12 * MAX_QUERY_CHARS + 8) + 4096


def create_app(service: Service, api_key: str | None = None,
               allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> HostCheck:
    """The application serving ``service``: the FastAPI app behind its :class:`FastLane`,
    behind the cost budget's scope and the Host/Origin check (every route gets both);
    ``api_key`` guards every data route, ``allowed_hosts`` are names accepted besides IP
    addresses and ``localhost``, ``cors_origins`` the other origins browsers may call from."""
    app = FastAPI(title="pig-engine", summary="PIG text-to-video search",
                  version=version(), default_response_class=errors.Json,
                  docs_url=None, redoc_url=None)  # routes/docs.py: served offline
    app.state.draining = False
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    handlers: list[tuple[type[Exception], Any]] = [  # Any: each takes its own exception type
        (RequestValidationError, errors.validation_error),
        (StarletteHTTPException, errors.http_error), (PigError, errors.pig_error)]
    for exc, handler in handlers:
        app.add_exception_handler(exc, handler)
    app.add_exception_handler(QueueFull, errors.unavailable)
    app.add_exception_handler(Closed, errors.unavailable)
    app.add_exception_handler(Exception, errors.internal)
    key = ApiKey(api_key) if api_key is not None else None
    lane = FastLane(app, metrics=service.metrics, body_limit=MAX_BODY_BYTES,
                    authorize=key.in_header if key is not None else None)
    api = APIRouter(dependencies=auth_dependencies(key), responses=errors.ERRORS)
    ctx = Context(service, app, api, lane)
    for group in GROUPS:
        importlib.import_module(f"pig.engine.serve.routes.{group}").register(ctx)
    app.include_router(api)
    lane.bind(api)
    return HostCheck(Budgeted(lane), allowed_hosts, cors_origins)
