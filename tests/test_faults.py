"""Real faults, made to happen: kill -9 at chosen points, lock wait timeouts, killed connections,
permanent errors, and writers of the raw table working through a refresh.

A refresh is stopped where the test wants it without big data: the test holds a lock the refresh
needs next (an exclusive lock on ``products``, a row lock, a reader's lock on a live tier) and
watches the refresh's session wait for it on the server (MariaDB's processlist, PostgreSQL's
``pg_stat_activity``); on SQLite the test holds a read transaction, so the refresh's commit waits
with its journal written. Every outcome is compared with the oracle of the old and of the new raw
data. The tests that need other sessions run on MariaDB and PostgreSQL alike (``server_url``);
what only one engine can do to a refresh is tested on that engine, saying why.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from summarizer import __version__
from summarizer.errors import RefreshFailed

from . import procs
from .clirun import run_cli
from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows
from .setups import load_and_refresh
from .test_lock import tier1_held

Tiers = dict[str, dict[Any, Any]]
# how each server words the errors the tests cause
LOCK_TIMEOUT = {"mysql": "Lock wait timeout exceeded", "postgresql": "canceling statement due to lock timeout"}
KILLED = {"mysql": "Lost connection", "postgresql": "terminating connection due to administrator command"}
NO_COLUMN = {"mysql": "Unknown column", "postgresql": "does not exist"}


def short_lock_waits(url: URL) -> URL:
    """``url`` with every session giving up a lock wait after one second."""
    if url.get_backend_name() == "postgresql":
        return url.update_query_dict({"options": "-c lock_timeout=1000"})
    return url.update_query_dict({"init_command": "SET SESSION lock_wait_timeout = 1, innodb_lock_wait_timeout = 1"})


def says(messages: list[str], wording: dict[str, str], url: URL, *also: str) -> bool:
    """Does one of ``messages`` carry the server's wording of an error, and every one of ``also``?"""
    wanted = wording[url.get_backend_name()]
    return any(wanted in m and all(part in m for part in also) for m in messages)


# --- helpers ---------------------------------------------------------------------------------------
def old_and_new(app: Any, seed: int, months: int = 4) -> tuple[Tiers, Tiers, list[dt.date]]:
    """Refresh the old data, then change two months of the raw table: (old tiers, new tiers, months)."""
    done = load_and_refresh(app, seed=seed, rows=600, months=months)
    data, tables = done.data, done.tables
    old = expected_tiers(data)
    mutate(data, data.months[:2], seed=seed)
    reload_rows(app.dialect.engine, tables, data)
    return old, expected_tiers(data), data.months


def only(tiers: Tiers, month: dt.date) -> Tiers:
    return {tier: {k: v for k, v in rows.items() if k[0] == month} for tier, rows in tiers.items()}


def generation(app: Any, old: Tiers, new: Tiers, month: dt.date | None = None) -> str:
    """'old' or 'new': which complete set the live tiers (or one month of them) hold; fails if neither."""
    live = actual_tiers(app.dialect.engine, app.schema.live().by_name())
    if month is not None:
        live, old, new = only(live, month), only(old, month), only(new, month)
    for name, expected in (("old", old), ("new", new)):
        try:
            assert_tiers_equal(expected, live, exact=app.dialect.EXACT_DECIMAL)
            return name
        except AssertionError:
            pass
    raise AssertionError(f"the live tiers{f' of {month}' if month else ''} are neither the old nor the new data")


def assert_recovers(app: Any, killed: procs.Proc, new: Tiers, **refresh: Any) -> None:
    """The next run takes the lock, succeeds, and records the killed run as interrupted."""
    run = app.refresh(wait=20, **refresh)
    assert run.status == "succeeded"
    assert_tiers_equal(new, actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)
    dead = [r for r in app.runs.latest() if r.pid == killed.pid]
    assert len(dead) == 1 and dead[0].status == "interrupted" and "interrupted" in dead[0].error


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


