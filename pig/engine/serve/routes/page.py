"""The static search page (``/`` and ``/static``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from pig.engine.serve.routes import Context

STATIC = Path(str(files("pig.engine.serve") / "static"))


def register(ctx: Context) -> None:
    @ctx.app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    ctx.app.mount("/static", StaticFiles(directory=STATIC), name="static")
