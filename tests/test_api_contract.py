"""The HTTP contract: the OpenAPI document says exactly what the server accepts; errors stay small.

The parameter walk reads each endpoint's parameters from ``/openapi.json``, derives boundary values
from each documented constraint (pattern, minimum, maximum, enum, minLength, maxItems) and checks
that the server refuses exactly the values the schema refuses: a 400 naming that parameter.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy.engine import make_url

from summarizer.serve.http import create_app
from summarizer.serve.read import CATEGORIES, DASHBOARD, PROFITABILITY

from .setups import load_and_refresh
from .test_api_http import Http
from .test_read_api import SETTINGS

MONTH_CASES = ["0001-01", "9999-12", "2024-01", "0000-01", "0000-00", "2024-00", "2024-13", "2024-1", " 2024-01",
               "2024-01 ", "02024-01", "2024-01-01", "２０２４-01", ""]
GOOD_TEXT = {"marketplace": "US", "metric": "revenue"}  # values the test data holds


@pytest.fixture
def http(app_factory, tmp_path) -> Http:
    app = app_factory(make_url(f"sqlite:///{tmp_path / 'contract.db'}"), **SETTINGS)
    load_and_refresh(app, seed=8, rows=300, huge=False)
    return Http(create_app(app))


def accepts(schema: dict[str, Any], values: list[str]) -> bool:
    """Whether ``values`` (one query parameter, as sent) satisfy its JSON schema (the subset the API uses)."""
    if schema.get("type") == "array":
        count_ok = schema.get("minItems", 0) <= len(values) <= schema.get("maxItems", math.inf)
        return count_ok and all(accepts(schema["items"], [v]) for v in values)
    (value,) = values
    if schema["type"] == "integer":
        if not re.fullmatch(r"-?[0-9]+", value):
            return False
        number = Decimal(value)  # int() refuses texts of more than 4300 digits
        return schema.get("minimum", -math.inf) <= number <= schema.get("maximum", math.inf)
    if "enum" in schema:
        return value in schema["enum"]
    if len(value) < schema.get("minLength", 0):
        return False
    return "pattern" not in schema or re.search(schema["pattern"], value) is not None


def cases(name: str, schema: dict[str, Any]) -> list[list[str]]:
    """Boundary values for one parameter's schema: inside and just outside each constraint."""
    item = schema.get("items", schema)
    if item["type"] == "integer":
        low, high = item["minimum"], item["maximum"]
        singles = [str(low), str(high), str(low - 1), str(high + 1), "1.5", "x", "", "+1", "1" + "0" * 5000]
    elif "enum" in item:
        singles = [*item["enum"], "x", "", item["enum"][0].upper()]
    elif item.get("pattern", "").startswith("^(?:[1-9]"):
        singles = MONTH_CASES
    elif "pattern" in item:  # the cursor: only values its pattern refuses (a real one is tested by paging)
        singles = ["!", "", "a" * 201, "a b"]
    else:
        singles = [GOOD_TEXT[name], ""]
    found = [[value] for value in singles]
    if "maxItems" in schema:
        good = [v for v in singles if accepts(item, [v])][0]
        found += [[good] * schema["maxItems"], [good] * (schema["maxItems"] + 1)]
    return found


def request_for(name: str, values: list[str], month: dict[str, Any]) -> list[tuple[str, str]]:
    """A request valid but for ``name``; a month goes in from and to alike (so the range stays legal)."""
    if name in ("from", "to"):
        other = values[0] if accepts(month, values) else "2024-01"
        return [("from", other), ("to", values[0])] if name == "to" else [("to", other), ("from", values[0])]
    return [("from", "2024-01"), ("to", "2024-02"), *((name, v) for v in values)]


@pytest.mark.parametrize("endpoint", [DASHBOARD, CATEGORIES, PROFITABILITY])
def test_the_server_refuses_exactly_what_the_openapi_document_refuses(http, endpoint):
    document = http.get("/openapi.json").json()
    parameters = document["paths"][f"/api/{endpoint}"]["get"]["parameters"]
    month = next(p["schema"] for p in parameters if p["name"] == "from")
    checked = 0
    for parameter in parameters:
        name, schema = parameter["name"], parameter["schema"]
        for values in cases(name, schema):
            response = http.get(f"/api/{endpoint}", request_for(name, values, month))
            error = response.json()["error"] if response.status_code != 200 else None
            refused = error is not None and error["parameter"] == name
            assert response.status_code in (200, 400), (name, values[:2], response.text[:300])
            assert refused != accepts(schema, values), (name, values[:2], len(values), response.text[:300])
            checked += 1
    assert checked > 60


def test_a_cursor_from_meta_next_is_accepted_as_documented(http):
    body = http.get(f"/api/{DASHBOARD}", {"from": "2024-01", "to": "2024-04", "limit": "3"}).json()
    cursor = dict(parse_qsl(urlsplit(body["meta"]["next"]).query))["cursor"]
    document = http.get("/openapi.json").json()
    schema = next(p["schema"] for p in document["paths"][f"/api/{DASHBOARD}"]["get"]["parameters"]
                  if p["name"] == "cursor")
    assert accepts(schema, [cursor])
    assert http.get(body["meta"]["next"]).status_code == 200


def raw_get(app: Any, target: str) -> tuple[int, bytes]:
    """GET ``target`` straight through ASGI: httpx refuses URLs over 64 KB, a client on a socket may not."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
             "headers": [(b"host", b"api.test")], "client": ("127.0.0.1", 1), "server": ("api.test", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_huge_parameter_name_or_value_is_not_echoed_back(http):
    window = "from=2024-01&to=2024-02"
    requests = {"name": f"/api/{DASHBOARD}?{window}&{'x' * 70_000}=1",
                "metric": f"/api/{DASHBOARD}?{window}&metric={'m' * 70_000}",
                "marketplace": f"/api/{PROFITABILITY}?{window}&marketplace={'u' * 70_000}",
                "from": f"/api/{DASHBOARD}?to=2024-02&from={'2' * 70_000}",
                "brand_id": f"/api/{DASHBOARD}?{window}&brand_id={'9' * 70_000}",
                "limit": f"/api/{DASHBOARD}?{window}&limit=1{'0' * 70_000}",
                "path": f"/api/{'y' * 70_000}"}
    for what, target in requests.items():
        status, body = raw_get(http.app, target)
        assert status in (400, 404), (what, status, body[:200])
        assert len(body) < 2_000, (what, len(body))
    error = json.loads(raw_get(http.app, requests["name"])[1])["error"]
    assert error["parameter"] == "x" * 64 + "…" and error["message"].startswith("x" * 64 + "…: unknown parameter")


@pytest.mark.parametrize("path", [f"/api/{DASHBOARD}", "/api/meta", "/api/health", "/metrics", "/docs"])
def test_a_405_says_which_methods_are_allowed(http, path):
    response = http.request("POST", path)
    assert response.status_code == 405
    assert "GET" in [m.strip() for m in response.headers["allow"].split(",")]
    assert response.json()["error"]["code"] == "method_not_allowed"
