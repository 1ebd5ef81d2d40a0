"""Mounts the web pages on the read API's FastAPI app: ``/`` (the pages), ``/pages/`` (their static
files) and the operations page's two read endpoints (:mod:`.ops`).

The pages are one HTML file and plain ES modules under ``static/pages/``; each page's state lives in
the URL's hash, so ``/`` is the only HTML route. Nothing is fetched from another host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from ..read import Reader
from .ops import MAX_RUNS, RUNS, UNASSIGNED, OpsReader

STATIC = Path(__file__).parent / "static" / "pages"
NO_STORE = {"Cache-Control": "no-store"}


def mount_pages(app: FastAPI, reader: Reader) -> None:
    """Add the pages and their endpoints to ``app`` (the errors are the app's: 400 names the parameter)."""
    ops = OpsReader(reader)
    app.add_api_route(f"/api/{RUNS}", _runs_route(ops), methods=["GET"], name=RUNS,
                      summary="The newest runs of the run history, newest first, with their step times",
                      openapi_extra={"parameters": [_limit_parameter()]})
    app.add_api_route(f"/api/{UNASSIGNED}", _unassigned_route(ops), methods=["GET"], name=UNASSIGNED,
                      summary="Per tier: rows and raw rows in all, and those of the unassigned id")
    app.add_api_route("/", _index_route(), methods=["GET"], include_in_schema=False)
    app.mount("/pages", StaticFiles(directory=STATIC), name="pages")


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


def _index_route() -> Any:
    def route() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)
    return route
