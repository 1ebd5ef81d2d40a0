"""A database restart in the middle of a refresh, on a MariaDB and a PostgreSQL of the test's own.

The shared test servers must stay up, so each engine gets a server of its own here
(:mod:`tests.servers`), which the tests stop and start again. A refresh is held at its tier-1
statement without big data: the test locks ``products`` (as tests/test_faults.py does), waits for the
refresh's session to queue behind that lock, and then restarts the server (MariaDB: SIGTERM to
``mariadbd``; PostgreSQL: ``pg_ctl stop -m fast``), which ends the test's lock, the refresh's
statement and the run lock's session alike. The refresh must reconnect, take the run lock again,
repeat the step and finish with the tiers of the oracle; a restart longer than its retry budget must
end in a failure that is recorded once the server is back, with the live tiers as they were.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from summarizer import Summarizer
from summarizer.lock import lock_name

from . import procs, servers
from .databases import make_app
from .oracle import actual_tiers, assert_tiers_equal
from .test_faults import old_and_new

pytestmark = pytest.mark.slow

DOWN_SECONDS = 5.0
QUICK_RETRIES = {"refresh_retry_max_wait": "1"}  # back within a second of the server
LOCK_PRODUCTS = {"mysql": ("LOCK TABLES products WRITE",),
                 "postgresql": ("BEGIN", "LOCK TABLE products IN ACCESS EXCLUSIVE MODE")}
UNLOCK_PRODUCTS = {"mysql": "UNLOCK TABLES", "postgresql": "COMMIT"}


@pytest.fixture(scope="module", params=["mysql", "postgres"])
def own_server(request: pytest.FixtureRequest) -> Iterator[servers.Server]:
    """A server of this module's own for each engine, stopped by its PID afterwards."""
    reason = servers.missing(request.param)
    if reason:
        pytest.skip(reason)
    with (servers.mariadb() if request.param == "mysql" else servers.postgres()) as server:
        yield server


@pytest.fixture
def database(own_server: servers.Server) -> URL:
    """A fresh database on the test's own server (dropped with the server's data directory)."""
    name = f"summarizer_r_{uuid.uuid4().hex[:10]}"
    admin = create_engine(own_server.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return own_server.url.set(database=name)


@pytest.fixture
def app(database: URL, tmp_path: Path) -> Iterator[Summarizer]:
    made = make_app(database, tmp_path)
    yield made
    made.close()


@contextlib.contextmanager
def products_locked(url: URL) -> Iterator[procs.Watcher]:
    """Every refresh statement that reads ``products`` waits until the block exits (or the server goes)."""
    watcher = procs.watcher(url)
    backend = url.get_backend_name()
    holder = watcher.connection()  # not the watcher's own: PostgreSQL shows a transaction one view of its sessions
    for statement in LOCK_PRODUCTS[backend]:
        holder.execute(text(statement))
    try:
        yield watcher
    finally:
        with contextlib.suppress(Exception):  # after a restart the session is gone, and the lock with it
            holder.execute(text(UNLOCK_PRODUCTS[backend]))
        for conn in (holder, watcher):
            with contextlib.suppress(Exception):
                conn.close()


def restarted_during_tier1(server: servers.Server, url: URL, tmp_path: Path, *args: str,
                           down: float = DOWN_SECONDS, **settings: str) -> procs.Proc:
    """``summarizer refresh ARGS``, with the server restarted (down ``down`` s) while a tier-1 statement runs."""
    with products_locked(url) as watcher:
        overrides: dict[str, str] = {**QUICK_RETRIES, **settings}
        proc = procs.start(url, "refresh", *args, cwd=tmp_path, stalled=False, **overrides)
        watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)
        server.restart(down)
    return proc


def live(app: Summarizer) -> dict[str, dict[Any, Any]]:
    return actual_tiers(app.dialect.engine, app.schema.live().by_name())


def the_run(app: Summarizer, proc: procs.Proc) -> Any:
    runs = [r for r in app.runs.latest() if r.pid == proc.pid]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize("mode", ["full", "months"])
def test_a_refresh_survives_a_restart(own_server, database, app, tmp_path, mode):
    old, new, months = old_and_new(app, seed=131)
    # --jobs 2: both months' sessions are lost at once, and both take the lock again before going on
    args = ("--months", f"{months[0]:%Y-%m},{months[1]:%Y-%m}", "--jobs", "2") if mode == "months" else ()
    # two attempts: the tries while the server is away are bounded by the budget, not by the attempts
    proc = restarted_during_tier1(own_server, database, tmp_path, *args, refresh_retry_attempts="2")
    code = proc.finish()
    assert code == 0, proc.stderr
    waits = [line for line in proc.lines if "the database cannot be reached" in line]
    assert len(waits) > 2, proc.stderr  # it did lose the server, and tried until it was back
    assert "took the run lock again" in proc.stderr
    run = the_run(app, proc)
    assert run.status == "succeeded" and run.mode == mode and run.error is None
    assert_tiers_equal(new, live(app), exact=True)
    assert old != new


def test_a_restart_longer_than_the_budget_is_a_recorded_failure(own_server, database, app, tmp_path):
    old, _, _ = old_and_new(app, seed=132)
    proc = restarted_during_tier1(own_server, database, tmp_path, down=15.0, refresh_retry_budget_seconds="5")
    code = proc.finish()
    assert code == 69, proc.stderr  # the database could not be reached (EX_UNAVAILABLE)
    error = [line for line in proc.lines if line.startswith("Error:")]
    assert len(error) == 1 and "could not be reached for 5s" in error[0] \
        and "retry_budget_seconds" in error[0], proc.stderr
    assert "Traceback" not in proc.stderr
    run = the_run(app, proc)  # written once the server was back, by the process itself
    assert run.status == "failed" and "could not be reached for 5s" in run.error
    assert_tiers_equal(old, live(app), exact=True)


def test_a_step_retried_after_a_lost_connection_takes_the_lock_first(own_server, database, app, tmp_path):
    """The step's session and the lock's session are lost together (as in a restart) and another run
    takes the lock meanwhile: the retried step must not write; the run stops, the live tiers stay old."""
    old, _, months = old_and_new(app, seed=133)
    name = lock_name(app.dialect, app.config.refresh.lock_name)
    other = procs.watcher(database)
    try:
        with products_locked(database) as watcher:
            proc = procs.start(database, "refresh", "--months", f"{months[0]:%Y-%m}", cwd=tmp_path)
            [step] = watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)
            holder = watcher.lock_holder(name)
            assert holder is not None
            watcher.kill(holder)
            procs.wait_until(lambda: other.take_lock(name), "the other session to take the run lock")
            watcher.kill(step)
        code = proc.finish()
    finally:
        other.close()
    assert code == 1, proc.stderr
    assert "another run holds it now" in proc.stderr
    assert_tiers_equal(old, live(app), exact=True)
