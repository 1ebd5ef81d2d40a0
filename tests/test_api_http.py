"""The HTTP API on real MariaDB (and Redis): numbers, 400s, fuzzing, the cache, health, a real server.

In-process requests go through httpx's ASGI transport; one test starts ``summarizer serve`` as a real
process on a free port and talks to it over a socket.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlalchemy.engine import make_url

from summarizer.serve.http import RESPONSES, ErrorResponse, create_app
from summarizer.serve.read import CATEGORIES, DASHBOARD, HEALTH, META, PARAMS, PROFITABILITY

from .databases import env_for
from .oracle import load, mutate, random_dataset, reload_rows
from .test_read_api import (
    BAD_SYNTAX,
    SETTINGS,
    assert_matches,
    check_every_endpoint,
    check_meta,
    dashboard_found,
    expected_counts,
    expected_dashboard,
)

REDIS_VARIABLE = "SUMMARIZER_TEST_REDIS_URL"
ENDPOINTS = (DASHBOARD, CATEGORIES, PROFITABILITY, META, HEALTH)
BAD_DATA = [  # bad only given the data: the summaries hold no such metric or marketplace
    (DASHBOARD, "from=2024-01&to=2024-02&metric=revnue", "metric"),
    (DASHBOARD, "from=2024-01&to=2024-02&metric=revenue&metric=Revenue", "metric"),
    (CATEGORIES, "from=2024-01&to=2024-02&metric=value", "metric"),
    (DASHBOARD, "from=2024-01&to=2024-02&marketplace=XX", "marketplace"),
    (PROFITABILITY, "from=2024-01&to=2024-02&marketplace=us", "marketplace"),
]


class Http:
    """Requests to an ASGI app in-process (httpx's ASGI transport), one event loop per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def get(self, path: str, params: Any = None, headers: Any = None) -> httpx.Response:
        return self.request("GET", path, params, headers)

    def request(self, method: str, path: str, params: Any = None, headers: Any = None) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
                return await client.request(method, path, params=params, headers=headers)
        return asyncio.run(send())

    def data(self, endpoint: str, params: Any = None) -> Any:
        response = self.get(f"/api/{endpoint}", params)
        assert response.status_code == 200, response.text
        return check_shape(endpoint, response)["data"]


def check_shape(endpoint: str, response: httpx.Response) -> dict[str, Any]:
    """Every body is the endpoint's success shape or the one error shape, and says what it is."""
    if response.status_code == 200 and response.headers["content-type"].startswith("text/csv"):
        return {"csv": csv_rows(response)}
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    if response.status_code == 200:
        RESPONSES[endpoint].model_validate(body)
    else:
        ErrorResponse.model_validate(body)
        assert body["error"]["status"] == response.status_code
    return body


@dataclass
class Served:
    app: Any
    data: Any
    tables: Any
    http: Http


@pytest.fixture
def served(mysql_url, app_factory):
    """Makes a MariaDB database of random data, refreshed, with the API over it; ``settings`` as in app_factory."""
    def make(**settings: str) -> Served:
        app = app_factory(mysql_url, **{**SETTINGS, **settings})
        data = random_dataset(seed=41)
        tables = load(app.dialect.engine, data)
        app.init()
        app.refresh()
        return Served(app, data, tables, Http(create_app(app)))
    return make


def test_every_endpoint_equals_independent_computation(served):
    s = served()
    app, data, http = s.app, s.data, s.http
    check_every_endpoint(http.data, data, exact=True)
    check_meta(http.data(META), data, expected_counts(data))
    health = http.data(HEALTH)
    assert health["status"] == "ok" and health["last_success"]["id"] == app.runs.last_success().id


def test_bad_input_is_a_400_naming_the_parameter(served):
    http = served().http
    for endpoint, query_string, parameter in BAD_SYNTAX + BAD_DATA:
        response = http.get(f"/api/{endpoint}?{query_string}")
        assert response.status_code == 400, (endpoint, query_string, response.text)
        error = check_shape(endpoint, response)["error"]
        assert (error["code"], error["parameter"]) == ("bad_parameter", parameter), (query_string, error)
        assert error["message"].startswith(f"{parameter}: ") and error["allowed"], error
    error = http.get(f"/api/{DASHBOARD}?from=2024-01&to=2024-02&metric=revnue").json()["error"]
    assert "revenue" in error["allowed"] and "revnue" in error["message"]


def csv_rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.text)))


