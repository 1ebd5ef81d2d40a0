"""HTTP JSON routes over :mod:`summarizer.serve.read` (FastAPI): routes, response shapes and error handlers only.

Every success is ``{"data": ..., "meta": {...}}``; every error, whatever its status, is
``{"error": {"status", "code", "message", "parameter", "allowed", "detail"}}``. Query parameters are
checked by ``read.parse_query`` (not by FastAPI), so an unknown or malformed one is a 400 naming it.
The pydantic models below describe the shapes for the OpenAPI document; the bodies themselves are
built and cached as bytes by the reader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import Config
from ..errors import DatabaseUnavailable, SchemaError
from ..facade import Summarizer
from . import timing
from .answers import CURSOR_PATTERN
from .apidocs import add_docs
from .httpmetrics import instrument
from .pages import mount_pages
from .read import (
    BIGINT_MAX,
    CATEGORIES,
    DASHBOARD,
    HEALTH,
    MAX_IDS,
    META,
    MONTH_PATTERN,
    PROFITABILITY,
    Answer,
    BadParameter,
    Param,
    Reader,
    endpoint_params,
)
from .timing import ServerTiming

log = logging.getLogger(__name__)

DESCRIPTION = """Dashboard data read from summarizer's summary tables only (never the raw table).

**Numbers.** Every `value`, `revenue`, `cost` and `profit` is an exact decimal written as a JSON
*string* (`"1234.5000"`), so no float rounding happens on the way; parse it with a decimal type.
(On the SQLite demo engine the summaries hold REAL values and the strings are those floats.)
`row_count` (raw rows summed) and ids are JSON integers.

**Names.** Every `brand_id` is followed by `brand_name` and every `category_id` by `category_name`,
from the brands and categories tables; id 0 is `"Unassigned"`, an id without a row there is `null`.
A name column the database does not have is left out; `/api/meta` `notes` says so.

**Shapes.** Success: `{"data": ..., "meta": {"endpoint", "params", "data_version", "count"}}`.
Error, any status: `{"error": {"status", "code", "message", "parameter", "allowed", "detail"}}`.
400 `bad_parameter` names the parameter and what is allowed; 503 `database_unavailable`,
`not_initialised`, `never_refreshed` or `stale`.

**Pages.** Data answers hold at most `limit` rows (default 1000, at most `[api] max_limit`), in
a total order (`order`, then month and id), so pages never overlap or skip. `meta.next` is the next
page's URL, with an opaque `cursor` that is refused (400) once a refresh has changed the data.
`group=total` gives one row per brand (or category) and metric over the whole range.

**CSV.** `format=csv` or `Accept: text/csv`: the same rows and columns as CSV, a header line first,
decimals as the same exact text, null as an empty field; the next page is in the `Link` header.

