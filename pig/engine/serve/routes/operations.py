"""Operations: ``/metrics`` (Prometheus, behind the key) and the health probes (open)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pig.engine.display import display_path
from pig.engine.serve.errors import Json
from pig.engine.serve.models import Health, OutOfService
from pig.engine.serve.routes import Context


def register(ctx: Context) -> None:
    service, app, api = ctx.service, ctx.app, ctx.api

    @api.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(service.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/health/live", response_model=Health, tags=["operations"])
    def live() -> Health:
        return Health(status="live")

    @app.get("/v1/health/ready", response_model=Health, tags=["operations"],
             responses={503: {"model": Health}})
    def ready() -> Any:
        """Ready while serving (the index and backend are open before the port is bound);
        503 ``degraded`` naming each index taken out of service, 503 ``draining``."""
        if app.state.draining:
            return Json(Health(status="draining").model_dump(), status_code=503)
        state = service.state()
        health = Health(status="ready", generation=state[0][0],
                        vectors=sum(vectors for _, vectors in state), model=service.model)
        out = service.degraded()
        if not out:
            return health
        health.status = "degraded"
        health.out_of_service = [OutOfService(index=p, path=display_path(
            service.index_dirs[p], controls=False), reason=reason) for p, reason in out]
        return Json(health.model_dump(), status_code=503)
