"""Mounts the web pages on the read API's FastAPI app: ``/`` (the pages), ``/pages/<tag>/`` (their
static files) and the operations page's two read endpoints (:mod:`.ops`).

The pages are one HTML file and plain ES modules under ``static/pages/``; each page's state lives in
the URL's hash, so ``/`` is the only HTML route. Nothing is fetched from another host.

The static files' URLs carry a tag made from their contents, so browsers keep them without asking
again (``immutable``) and a new version of the files gets new URLs; ``/`` itself is never cached.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from .ops import MAX_RUNS, RUNS, UNASSIGNED, OpsReader
from .read import Reader

STATIC = Path(__file__).parent / "static" / "pages"
NO_STORE = {"Cache-Control": "no-store"}
IMMUTABLE = "public, max-age=31536000, immutable"


class TaggedFiles(StaticFiles):
    """Static files under a URL that changes when they do: cached by browsers for good."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = IMMUTABLE
        return response


def asset_tag(directory: Path = STATIC) -> str:
    """A short digest of every file's name and contents."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def mount_pages(app: FastAPI, reader: Reader) -> None:
    """Add the pages and their endpoints to ``app`` (the errors are the app's: 400 names the parameter)."""
    ops = OpsReader(reader)
    app.add_api_route(f"/api/{RUNS}", _runs_route(ops), methods=["GET"], name=RUNS,
                      summary="The newest runs of the run history, newest first, with their step times",
                      openapi_extra={"parameters": [_limit_parameter()]})
    app.add_api_route(f"/api/{UNASSIGNED}", _unassigned_route(ops), methods=["GET"], name=UNASSIGNED,
                      summary="Per tier: rows and raw rows in all, and those of the unassigned id")
    tag = asset_tag()
    app.add_api_route("/", _index_route(tag), methods=["GET"], include_in_schema=False)
    app.mount(f"/pages/{tag}", TaggedFiles(directory=STATIC), name="pages")


def _limit_parameter() -> dict[str, Any]:
    return {"name": "limit", "in": "query", "required": False, "description": "how many runs (newest first)",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS, "default": 30}}


def _runs_route(ops: OpsReader) -> Any:
    def route(request: Request) -> Response:
        body = ops.runs(request.query_params.multi_items())
        return Response(body, media_type="application/json", headers=NO_STORE)
    return route


def _unassigned_route(ops: OpsReader) -> Any:
    def route(request: Request) -> Response:
        body, how, version = ops.unassigned(request.query_params.multi_items())
        headers = {"X-Cache": how, "X-Data-Version": str(version)}
        return Response(body, media_type="application/json", headers=headers)
    return route


def _index_route(tag: str) -> Any:
    html = (STATIC / "index.html").read_text().replace('"/pages/', f'"/pages/{tag}/')

    def route() -> HTMLResponse:
        return HTMLResponse(html, headers=NO_STORE)
    return route