# --- kill -9 on MariaDB and PostgreSQL -------------------------------------------------------------
@pytest.mark.parametrize("point", ["early", "mid-tier", "before-swap"])
def test_sigkill_during_a_full_refresh(server_url, app_factory, tmp_path, point):
    app = app_factory(server_url)
    old, new, _ = old_and_new(app, seed=51)
    watcher = procs.watcher(server_url)
    try:
        if point == "early":  # it holds the lock and has recorded its run, nothing more
            killed = procs.start(server_url, "refresh", cwd=tmp_path, stalled=True)
            procs.wait_until(lambda: app.runs.holder(), "the run to record itself")
            killed.kill()
        elif point == "mid-tier":  # its tier-1 statement waits for products
            with tier1_held(server_url):
                killed = procs.start(server_url, "refresh", cwd=tmp_path)
                watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)
                killed.kill()
            watcher.wait_until_gone(procs.TIER_WRITE)  # its statement ends on the server once it can run
        else:  # its swap waits for a reader of the live tier
            with watcher.reading(app.schema.live().asin.name):
                killed = procs.start(server_url, "refresh", cwd=tmp_path, refresh_swap_lock_timeout="30")
                watcher.wait_for_session(watcher.SWAP_STATEMENT, watcher.TABLE_LOCK_WAIT)
                killed.kill()
            watcher.wait_until_gone(watcher.SWAP_STATEMENT)
    finally:
        watcher.close()
    found = generation(app, old, new)
    # MariaDB's RENAME is one statement: sent before the kill, it may still complete. PostgreSQL's swap
    # is a transaction of several statements whose COMMIT the dead client never sent.
    assert found == "old" or (point == "before-swap" and server_url.get_backend_name() == "mysql")
    assert_recovers(app, killed, new)


def test_a_dead_runs_rename_is_waited_for_by_the_next_run(mysql_url, app_factory, tmp_path, caplog):
    """kill -9 while the swap waits: the server still holds the dead run's RENAME, queued behind a reader.

    The next run, already waiting for the lock, must not drop and rebuild the shadow tables under that
    RENAME (which would then swap in a half-built tier): its first statements read the live tiers, and
    so queue behind the dead run's RENAME until the reader lets it finish.

    MariaDB only: a PostgreSQL swap is a transaction the dead client never commits, so it cannot
    complete after the kill (``test_sigkill_during_a_full_refresh[before-swap]`` shows it rolled back).
    """
    caplog.set_level(logging.INFO, logger="summarizer")
    app = app_factory(mysql_url)
    old, new, _ = old_and_new(app, seed=50)
    watcher = procs.watcher(mysql_url)
    try:
        with watcher.reading(app.schema.live().asin.name):
            with tier1_held(mysql_url):
                killed = procs.start(mysql_url, "refresh", cwd=tmp_path, refresh_swap_lock_timeout="30")
                watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)
                next_run, outcome = background(lambda: app.refresh(wait=60))
                procs.wait_until(lambda: any("waiting up to" in m for m in messages(caplog)), "the next run to wait")
            watcher.wait_for_session(watcher.SWAP_STATEMENT, watcher.TABLE_LOCK_WAIT)
            killed.kill()
            watcher.wait_for_session("SELECT 1 AS anon_1%LIMIT%", watcher.TABLE_LOCK_WAIT, timeout=10)
        next_run.join(timeout=60)
    finally:
        watcher.close()
    assert "error" not in outcome, outcome
    assert outcome["run"].status == "succeeded"
    assert generation(app, old, new) == "new"
    assert app.runs.latest(2)[1].status == "interrupted"


def test_sigkill_during_an_incremental_month(server_url, app_factory, tmp_path):
    app = app_factory(server_url)
    old, new, months = old_and_new(app, seed=52)
    watcher = procs.watcher(server_url)
    try:
        with tier1_held(server_url):
            killed = procs.start(server_url, "refresh", "--months", "2024-01,2024-02", cwd=tmp_path)
            session = watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)[0]
            watcher.wait_until(lambda: watcher.has_written(session), "the month's transaction to have deleted rows", 5)
            killed.kill()
        watcher.wait_until_gone(procs.TIER_WRITE)
    finally:
        watcher.close()
    for month in months:
        assert generation(app, old, new, month) == "old"  # the dead run's transaction never committed
    assert_recovers(app, killed, new, months=months[:2])