**Caching.** Answers are cached per endpoint, normalised parameters and data version (a number
that changes with every change to the summaries: each month a refresh commits, each full refresh's
swap), so a refresh invalidates them at once, even one killed half way. The `X-Cache` header says
`hit`, `miss` or `bypass` (cache unavailable); `X-Data-Version` gives the version."""


UNAVAILABLE = "cannot connect to the database, or it is not answering; try again later (the server log says why)"


# --- shapes, for the OpenAPI document -------------------------------------------------------------

class ErrorBody(BaseModel):
    status: int
    code: str = Field(description="bad_parameter, not_found, database_unavailable, not_initialised, "
                                  "never_refreshed, stale or internal_error")
    message: str
    parameter: str | None = Field(None, description="the query parameter at fault (400)")
    allowed: list[str] | str | None = Field(None, description="what that parameter accepts")
    detail: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Meta(BaseModel):
    endpoint: str
    params: dict[str, Any] = Field(description="the parameters as understood: normalised, defaults filled in")
    data_version: int = Field(description="the data version the answer reflects: it changes with every change "
                                          "to the summaries")
    count: int | None = None
    next: str | None = Field(None, description="data endpoints: the next page's URL (path and query, with a "
                                               "cursor), or null on the last page")


Decimal = Field(description="exact decimal, as a string", examples=["1234.5000"])


BRAND_NAME = Field(None, description="the brand's name from the brands table; \"Unassigned\" for id 0, null for "
                                     "an id without a row; absent when the name column is missing (see meta notes)")
CATEGORY_NAME = Field(None, description="the category's name, as brand_name")


class DashboardRow(BaseModel):
    month: str | None = Field(None, description="absent with group=total")
    brand_id: int
    brand_name: str | None = BRAND_NAME
    category_id: int
    category_name: str | None = CATEGORY_NAME
    metric: str
    value: str = Decimal
    row_count: int


class CategoryRow(BaseModel):
    month: str | None = Field(None, description="absent with group=total")
    category_id: int
    category_name: str | None = CATEGORY_NAME
    metric: str
    value: str = Decimal
    row_count: int


class ProfitRow(BaseModel):
    month: str | None = Field(None, description="absent with group=total")
    brand_id: int | None = Field(None, description="present when grouped by brand")
    brand_name: str | None = BRAND_NAME
    category_id: int
    category_name: str | None = CATEGORY_NAME
    revenue: str = Decimal
    cost: str = Decimal
    profit: str = Decimal


class MetaData(BaseModel):
    months: list[str]
    metrics: list[str]
    marketplaces: list[str]
    all_marketplace: str
    rows: dict[str, int]
    revenue_metrics: list[str]
    cost_metrics: list[str]
    last_run: dict[str, Any] | None
    last_success: dict[str, Any] | None
    notes: list[str] = Field(description="what the answers leave out and why (e.g. a missing name column)")


class HealthData(BaseModel):
    status: str
    message: str
    last_success: dict[str, Any] | None
    age_seconds: float | None
    max_age_seconds: float
    follow: dict[str, Any] | None = Field(default=None, description="the change-stream follower's state "
                                          "([follow] enabled): position, lag, waiting, rate, last error")


def _envelope(name: str, data: Any) -> type[BaseModel]:
    return type(name, (BaseModel,), {"__annotations__": {"data": data, "meta": Meta}})


RESPONSES: dict[str, type[BaseModel]] = {
    DASHBOARD: _envelope("DashboardResponse", list[DashboardRow]),
    CATEGORIES: _envelope("CategoriesResponse", list[CategoryRow]),
    PROFITABILITY: _envelope("ProfitabilityResponse", list[ProfitRow]),
    META: _envelope("MetaResponse", MetaData),
    HEALTH: _envelope("HealthResponse", HealthData),
}
SUMMARIES = {
    DASHBOARD: "Brand tier: one row per month, brand and metric, for one marketplace (default ALL)",
    CATEGORIES: "Category tier: one row per month, category and metric (all marketplaces)",
    PROFITABILITY: "Brand tier: revenue metrics minus cost metrics ([api] config) per month and brand or category",
    META: "Months, metrics and marketplaces available; rows per tier; last run",
    HEALTH: "200 when the last successful refresh is younger than [api] max_age, else 503",
}


def parameter_schema(param: Param) -> dict[str, Any]:
    """The JSON schema of one query parameter: exactly what ``read.parse_query`` accepts for it."""
    kinds: dict[str, dict[str, Any]] = {
        "month": {"type": "string", "pattern": MONTH_PATTERN},
        "id": {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX},
        "count": {"type": "integer", "minimum": param.minimum, "maximum": param.maximum},
        "choice": {"type": "string", "enum": list(param.choices)},
        "text": {"type": "string", "minLength": 1},
        "cursor": {"type": "string", "pattern": CURSOR_PATTERN}}
    item = kinds[param.kind] | ({"default": int(param.default) if param.kind == "count" else param.default}
                                if param.default is not None else {})
    if not param.repeatable:
        return item
    return {"type": "array", "items": item, "minItems": 1} | ({"maxItems": MAX_IDS} if param.kind == "id" else {})


def openapi_parameters(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    schema = parameter_schema
    return [{"name": p.name, "in": "query", "required": p.required, "description": p.help, "schema": schema(p),
             **({"style": "form", "explode": True} if p.repeatable else {})} for p in params]


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorBody(status=status, code=code, message=message, **extra)
    return JSONResponse({"error": body.model_dump()}, status_code=status)


# --- the app --------------------------------------------------------------------------------------

def create_app(target: Summarizer | Config, *, reader: Reader | None = None) -> FastAPI:
    """The read API over a Summarizer (or a Config to build one from)."""
    summarizer = target if isinstance(target, Summarizer) else Summarizer(target)
    reader = reader or Reader(summarizer)
    app = FastAPI(title="summarizer read API", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None,  # /docs from the package's assets: add_docs
                  lifespan=_worker_threads(summarizer.config.api.threads))
    app.state.reader = reader
    max_limit = summarizer.config.api.max_limit
    for endpoint in (DASHBOARD, CATEGORIES, PROFITABILITY, META):
        app.add_api_route(f"/api/{endpoint}", _data_route(reader, endpoint), **_route_docs(endpoint, max_limit))
    app.add_api_route(f"/api/{HEALTH}", _health_route(reader), **_route_docs(HEALTH, max_limit))
    mount_pages(app, reader)
    app.state.metrics = instrument(app, reader)
    app.add_middleware(ServerTiming)
    add_docs(app)
    _add_error_handlers(app)
    return app


def _worker_threads(threads: int) -> Any:
    """The lifespan that sets how many requests run at once: the worker threads of the routes (``[api] threads``,
    as many as the read engine's pool keeps connections)."""
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield
    return lifespan


def _route_docs(endpoint: str, max_limit: int) -> dict[str, Any]:
    errors: dict[int | str, dict[str, Any]] = {
              400: {"model": ErrorResponse, "description": "a query parameter cannot be used"},
              503: {"model": ErrorResponse, "description": "database unavailable, not initialised"
                    + (", or summaries never refreshed / stale" if endpoint == HEALTH else "")}}
    if endpoint not in (META, HEALTH):
        errors[200] = {"content": {"text/csv": {"schema": {"type": "string"}}},
                       "description": "the rows; as CSV with format=csv or Accept: text/csv"}
    return {"methods": ["GET"], "summary": SUMMARIES[endpoint], "response_model": RESPONSES[endpoint],
            "responses": errors,
            "openapi_extra": {"parameters": openapi_parameters(endpoint_params(endpoint, max_limit))},
            "name": endpoint}


def _send(answer: Answer, endpoint: str) -> Response:
    headers = {"X-Cache": answer.cache, "X-Data-Version": str(answer.version)}
    if endpoint != META:
        headers["Vary"] = "Accept"
    if answer.media_type.startswith("text/csv"):
        headers["Content-Disposition"] = f'attachment; filename="{endpoint}.csv"'
        if answer.next:
            headers["Link"] = f'<{answer.next}>; rel="next"'
    return Response(answer.body, media_type=answer.media_type, headers=headers)


def _data_route(reader: Reader, endpoint: str) -> Any:
    def route(request: Request) -> Response:
        started = time.perf_counter()
        timing.db_reset()
        items = request.query_params.multi_items()
        if endpoint != META and "format" not in request.query_params and wants_csv(request.headers.get("accept")):
            items.append(("format", "csv"))
        response = _send(reader.answer(endpoint, items), endpoint)
        arrived = timing.arrived(request.scope)
        timing.record(request.scope, queue=started - (arrived or started), db=timing.db_seconds(),
                      app=time.perf_counter() - started)
        return response
    return route


def wants_csv(accept: str | None) -> bool:
    """True when the Accept header ranks text/csv above application/json (a tie, or neither, is JSON)."""
    ranks = {"text/csv": 0.0, "application/json": 0.0}
    for part in (accept or "").split(","):
        media, *options = (piece.strip() for piece in part.split(";"))
        if media.lower() in ranks:
            ranks[media.lower()] = max(ranks[media.lower()], _quality(options))
    return ranks["text/csv"] > ranks["application/json"]


def _quality(options: list[str]) -> float:
    for option in options:
        name, _, value = option.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def _health_route(reader: Reader) -> Any:
    def route(request: Request) -> Response:
        reader.parse(HEALTH, request.query_params.multi_items())  # it takes none: 400 for any
        health = reader.health()
        data = {"status": health.code, "message": health.message, **health.data}
        if health.ok:
            meta = {"endpoint": HEALTH, "params": {}, "data_version": reader.version()}
            return JSONResponse({"data": data, "meta": meta}, headers={"Cache-Control": "no-store"})
        return error_response(503, health.code, health.message, detail=data)
    return route


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadParameter)
    def bad_parameter(_request: Request, exc: BadParameter) -> JSONResponse:
        return error_response(400, "bad_parameter", str(exc), parameter=exc.parameter, allowed=exc.allowed)

    @app.exception_handler(DatabaseUnavailable)
    def unavailable(_request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        log.error("answering 503: %s", exc)  # which host and why, for the operator; the client learns neither
        return error_response(503, "database_unavailable", UNAVAILABLE)

    @app.exception_handler(SchemaError)
    def not_initialised(_request: Request, exc: SchemaError) -> JSONResponse:
        return error_response(503, "not_initialised", str(exc))

    @app.exception_handler(StarletteHTTPException)
    def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # a 405's Allow
        return response

    @app.exception_handler(Exception)
    def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering a request")
        return error_response(500, "internal_error", f"unexpected error: {type(exc).__name__}; see the server log")
