"""The operations page's read endpoints, ``/api/runs`` and ``/api/unassigned``, on every engine.

Numbers are checked against the run history as the refreshes recorded it and against the oracle's
tiers (tests/oracle.py), computed without summarizer; bad parameters are 400s naming the parameter.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from summarizer.errors import RefreshFailed
from summarizer.serve.http import create_app
from summarizer.serve.ops import CHART_STEPS, MAX_RUNS, parse_limit
from summarizer.serve.read import BadParameter

from .oracle import expected_tiers, load, random_dataset
from .test_api_contract import raw_get
from .test_api_http import Http

SETTINGS = {"api_revenue_metrics": "revenue", "api_cost_metrics": "cogs,refunds"}


@pytest.fixture
def ops(db_url, app_factory):
    """Random data, one good full refresh, one failed one (a raw row uses the reserved label ALL), then
    an incremental one: three runs, the middle one failed."""
    app = app_factory(db_url, **SETTINGS)
    data = random_dataset(seed=5)
    tables = load(app.dialect.engine, data)
    app.init()
    app.refresh()
    bad = {**data.rows[0], "marketplace": "ALL", "value": float(data.rows[0]["value"])}
    with app.dialect.engine.begin() as conn:
        conn.execute(insert(tables["financials"]), [bad])
    with pytest.raises(RefreshFailed):
        app.refresh()
    with app.dialect.engine.begin() as conn:
        conn.execute(tables["financials"].delete().where(tables["financials"].c.marketplace == "ALL"))
    app.refresh(months=[data.months[0]])
    return app, data, Http(create_app(app))


def test_runs_are_the_newest_first_with_their_steps_and_status(ops):
    app, data, http = ops
    body = http.get("/api/runs", {"limit": "2"}).json()
    runs = body["data"]
    assert body["meta"]["params"] == {"limit": 2} and body["meta"]["steps"] == list(CHART_STEPS)
    recorded = app.runs.latest(3)
    assert [r["id"] for r in runs] == [recorded[0].id, recorded[1].id]
    assert [r["status"] for r in runs] == ["succeeded", "failed"] and [r["mode"] for r in runs] == ["months", "full"]
    assert runs[0]["months"] == f"{data.months[0]:%Y-%m}" and "ALL" in runs[1]["error"]
    full = http.get("/api/runs").json()["data"][-1]
    assert full["status"] == "succeeded" and full["steps"] == {k: round(v, 3) for k, v in recorded[2].steps.items()}
    charted = sum(full["steps"].get(step, 0.0) for step in CHART_STEPS)
    assert {"tier2", "tier3", "indexes", "swap"} <= set(full["steps"])
    assert full["other_seconds"] == pytest.approx(full["duration_seconds"] - charted, abs=0.002)
    assert full["rows"] == {tier: n for tier, n in recorded[2].rows.items()}
    assert http.get("/api/runs").headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("query", "parameter"), [
    ("limit=0", "limit"), (f"limit={MAX_RUNS + 1}", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
    ("limit=-1", "limit"), ("limit=1&limit=2", "limit"), ("offset=3", "offset"),
    ("limit=1" + "0" * 70_000, "limit")])  # more digits than int() takes: a 400 too, not a 500
def test_runs_limit_is_checked(query, parameter):
    items = [tuple(p.split("=", 1)) for p in query.split("&")]
    with pytest.raises(BadParameter) as caught:
        parse_limit(items)
    assert caught.value.parameter == parameter


def test_bad_parameters_are_400s_naming_them(ops):
    _app, _data, http = ops
    for path, parameter in [("/api/runs?limit=0", "limit"), ("/api/runs?limit=x", "limit"),
                            ("/api/runs?since=1", "since"), ("/api/unassigned?tier=asin", "tier")]:
        response = http.get(path)
        assert response.status_code == 400, path
        error = response.json()["error"]
        assert (error["code"], error["parameter"]) == ("bad_parameter", parameter) and error["allowed"], error


def expected_unassigned(data: Any) -> dict[str, dict[str, int]]:
    tiers = expected_tiers(data)
    # where the id is (a value position, or None: the key's second part) and the row_count's value position
    positions = {"asin": (0, 3), "brand": (None, 2), "category": (None, 1)}
    found = {}
    for tier, (id_at, count_at) in positions.items():
        rows = tiers[tier]
        if tier == "brand":
            rows = {k: v for k, v in rows.items() if k[2] == "ALL"}
        unassigned = {k: v for k, v in rows.items() if (k[1] if id_at is None else v[id_at]) == 0}
        found[tier] = {"rows": len(rows), "unassigned_rows": len(unassigned),
                       "raw_rows": sum(v[count_at] for v in rows.values()),
                       "unassigned_raw_rows": sum(v[count_at] for v in unassigned.values())}
    return found


def test_unassigned_share_per_tier_equals_the_oracle(ops):
    _app, data, http = ops
    response = http.get("/api/unassigned")
    assert response.status_code == 200 and response.headers["x-cache"] in ("miss", "hit")
    body = response.json()
    want = expected_unassigned(data)
    found = {r["tier"]: r for r in body["data"]}
    assert set(found) == {"asin", "brand", "category"} and body["meta"]["unassigned_id"] == 0
    for tier, figures in want.items():
        assert {k: found[tier][k] for k in figures} == figures, tier
        assert figures["unassigned_raw_rows"] > 0  # the data has unassigned rows: the share is not trivially 0
        share = round(Decimal(figures["unassigned_raw_rows"]) / figures["raw_rows"], 6)
        assert Decimal(str(found[tier]["share"])) == share, tier
    assert http.get("/api/unassigned").headers["x-cache"] == "hit"


def test_huge_parameters_are_not_echoed_back_and_a_405_says_get(app_factory, tmp_path):
    app = app_factory(make_url(f"sqlite:///{tmp_path / 'x.db'}"))
    app.init()
    api = create_app(app)
    for target in ["/api/runs?" + "x" * 70_000 + "=1", "/api/runs?limit=1" + "0" * 70_000,
                   "/api/unassigned?" + "y" * 70_000 + "=1"]:
        status, body = raw_get(api, target)
        assert status == 400 and len(body) < 2_000, (target[:30], status, body[:200])
    response = Http(api).request("POST", "/api/runs")
    assert response.status_code == 405 and "GET" in response.headers["allow"]