# --- kill -9 on SQLite -----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(), ("--months", "2024-01,2024-02")], ids=["full", "months"])
@pytest.mark.parametrize("point", ["early", "in-a-commit"])
def test_sigkill_on_sqlite(tmp_path, app_factory, args, point):
    url = URL.create("sqlite", database=str(tmp_path / "kill.db"))
    app = app_factory(url)
    old, new, months = old_and_new(app, seed=53)
    killed = procs.start(url, "refresh", *args, cwd=tmp_path, stalled=True)
    procs.wait_until(lambda: app.runs.holder(), "the run to record itself")
    if point == "in-a-commit":  # a reader holds the file: the run's first write transaction cannot commit
        with app.dialect.engine.connect() as reader, reader.begin():
            reader.execute(text("SELECT COUNT(*) FROM financials")).scalar()
            killed.resume()
            procs.wait_until(lambda: Path(f"{url.database}-journal").exists(), "the run to write its journal")
            killed.kill()
    else:
        killed.kill()
    for month in months:
        assert generation(app, old, new, month) == "old"
    assert_recovers(app, killed, new, months=months[:2] if args else ())


# --- transient faults: retried, and the result is right -------------------------------------------
def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog) if "transient error, retry" in m]


def test_a_lock_wait_timeout_on_a_table_is_retried(server_url, app_factory, caplog):
    url = short_lock_waits(server_url)
    app = app_factory(url)
    _, new, _ = old_and_new(app, seed=54)
    with tier1_held(url):  # tier 1 waits 1s for products, times out, and is tried again
        worker, outcome = background(app.refresh)
        procs.wait_until(lambda: _retries(caplog), "a retry to be logged")
    worker.join(timeout=60)
    assert "error" not in outcome, outcome
    assert says(_retries(caplog), LOCK_TIMEOUT, url, "tier1"), _retries(caplog)
    assert_tiers_equal(new, actual_tiers(app.dialect.engine, app.schema.live().by_name()), exact=True)


def test_a_lock_wait_timeout_on_a_row_is_retried(server_url, app_factory, caplog):
    url = short_lock_waits(server_url)
    app = app_factory(url)
    _, new, months = old_and_new(app, seed=55)
    tier1 = app.schema.live().asin.name
    watcher = procs.watcher(url)
    try:
        with watcher.holding_row(tier1, months[0]):
            worker, outcome = background(lambda: app.refresh(months=months[:2]))
            procs.wait_until(lambda: _retries(caplog), "a retry to be logged")
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert outcome["run"].status == "succeeded"
    assert says(_retries(caplog), LOCK_TIMEOUT, url, "month 2024-01"), _retries(caplog)
    assert_tiers_equal(new, actual_tiers(app.dialect.engine, app.schema.live().by_name()), exact=True)


@pytest.mark.parametrize("mode", ["full", "months"])
def test_a_killed_working_connection_is_retried(server_url, app_factory, caplog, mode):
    app = app_factory(server_url)
    _, new, months = old_and_new(app, seed=56)
    watcher = procs.watcher(server_url)
    try:
        with tier1_held(server_url):
            work = (lambda: app.refresh()) if mode == "full" else (lambda: app.refresh(months=months[:2]))
            worker, outcome = background(work)
            victim = watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)[0]
            watcher.kill(victim)  # from another session, mid-statement: KILL <id>, pg_terminate_backend(pid)
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert outcome["run"].status == "succeeded"
    assert says(_retries(caplog), KILLED, server_url), _retries(caplog)
    assert_tiers_equal(new, actual_tiers(app.dialect.engine, app.schema.live().by_name()), exact=True)


