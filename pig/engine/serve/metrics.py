"""Prometheus metrics of the service (one registry per app) and the ASGI middleware that
counts requests by route template and status."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STAGES = ("tokenize", "encode", "search")


class Metrics:
    """Everything ``GET /metrics`` exports (names prefixed ``pig_``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pig_requests", "HTTP requests by route template and status",
                                ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("pig_request_seconds", "HTTP request latency",
                                         ["route"], buckets=_LATENCY, registry=r)
        self.stage_seconds = Histogram("pig_stage_seconds", "time per stage: tokenize per "
                                       "request, encode and search per batch",
                                       ["stage"], buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("pig_batch_size", "texts per encoder call",
                                    buckets=_BATCH, registry=r)
        self.queue_depth = Gauge("pig_queue_depth", "requests waiting for the encoder",
                                 registry=r)
        self.cost_in_flight = Gauge("pig_cost_in_flight", "results (queries x k) held by the "
                                    "requests in flight (the cost budget)", registry=r)
        self.generation = Gauge("pig_index_generation", "index generation being served, by "
                                "index (its position in the --index list, from 0)", ["index"],
                                registry=r)
        self.vectors = Gauge("pig_index_vectors", "vectors in the served generation, by index "
                             "(its position in the --index list, from 0)", ["index"],
                             registry=r)
        self.out_of_service = Gauge("pig_index_out_of_service", "1 while the index (its "
                                    "position in the --index list) is taken out of service: "
                                    "its files gone, damaged or changed in place", ["index"],
                                    registry=r)
        self.reloads = Counter("pig_index_reloads", "index generations opened, by index (its "
                               "position in the --index list) and outcome", ["index", "outcome"],
                               registry=r)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(name).observe(time.perf_counter() - t0)

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request (``route``: its path template, or ``other``)."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)


class RequestMetrics:
    """ASGI middleware: ``pig_requests`` and ``pig_request_seconds`` for every HTTP request,
    labelled with the matched route's template (``/v1/videos/{video_id}``) so that labels stay
    few; unmatched paths count as ``other``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(getattr(scope.get("route"), "path", "other"),
                                         scope["method"], status, time.perf_counter() - t0)
