"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their assets served from the installed
``fastapi-offline`` package (the ``serve`` extra), so the API browser works without internet
access; every URL in the pages carries the root path (``--root-path``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from pig.engine.serve.routes import Context

ASSETS = Path(str(files("fastapi_offline") / "static"))
ASSETS_PATH = "/docs-assets"
# ReDoc's footer shows a logo from its CDN: images from elsewhere are not loaded at all.
OFFLINE = {"Content-Security-Policy": "img-src 'self' data:"}


def register(ctx: Context) -> None:
    app = ctx.app
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_PATH}"

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        page = get_swagger_ui_html(
            openapi_url=spec, title=f"{app.title} - API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None})  # no online validator badge
        page.headers.update(OFFLINE)
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        page = get_redoc_html(openapi_url=spec, title=f"{app.title} - API",
                              redoc_js_url=f"{assets}/redoc.standalone.js",
                              redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False)
        page.headers.update(OFFLINE)
        return page