def test_a_deadlock_is_retried(postgres_url, app_factory, caplog):
    """A real deadlock between a month's transaction and another session: the refresh retries the month.

    The month's transaction holds its tier-1 rows and waits for the test's lock on a tier-2 row; the
    test then asks for those tier-1 rows. PostgreSQL finds the cycle and aborts the session whose
    ``deadlock_timeout`` runs out first: the refresh's (the test's is raised). PostgreSQL only:
    MariaDB rolls back the transaction that has changed fewer rows, here the test's, so the refresh
    would never see the error.
    """
    app = app_factory(postgres_url)
    old, new, months = old_and_new(app, seed=61)
    live = app.schema.live()
    watcher = procs.watcher(postgres_url)
    try:
        with watcher.holding_row(live.brand.name, months[0]) as other:
            other.execute(text("SET LOCAL deadlock_timeout = '30s'"))
            worker, outcome = background(lambda: app.refresh(months=months[:1]))
            watcher.wait_for_session(f"DELETE FROM {live.brand.name}%", watcher.ROW_LOCK_WAIT)
            other.execute(text(f"SELECT * FROM {live.asin.name} WHERE month = :month FOR UPDATE"),
                          {"month": months[0]}).all()  # waits until the refresh's transaction is aborted
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert "error" not in outcome, outcome["error"]
    assert outcome["run"].status == "succeeded"
    assert any("month 2024-01" in m and "deadlock detected" in m for m in _retries(caplog)), _retries(caplog)
    assert generation(app, old, new, months[0]) == "new" and generation(app, old, new, months[1]) == "old"


def test_a_serialization_failure_is_retried(postgres_url, app_factory, caplog):
    """On a server whose sessions default to SERIALIZABLE, a row the month's transaction deletes is
    updated by a transaction that commits after the month's snapshot: PostgreSQL fails the month with
    40001 ("could not serialize access"), and the month is tried again. PostgreSQL only: InnoDB waits
    for the row and goes on."""
    url = postgres_url.update_query_dict({"options": "-c default_transaction_isolation=serializable"})
    app = app_factory(url)
    old, new, months = old_and_new(app, seed=62)
    tier1 = app.schema.live().asin.name
    watcher = procs.watcher(postgres_url)
    try:
        with watcher.connection() as other:
            other.execute(text("BEGIN"))
            other.execute(text(f"UPDATE {tier1} SET row_count = row_count WHERE month = :month"), {"month": months[0]})
            worker, outcome = background(lambda: app.refresh(months=months[:1]))
            watcher.wait_for_session(f"DELETE FROM {tier1}%", watcher.ROW_LOCK_WAIT)
            other.execute(text("COMMIT"))
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert "error" not in outcome, outcome["error"]
    assert outcome["run"].status == "succeeded"
    assert any("month 2024-01" in m and "could not serialize access" in m for m in _retries(caplog)), _retries(caplog)
    assert generation(app, old, new, months[0]) == "new" and generation(app, old, new, months[1]) == "old"


def test_a_permanent_error_fails_at_once(server_url, app_factory, caplog):
    """A source column dropped in the middle of a run: no retry, the run is recorded failed."""
    app = app_factory(server_url)
    old, new, months = old_and_new(app, seed=57)
    tier1 = app.schema.live().asin.name
    watcher = procs.watcher(server_url)
    try:
        with watcher.holding_row(tier1, months[1]):  # month 2 waits at its DELETE until the column is gone
            worker, outcome = background(lambda: app.refresh(months=months[:2]))
            watcher.wait_for_session("DELETE FROM%", watcher.ROW_LOCK_WAIT)  # month 1 took no lock it waits for
            watcher.conn.execute(text("ALTER TABLE financials DROP COLUMN value"))
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert isinstance(outcome.get("error"), RefreshFailed) and says([str(outcome["error"])], NO_COLUMN, server_url)
    assert _retries(caplog) == []
    run = app.runs.latest(1)[0]
    assert run.status == "failed" and says([run.error], NO_COLUMN, server_url, "value")
    assert generation(app, old, new, months[0]) == "new" and generation(app, old, new, months[1]) == "old"


