"""The data version the read API keys its cache by: never stale, whatever point a refresh is killed at.

Each test warms the API's cache, changes the raw table, kills a real ``summarizer refresh`` process
with ``kill -9`` after it has changed the live tiers but before it could record its end, and then asks
the API (the real app, in-process) again: the answer must be what the tiers hold now, not the cached
one. The refresh is stopped where the test wants it by a lock the test holds (a row of month 2 in
tier 1 for an incremental run; the run's own row in the run history for a full refresh, whose end is
recorded only after its swap), seen on the server (MariaDB's processlist, PostgreSQL's
``pg_stat_activity``). SQLite has no second session to hold a row, so a trigger keeps its second
month's transaction busy instead.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import URL

from summarizer.serve.http import create_app
from summarizer.serve.read import DASHBOARD, Reader

from . import procs
from .oracle import load, random_dataset
from .test_api_http import Http
from .test_faults import generation, old_and_new

QUERY = {"from": "2024-01", "to": "2024-04"}


def tier_dashboard(app: Any, months: list[dt.date]) -> dict[tuple[str, int, str], tuple[Decimal, int]]:
    """What the live brand tier holds for the dashboard's question, read straight from the table."""
    t = app.schema.live().brand
    query = select(t.c.month, t.c.brand_id, t.c.metric, t.c.value, t.c.row_count).where(
        t.c.marketplace == app.schema.all_marketplace, t.c.month.in_(months))
    with app.dialect.engine.connect() as conn:
        return {(f"{r.month:%Y-%m}" if isinstance(r.month, dt.date) else str(r.month)[:7], int(r.brand_id), r.metric):
                (Decimal(str(r.value)), int(r.row_count)) for r in conn.execute(query)}


def answered(rows: list[dict[str, Any]]) -> dict[tuple[str, int, str], tuple[Decimal, int]]:
    return {(r["month"], r["brand_id"], r["metric"]): (Decimal(r["value"]), r["row_count"]) for r in rows}


def warm(http: Http) -> dict[tuple[str, int, str], tuple[Decimal, int]]:
    """Ask twice: the second answer comes from the cache."""
    first = http.get(f"/api/{DASHBOARD}", QUERY)
    again = http.get(f"/api/{DASHBOARD}", QUERY)
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers["X-Cache"] == "hit"
    return answered(again.json()["data"])


def assert_answer_is_the_tier(http: Http, app: Any, months: list[dt.date], cached: dict[Any, Any]) -> None:
    now = tier_dashboard(app, months)
    assert now != cached, "the killed run changed nothing: the test would prove nothing"
    response = http.get(f"/api/{DASHBOARD}", QUERY)
    assert response.status_code == 200, response.text
    assert answered(response.json()["data"]) == now, f"stale answer (X-Cache: {response.headers['X-Cache']})"
    assert response.headers["X-Cache"] == "miss"
    again = http.get(f"/api/{DASHBOARD}", QUERY)  # and the fresh answer is what the cache keeps from now on
    assert again.headers["X-Cache"] == "hit" and answered(again.json()["data"]) == now


def test_an_incremental_run_killed_after_its_first_month(server_url, app_factory, tmp_path):
    """Month 1 committed, month 2 waiting for a row lock held by the test, then kill -9: the run never
    finishes, and the API still answers with month 1's new numbers."""
    app = app_factory(server_url)
    old, new, months = old_and_new(app, seed=81)
    http = Http(create_app(app))
    cached = warm(http)
    watcher = procs.watcher(server_url)
    tier1 = app.schema.live().asin.name
    try:
        with watcher.holding_row(tier1, months[1]):
            killed = procs.start(server_url, "refresh", "--months", "2024-01..2024-02", cwd=tmp_path)
            watcher.wait_for_session(f"DELETE FROM {tier1}%", watcher.ROW_LOCK_WAIT)  # month 2, month 1 committed
            killed.kill()
        watcher.wait_until_gone(f"DELETE FROM {tier1}%")
    finally:
        watcher.close()
    assert generation(app, old, new, months[0]) == "new" and generation(app, old, new, months[1]) == "old"
    assert app.runs.holder() is not None and app.runs.holder().pid == killed.pid  # never recorded its end
    assert_answer_is_the_tier(http, app, months, cached)


def test_a_full_refresh_killed_right_after_its_swap(server_url, app_factory, tmp_path):
    """The swap is done and the run is about to record its end, which waits for the test's lock on the
    run's row: kill -9 there. On MariaDB the swap is a RENAME that committed on its own."""
    app = app_factory(server_url)
    old, new, months = old_and_new(app, seed=82)
    http = Http(create_app(app))
    cached = warm(http)
    runs = app.schema.runs().name
    watcher = procs.watcher(server_url)
    try:
        killed = procs.start(server_url, "refresh", cwd=tmp_path, stalled=True)
        run = procs.wait_until(lambda: app.runs.holder(), "the run to record itself")
        with watcher.connection() as holder:
            holder.execute(text("BEGIN"))
            holder.execute(text(f"SELECT * FROM {runs} WHERE id = :id FOR UPDATE"), {"id": run.id}).all()
            killed.resume()
            watcher.wait_for_session(f"UPDATE {runs}%", watcher.ROW_LOCK_WAIT)
            killed.kill()
            holder.execute(text("ROLLBACK"))
    finally:
        watcher.close()
    assert generation(app, old, new) == "new"
    assert app.runs.holder() is not None and app.runs.holder().pid == killed.pid  # never recorded its end
    assert_answer_is_the_tier(http, app, months, cached)


def test_an_incremental_run_killed_after_its_first_month_on_sqlite(tmp_path, app_factory):
    """SQLite: a trigger on tier 1 keeps month 2's transaction computing (a recursive count) while the
    test kills the process; month 1 has committed by then (its progress line is written after the commit)."""
    url = URL.create("sqlite", database=str(tmp_path / "version.db"))
    app = app_factory(url)
    old, new, months = old_and_new(app, seed=83)
    http = Http(create_app(app))
    cached = warm(http)
    tier1 = app.schema.live().asin.name
    with app.dialect.engine.begin() as conn:
        conn.execute(text(
            f"CREATE TRIGGER busy BEFORE DELETE ON {tier1} WHEN OLD.month = '{months[1]:%Y-%m-%d}' BEGIN "
            "SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < 1000000000) SELECT i FROM n); END"))
    killed = procs.start(url, "refresh", "--months", "2024-01..2024-02", cwd=tmp_path)
    killed.wait_for_line(r"2024-01 done \(1/2\)")
    killed.kill()
    with app.dialect.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER busy"))
    assert generation(app, old, new, months[0]) == "new" and generation(app, old, new, months[1]) == "old"
    assert_answer_is_the_tier(http, app, months, cached)


def test_a_deleted_version_row_is_written_again_by_the_next_refresh(db_url, app_factory, caplog):
    app = app_factory(db_url)
    data = random_dataset(seed=84, rows=100, months=2, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    reader = Reader(app)
    first = reader.version()
    with app.dialect.engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {app.schema.data_version().name}"))
    assert reader.version() == 0
    app.refresh(months=data.months[:1])
    assert reader.version() > first
    assert any("data version row" in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)