def as_text(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [["" if v is None else str(v) for v in row.values()] for row in rows]


def test_csv_equals_json_for_the_same_query(served):
    http = served().http
    queries = [(DASHBOARD, {"from": "2024-01", "to": "2024-04", "limit": "40", "order": "value_desc"}),
               (CATEGORIES, {"from": "2024-02", "to": "2024-03", "group": "total"}),
               (PROFITABILITY, {"from": "2024-01", "to": "2024-04", "order": "name", "limit": "25"})]
    for endpoint, params in queries:
        as_json = http.get(f"/api/{endpoint}", params).json()
        rows = as_json["data"]
        as_csv = csv_rows(http.get(f"/api/{endpoint}", {**params, "format": "csv"}))
        assert as_csv[0] == list(rows[0]) and as_csv[1:] == as_text(rows), endpoint
        assert any(v == "" for row in as_csv for v in row) == any(None in r.values() for r in rows)
        by_accept = http.get(f"/api/{endpoint}", params, headers={"Accept": "text/csv, application/json;q=0.5"})
        assert csv_rows(by_accept) == as_csv and by_accept.headers["vary"] == "Accept"
        again = http.get(f"/api/{endpoint}", {**params, "format": "csv"})
        assert again.headers["x-cache"] == "hit" and csv_rows(again) == as_csv
        if as_json["meta"]["next"]:  # the next page: a Link header, also on a cache hit
            link = again.headers["link"]
            assert link.startswith("</api/") and link.endswith('>; rel="next"') and "format=csv" in link
            second = csv_rows(http.get(link[1:-len('>; rel="next"')]))
            assert second[1:] == as_text(http.get(as_json["meta"]["next"]).json()["data"])
    assert http.get(f"/api/{DASHBOARD}", queries[0][1], headers={"Accept": "text/html,*/*;q=0.8"}).json()["data"]
    assert http.get(f"/api/{DASHBOARD}?from=2024-01&to=2024-02&format=xml").json()["error"]["parameter"] == "format"


NAMES = st.sampled_from(sorted({p.name for params in PARAMS.values() for p in params} | {"x", "", "from[]"}))
VALUES = st.one_of(st.sampled_from(["2024-01", "9999-12", "0001-01", "ALL", "US", "revenue", "0", "-1",
                                    "9223372036854775808", "brand", "1e3", " ", "NaN"]),
                   st.text(max_size=12), st.integers(-2**70, 2**70).map(str))
GOOD = {"from": ["2024-01", "2024-02", "2023-11"], "to": ["2024-03", "2024-04", "2024-12"],
        "marketplace": ["ALL", "US", "JP"], "metric": ["revenue", "units", "cogs", "refunds"],
        "brand_id": ["0", "1", "5", "999", "9223372036854775807"], "category_id": ["0", "100", "101", "7"],
        "by": ["brand", "category"], "order": ["month", "value_desc", "value_asc", "name", "size"],
        "group": ["month", "total", "year"], "limit": ["1", "5", "1000", "0", "10001"], "offset": ["0", "3", "-1"],
        "cursor": ["WzEsMSwiYSJd", "abc", "!"], "format": ["json", "csv", "xml"]}


def pairs_for(endpoint: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Mostly plausible parameters of the endpoint (so many requests reach the database), some junk."""
    names = [p.name for p in PARAMS[endpoint] if p.name not in ("from", "to")]
    junk = st.tuples(NAMES, VALUES)
    if not names:
        return st.lists(junk, max_size=2)
    plausible = st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), st.sampled_from(GOOD[n])))
    months = st.tuples(st.sampled_from(GOOD["from"]), st.sampled_from(GOOD["to"]))
    window = months.map(lambda m: [("from", m[0]), ("to", m[1])])
    base: st.SearchStrategy[list[tuple[str, str]]] = st.one_of(st.just([]), window, window, window)
    rest = st.lists(st.one_of(plausible, plausible, plausible, plausible, junk), max_size=5)
    return st.tuples(base, rest).map(lambda t: t[0] + t[1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_query_strings_never_get_a_500(fuzz_http, data):
    endpoint = data.draw(st.sampled_from(ENDPOINTS))
    pairs = data.draw(pairs_for(endpoint))
    response = fuzz_http.get(f"/api/{endpoint}?{urlencode(pairs)}")
    assert response.status_code in (200, 400), response.text
    check_shape(endpoint, response)
    fuzz_http.statuses.append(response.status_code)


@pytest.fixture
def fuzz_http(served):
    http = served().http
    http.statuses = []
    yield http
    assert 200 in http.statuses and 400 in http.statuses  # both sides were reached


@pytest.fixture
def redis_url() -> str:
    """A real Redis: SUMMARIZER_TEST_REDIS_URL (CI sets it), else the local default when it answers."""
    url = os.environ.get(REDIS_VARIABLE)
    if url:
        return url
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"{REDIS_VARIABLE} is not set and no Redis answers at {url}")
    return url


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_cache_serves_repeats_until_a_refresh_changes_the_data(served, backend, request):
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    settings = {"api_redis_url": redis_url} if backend == "redis" else {}
    s = served(**settings)
    app, data, http = s.app, s.data, s.http
    reader = http.app.state.reader
    assert reader.cache.backend == backend
    params = {"from": "2024-01", "to": "2024-04", "marketplace": "UK"}
    first = http.get(f"/api/{DASHBOARD}", params)
    again = http.get(f"/api/{DASHBOARD}", params)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.content == first.content and reader.cache.stats.hits == 1
    reordered = http.get(f"/api/{DASHBOARD}", [("marketplace", "UK"), ("to", "2024-04"), ("from", "2024-01")])
    assert reordered.headers["x-cache"] == "hit"  # normalised parameters, one entry

    month = data.months[1]
    mutate(data, [month])
    reload_rows(app.dialect.engine, s.tables, data)
    assert http.get(f"/api/{DASHBOARD}", params).headers["x-cache"] == "hit"  # raw data changed, no refresh yet
    app.refresh(months=[month])  # incremental: the data version moves too
    after = http.get(f"/api/{DASHBOARD}", params)
    assert after.headers["x-cache"] == "miss"
    assert int(after.headers["x-data-version"]) > int(first.headers["x-data-version"])
    want = expected_dashboard(data, data.months[0], data.months[3], "UK")
    assert_matches(dashboard_found(check_shape(DASHBOARD, after)["data"]), want, True, "after refresh")
    if backend == "redis":
        _forget_redis_keys(redis_url, reader.cache.prefix)


def _forget_redis_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*"))
    assert keys, "nothing was stored in Redis"
    client.delete(*keys)
    client.close()


def test_redis_down_answers_correctly_uncached_and_logs_once(served, caplog):
    s = served(api_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    data, http = s.data, s.http
    caplog.set_level(logging.WARNING, logger="summarizer.serve.cache")
    params = {"from": "2024-01", "to": "2024-03"}
    for _ in range(4):
        response = http.get(f"/api/{DASHBOARD}", params)
        assert response.status_code == 200 and response.headers["x-cache"] == "bypass"
        want = expected_dashboard(data, data.months[0], data.months[2])
        assert_matches(dashboard_found(response.json()["data"]), want, True, "Redis down")
    assert http.app.state.reader.cache.stats.bypasses == 4
    warnings = [r for r in caplog.records if "not answering" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_health_503_before_the_first_refresh_and_when_stale(mysql_url, app_factory):
    app = app_factory(mysql_url, **SETTINGS)
    load(app.dialect.engine, random_dataset(seed=2, rows=100))
    http = Http(create_app(app))
    assert http.get("/api/health").json()["error"]["code"] == "not_initialised"
    app.init()
    response = http.get("/api/health")
    assert response.status_code == 503
    assert check_shape(HEALTH, response)["error"]["code"] == "never_refreshed"
    run = app.refresh()
    response = http.get("/api/health")
    assert response.status_code == 200, response.text
    assert check_shape(HEALTH, response)["data"]["last_success"]["id"] == run.id
    runs = app.schema.runs()
    with app.dialect.engine.begin() as conn:  # the last success finished 27 hours ago; max_age is 26h
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            finished_at=run.finished_at - dt.timedelta(hours=27)))
    response = http.get("/api/health")
    assert response.status_code == 503
    error = check_shape(HEALTH, response)["error"]
    assert error["code"] == "stale" and "max_age" in error["message"]
    assert error["detail"]["age_seconds"] > 26 * 3600


def test_database_down_is_a_503_with_a_clear_body(app_factory):
    url = make_url(f"mysql+pymysql://root@127.0.0.1:{free_port()}/nothing")
    http = Http(create_app(app_factory(url)))
    for path in (f"/api/{DASHBOARD}?from=2024-01&to=2024-02", "/api/health", "/api/meta"):
        response = http.get(path)
        assert response.status_code == 503, response.text
        error = check_shape(HEALTH, response)["error"]
        assert error["code"] == "database_unavailable" and "connect" in error["message"]
    assert http.get(f"/api/{DASHBOARD}?from=2024-13&to=2024-02").status_code == 400  # bad input stays a 400


def test_openapi_describes_every_endpoint_and_its_shapes(app_factory, tmp_path):
    http = Http(create_app(app_factory(make_url(f"sqlite:///{tmp_path / 'x.db'}"))))
    document = http.get("/openapi.json").json()
    assert "string" in document["info"]["description"]  # how numbers travel
    for endpoint in ENDPOINTS:
        operation = document["paths"][f"/api/{endpoint}"]["get"]
        assert {"200", "400", "503"} <= set(operation["responses"])
        assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
        assert [p["name"] for p in operation.get("parameters", [])] == [p.name for p in PARAMS[endpoint]]
    missing = http.get("/api/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert http.get("/api/meta").json()["error"]["code"] == "not_initialised"  # no init yet: a 503, not a 500


def test_create_app_takes_a_config_too(app_factory, tmp_path):
    app = app_factory(make_url(f"sqlite:///{tmp_path / 'y.db'}"))
    app.init()
    response = Http(create_app(app.config)).get("/api/health")
    assert response.status_code == 503 and response.json()["error"]["code"] == "never_refreshed"


# --- a real server ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_over_http_as_a_real_process(mysql_url, app_factory, tmp_path: Path):
    app = app_factory(mysql_url, **SETTINGS)
    data = random_dataset(seed=43)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    port = free_port()
    log = (tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log").open("w")
    command = [sys.executable, "-m", "summarizer", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env_for(mysql_url, **SETTINGS), stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, server)
        params = {"from": "2024-01", "to": "2024-04", "marketplace": "JP"}
        response = httpx.get(f"{base}/api/{DASHBOARD}", params=params)
        assert response.status_code == 200
        want = expected_dashboard(data, data.months[0], data.months[3], "JP")
        assert_matches(dashboard_found(check_shape(DASHBOARD, response)["data"]), want, True, "served")
        again = httpx.get(f"{base}/api/{DASHBOARD}", params=params)
        assert again.headers["x-cache"] == "hit", (
            f"versions {response.headers['x-data-version']} then {again.headers['x-data-version']}; "
            f"the server's log: {log_text(log)[-1500:]}")
        assert set(server_timing(response)) == {"queue", "db", "app", "total"}
        assert httpx.get(f"{base}/api/health").status_code == 200
        assert httpx.get(f"{base}/api/{DASHBOARD}?from=x&to=2024-01").json()["error"]["parameter"] == "from"
        page = httpx.get(f"{base}/api/{DASHBOARD}", params={**params, "limit": "5", "format": "csv"})
        assert page.headers["content-type"].startswith("text/csv") and len(page.text.splitlines()) == 6
        assert httpx.get(f"{base}{page.headers['link'][1:].split('>')[0]}").status_code == 200
        assert httpx.get(f"{base}/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert "summarizer_http_requests_total" in httpx.get(f"{base}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def server_timing(response: httpx.Response) -> dict[str, float]:
    """The ``Server-Timing`` header's figures, milliseconds by name."""
    parts = (part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    return {name: float(ms) for name, ms in parts}


def test_server_timing_splits_the_database_from_the_rest(served):
    s = served()
    params = {"from": "2024-01", "to": "2024-04", "brand_id": "1"}
    miss, hit = (s.http.get(f"/api/{DASHBOARD}", params) for _ in range(2))
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    for response in (miss, hit):
        found = server_timing(response)
        assert set(found) == {"queue", "db", "app", "total"}
        assert 0 < found["db"] <= found["app"] <= found["total"] and found["queue"] + found["app"] <= found["total"]
    assert set(server_timing(s.http.get("/api/health"))) == {"total"}


def log_text(log: Any) -> str:
    """What the server process has written to its log so far."""
    log.flush()
    return Path(log.name).read_text()


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "summarizer serve exited early"
        try:
            httpx.get(f"{base}/api/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"summarizer serve did not answer within {timeout}s")


# --- /metrics ---------------------------------------------------------------------------------------

def scrape(http: Http) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by prometheus_client: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_count_requests_by_route_and_status_and_report_freshness(served):
    s = served()
    http = s.http
    window = {"from": "2024-01", "to": "2024-02"}
    assert http.get(f"/api/{DASHBOARD}", window).headers["x-cache"] == "miss"
    assert http.get(f"/api/{DASHBOARD}", window).headers["x-cache"] == "hit"
    assert http.get(f"/api/{DASHBOARD}", {**window, "limit": "0"}).status_code == 400
    assert http.get("/api/no-such-thing/7").status_code == 404
    samples = scrape(http)

    def requests(endpoint: str, status: str) -> float:
        labels = (("endpoint", endpoint), ("method", "GET"), ("status", status))
        return samples.get(("summarizer_http_requests_total", labels), 0)
    assert (requests(f"/api/{DASHBOARD}", "200"), requests(f"/api/{DASHBOARD}", "400")) == (2, 1)
    assert requests("unmatched", "404") == 1
    assert not any("no-such-thing" in value for _name, labels in samples for _k, value in labels)  # no raw paths
    count = ("summarizer_http_request_duration_seconds_count", (("endpoint", f"/api/{DASHBOARD}"),))
    assert samples[count] == 3
    assert samples[("summarizer_api_cache_hits_total", (("backend", "memory"),))] == 1
    assert samples[("summarizer_api_cache_misses_total", (("backend", "memory"),))] >= 1
    assert samples[("summarizer_api_database_up", ())] == 1
    assert samples[("summarizer_api_data_version", ())] == http.app.state.reader.version() > 0
    assert 0 <= samples[("summarizer_api_last_success_age_seconds", ())] < 600
    finished = s.app.runs.last_success().finished_at.replace(tzinfo=dt.UTC).timestamp()
    assert abs(samples[("summarizer_api_last_success_timestamp_seconds", ())] - finished) < 5
    assert scrape(http)[("summarizer_http_requests_total", (("endpoint", "/metrics"), ("method", "GET"),
                                                            ("status", "200")))] == 1


def test_metrics_still_answer_with_the_database_down(app_factory):
    url = make_url(f"mysql+pymysql://root@127.0.0.1:{free_port()}/nothing")
    http = Http(create_app(app_factory(url)))
    assert http.get("/api/meta").status_code == 503
    samples = scrape(http)
    assert samples[("summarizer_api_database_up", ())] == 0
    assert ("summarizer_api_data_version", ()) not in samples
    labels = (("endpoint", "/api/meta"), ("method", "GET"), ("status", "503"))
    assert samples[("summarizer_http_requests_total", labels)] == 1


# --- /docs ------------------------------------------------------------------------------------------

def test_docs_use_only_assets_served_by_the_app(app_factory, tmp_path):
    import re
    http = Http(create_app(app_factory(make_url(f"sqlite:///{tmp_path / 'd.db'}"))))
    page = http.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url\s*:\s*["']([^"']+)["']""", page.text)  # the OpenAPI document Swagger UI loads
    assert len(urls) >= 4, urls
    assert "validatorUrl" in page.text and "null" in page.text.split("validatorUrl", 1)[1][:20]
    assert not re.search(r"https?://|//[a-z]", page.text.replace("http://www.w3.org", "")), "a URL on another host"
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        response = http.get(url)
        assert response.status_code == 200 and response.content, url
    types = {url.rsplit(".", 1)[-1]: http.get(url).headers["content-type"] for url in urls}
    assert types["js"].startswith(("text/javascript", "application/javascript")) and types["css"].startswith("text/css")
    assert http.get("/docs/assets/LICENSE").status_code == 200
    assert http.get("/redoc").status_code == 404  # FastAPI's CDN-based ReDoc page is off
