"""HTTP JSON routes over :mod:`summarizer.read` (FastAPI): routes, response shapes and error handlers only.

Every success is ``{"data": ..., "meta": {...}}``; every error, whatever its status, is
``{"error": {"status", "code", "message", "parameter", "allowed", "detail"}}``. Query parameters are
checked by ``read.parse_query`` (not by FastAPI), so an unknown or malformed one is a 400 naming it.
The pydantic models below describe the shapes for the OpenAPI document; the bodies themselves are
built and cached as bytes by the reader.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .app import Summarizer
from .config import Config
from .errors import DatabaseUnavailable, SchemaError
from .read import CATEGORIES, DASHBOARD, HEALTH, META, PARAMS, PROFITABILITY, Answer, BadParameter, Param, Reader

log = logging.getLogger(__name__)

DESCRIPTION = """Dashboard data read from summarizer's summary tables only (never the raw table).

**Numbers.** Every `value`, `revenue`, `cost` and `profit` is an exact decimal written as a JSON
*string* (`"1234.5000"`), so no float rounding happens on the way; parse it with a decimal type.
(On the SQLite demo engine the summaries hold REAL values and the strings are those floats.)
`row_count` (raw rows summed) and ids are JSON integers.

**Shapes.** Success: `{"data": ..., "meta": {"endpoint", "params", "data_version", "count"}}`.
Error, any status: `{"error": {"status", "code", "message", "parameter", "allowed", "detail"}}`.
400 `bad_parameter` names the parameter and what is allowed; 503 `database_unavailable`,
`not_initialised`, `never_refreshed` or `stale`.

**Caching.** Answers are cached per endpoint, normalised parameters and data version (the id of
the newest finished refresh run), so a refresh invalidates them at once. The `X-Cache` header says
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
    data_version: int = Field(description="id of the newest finished refresh run the answer reflects")
    count: int | None = None


Decimal = Field(description="exact decimal, as a string", examples=["1234.5000"])


class DashboardRow(BaseModel):
    month: str
    brand_id: int
    category_id: int
    metric: str
    value: str = Decimal
    row_count: int


class CategoryRow(BaseModel):
    month: str
    category_id: int
    metric: str
    value: str = Decimal
    row_count: int


class ProfitRow(BaseModel):
    month: str
    brand_id: int | None = Field(None, description="present when grouped by brand")
    category_id: int
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


class HealthData(BaseModel):
    status: str
    message: str
    last_success: dict[str, Any] | None
    age_seconds: float | None
    max_age_seconds: float


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


def openapi_parameters(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    def schema(param: Param) -> dict[str, Any]:
        kinds: dict[str, dict[str, Any]] = {"month": {"type": "string", "pattern": r"^\d{4}-\d{2}$"},
                                            "id": {"type": "integer", "minimum": 0},
                                            "choice": {"type": "string", "enum": list(param.choices)},
                                            "text": {"type": "string"}}
        item = kinds[param.kind]
        return {"type": "array", "items": item} if param.repeatable else item
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
    app = FastAPI(title="summarizer read API", version=__version__, description=DESCRIPTION)
    app.state.reader = reader
    for endpoint in (DASHBOARD, CATEGORIES, PROFITABILITY, META):
        app.add_api_route(f"/api/{endpoint}", _data_route(reader, endpoint), **_route_docs(endpoint))
    app.add_api_route(f"/api/{HEALTH}", _health_route(reader), **_route_docs(HEALTH))
    _add_error_handlers(app)
    return app


def _route_docs(endpoint: str) -> dict[str, Any]:
    errors = {400: {"model": ErrorResponse, "description": "a query parameter cannot be used"},
              503: {"model": ErrorResponse, "description": "database unavailable, not initialised"
                    + (", or summaries never refreshed / stale" if endpoint == HEALTH else "")}}
    return {"methods": ["GET"], "summary": SUMMARIES[endpoint], "response_model": RESPONSES[endpoint],
            "responses": errors, "openapi_extra": {"parameters": openapi_parameters(PARAMS[endpoint])},
            "name": endpoint}


def _send(answer: Answer) -> Response:
    headers = {"X-Cache": answer.cache, "X-Data-Version": str(answer.version)}
    return Response(answer.body, media_type="application/json", headers=headers)


def _data_route(reader: Reader, endpoint: str) -> Any:
    def route(request: Request) -> Response:
        return _send(reader.answer(endpoint, request.query_params.multi_items()))
    return route


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
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering a request")
        return error_response(500, "internal_error", f"unexpected error: {type(exc).__name__}; see the server log")