def background(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``work()`` in a thread; its result lands in ``outcome['run']``, or its exception in ``outcome['error']``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["run"] = work()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc
    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


# --- writers of the raw table are not blocked -------------------------------------------------------
class Writer:
    """Single-row INSERTs into the raw table, autocommit, one after another; each one's latency kept."""

    def __init__(self, url: URL, month: dt.date) -> None:
        self.watcher = procs.watcher(url)
        self.month = month
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._write)

    def _write(self) -> None:
        with self.watcher.connection() as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                                  "VALUES ('W0001', 'US', :month, 'revenue', 1.5)"), {"month": self.month})
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    def __enter__(self) -> Writer:
        self.thread.start()
        procs.wait_until(lambda: self.latencies, "the first insert", timeout=5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.watcher.close()


def test_a_writer_is_not_blocked_by_a_full_refresh(server_url, app_factory):
    app = app_factory(server_url)
    load(app.dialect.engine, random_dataset(seed=58, rows=1000, months=12))
    with app.dialect.engine.begin() as conn:
        for _ in range(7):  # 128,000 raw rows
            conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                              "SELECT asin, marketplace, month, metric, value + 1 FROM financials"))
    app.init()
    with Writer(server_url, dt.date(2024, 3, 1)) as writer:
        before = len(writer.latencies)
        app.refresh()
        during = len(writer.latencies) - before
    assert during >= 3, "the writer hardly ran during the refresh"
    assert max(writer.latencies) < 1.0, f"an insert waited {max(writer.latencies):.2f}s"
    app.refresh()
    assert app.verify().ok


def test_a_writer_is_not_blocked_by_an_open_month_transaction(server_url, app_factory):
    """The month's transaction has read the raw month and is held before it ends: inserts into that month go on.

    On MariaDB under REPEATABLE READ the INSERT ... SELECT would hold shared locks on the raw rows it
    read until the transaction ends, and every insert below would wait for the row lock the test holds.
    """
    app = app_factory(server_url)
    data = random_dataset(seed=59, rows=600, months=3)
    load(app.dialect.engine, data)
    app.init(source_indexes=True)
    app.refresh()
    tier2 = app.schema.live().brand.name
    month = data.months[0]
    watcher = procs.watcher(server_url)
    try:
        with watcher.holding_row(tier2, month):
            worker, outcome = background(lambda: app.refresh(months=[month]))
            watcher.wait_for_session(f"DELETE FROM {tier2}%")  # tier 1 done: the raw month has been read
            with Writer(server_url, month) as writer:
                procs.wait_until(lambda: len(writer.latencies) >= 20, "20 inserts", timeout=15)
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert max(writer.latencies) < 1.0, f"an insert waited {max(writer.latencies):.2f}s"
    assert outcome["run"].status == "succeeded"


# --- run history ------------------------------------------------------------------------------------
def test_status_json_shows_every_kind_of_run(db_url, app_factory, tmp_path):
    app = app_factory(db_url)
    load(app.dialect.engine, random_dataset(seed=60, rows=300, months=3, huge=app.dialect.EXACT_DECIMAL))
    app.init()
    app.refresh()
    assert run_cli(db_url, "refresh", "--months", "2024-02", cwd=tmp_path).returncode == 0
    killed = procs.start(db_url, "refresh", cwd=tmp_path, stalled=True)
    procs.wait_until(lambda: app.runs.holder(), "the run to record itself")
    killed.kill()
    with app.dialect.engine.begin() as conn:  # a permanent error: a raw row uses the all-marketplaces label
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          "VALUES ('A0001', 'ALL', '2024-01-01', 'revenue', 1)"))
    failing = run_cli(db_url, "refresh", "--months", "2024-01", "--wait", "10", cwd=tmp_path)
    assert failing.returncode == 1 and "all_marketplace" in failing.stderr

    result = run_cli(db_url, "status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert [(r["mode"], r["months"], r["status"]) for r in runs] == [
        ("months", "2024-01", "failed"), ("full", None, "interrupted"),
        ("months", "2024-02", "succeeded"), ("full", None, "succeeded")]
    for run in runs:
        assert run["host"] == socket.gethostname() and run["pid"] > 0 and run["version"] == __version__
        assert run["started_at"] and run["finished_at"] and run["duration_seconds"] is not None
    failed, interrupted, months, full = runs
    assert "all_marketplace" in failed["error"]
    assert "interrupted" in interrupted["error"] and interrupted["pid"] == killed.pid
    assert months["error"] is full["error"] is None
    assert set(full["steps"]) >= {"prepare", "tier1", "tier2", "tier3", "indexes", "swap"}
    assert set(months["steps"]) == {"months"} and all(v >= 0 for v in full["steps"].values())
    assert all(isinstance(full["rows"][tier], int) and full["rows"][tier] > 0 for tier in ("asin", "brand", "category"))
