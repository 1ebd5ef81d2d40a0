"""``/docs``: Swagger UI over the OpenAPI document, with every asset served from the package.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts, styles and favicon from public CDNs, so
they are blank on a network without internet access. These pages use the copies of Swagger UI in
``static/swagger-ui/`` (from the npm package ``swagger-ui-dist``; see the README there), served
under ``/docs/assets/``, and turn off Swagger UI's online validator, so ``/docs`` asks no other
host for anything.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent / "static" / "swagger-ui"
ASSETS_URL = "/docs/assets"


def add_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve Swagger UI at ``/docs`` from the package (create the app with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - docs",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # the validator badge would call validator.swagger.io
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
