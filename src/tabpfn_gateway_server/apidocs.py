"""``/docs`` offline: Swagger UI's assets served from an installed package, never from a CDN."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "install_api_docs"]

ASSETS_PATH = "/docs/assets"


def install_api_docs(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at ``docs_url`` with its script and styles from this server.

    The assets come from the ``fastapi-swagger`` distribution (Swagger UI 5, which renders
    the OpenAPI 3.1 documents FastAPI writes; ``swagger-ui-bundle`` ships 4.x, which does
    not). Create the app with ``docs_url=None`` so FastAPI's CDN page is not added too.
    """
    assets = resources.files("fastapi_swagger.resources")
    app.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="swagger-ui-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
        )
