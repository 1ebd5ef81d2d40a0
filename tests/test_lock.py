"""The run lock, with real processes: one refresh at a time, --wait, and a lock connection that dies.

A refresh is held where a test wants it without big data: on MariaDB and PostgreSQL the test locks the
``products`` table, so the refresh waits at its tier-1 statement; on SQLite (one writer for the whole
file, so no table can be held on its own) the process is stalled on its first log line, written
once it holds the lock and has recorded its run (``procs.start(stalled=True)``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pytest
from sqlalchemy.engine import URL

from summarizer.errors import RefreshFailed
from summarizer.lock import lock_name

from . import procs
from .clirun import run_cli
from .databases import scratch_database
from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows


@contextmanager
def tier1_held(url: URL) -> Iterator[None]:
    """Every refresh on ``url`` waits at its tier-1 statement (it reads products) until the block exits."""
    watcher = procs.watcher(url)
    try:
        with watcher.lock_tables("products"):
            yield
    finally:
        watcher.close()


def first_to_exit(*candidates: procs.Proc) -> procs.Proc:
    exited = procs.wait_until(lambda: next((p for p in candidates if p.popen.poll() is not None), None),
                              "one of the processes to exit")
    assert exited is not None
    return exited


def check_names_the_holder(message: str, holder: Any) -> None:
    for part in (f"run {holder.id} ", f"host {holder.host} ", f"pid {holder.pid},",
                 f"started {holder.started_at:%Y-%m-%d %H:%M:%S} UTC"):
        assert part in message, f"{part!r} is not in: {message}"


def test_two_refreshes_started_together_one_runs_and_the_other_exits_75(db_url, app_factory, tmp_path):
    app = app_factory(db_url)
    data = random_dataset(seed=41, rows=400, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    sqlite = db_url.get_backend_name() == "sqlite"
    with nullcontext() if sqlite else tier1_held(db_url):
        if sqlite:  # the first is stalled once it holds the lock; the second starts while it does
            winner = procs.start(db_url, "refresh", cwd=tmp_path, stalled=True)
            procs.wait_until(lambda: app.runs.holder(), "the first run to record itself")
            loser = procs.start(db_url, "refresh", cwd=tmp_path)
        else:
            pair = procs.start(db_url, "refresh", cwd=tmp_path), procs.start(db_url, "refresh", cwd=tmp_path)
            loser = first_to_exit(*pair)
            winner = pair[1] if loser is pair[0] else pair[0]
        assert loser.finish() == 75, loser.stderr
        holder = app.runs.holder()
        assert holder is not None and holder.pid == winner.pid and winner.popen.poll() is None
        check_names_the_holder(loser.stderr, holder)
        assert "--wait" in loser.stderr

        waiter = procs.start(db_url, "refresh", "--wait", "60", cwd=tmp_path)
        waiter.wait_for_line(rf"waiting up to 60s for the run lock, held by run {holder.id} ")
        impatient = run_cli(db_url, "refresh", "--wait", "0.5", cwd=tmp_path)
        assert impatient.returncode == 75 and "gave up after waiting 0.5s" in impatient.stderr
        if sqlite:
            winner.resume()
    assert winner.finish() == 0, winner.stderr
    assert waiter.finish() == 0, waiter.stderr

    first, second = sorted(app.runs.latest(), key=lambda r: r.id)  # exactly two runs: the losers left no record
    assert (first.pid, first.status, second.pid, second.status) == (winner.pid, "succeeded", waiter.pid, "succeeded")
    assert first.finished_at is not None and second.started_at >= first.finished_at  # one after the other
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)


def test_the_lock_is_per_database_on_a_server(server_url, app_factory, tmp_path):
    """MariaDB's GET_LOCK names are global to the server: two databases on it must not block each other."""
    with contextmanager(scratch_database)(server_url, f"issue4_{uuid.uuid4().hex[:8]}") as other:
        apps = [app_factory(server_url), app_factory(other)]
        for app in apps:
            load(app.dialect.engine, random_dataset(seed=42, rows=100))
            app.init()
        assert lock_name(apps[0].dialect, "summarizer_refresh") != lock_name(apps[1].dialect, "summarizer_refresh")
        with tier1_held(server_url):
            busy = procs.start(server_url, "refresh", cwd=tmp_path)
            procs.wait_until(lambda: apps[0].runs.holder(), "the first database's run")
            assert apps[1].refresh().status == "succeeded"
        assert busy.finish() == 0
        for app in apps:
            app.close()


def _background_refresh(app: Any, outcome: dict[str, Any]) -> threading.Thread:
    def target() -> None:
        try:
            outcome["run"] = app.refresh()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def short_idle_timeout(url: URL, seconds: int) -> URL:
    """``url`` with every session ended by the server after ``seconds`` idle, as some DBAs configure it."""
    if url.get_backend_name() == "postgresql":
        return url.update_query_dict({"options": f"-c idle_session_timeout={seconds * 1000}"})
    return url.update_query_dict({"init_command": f"SET SESSION wait_timeout = {seconds}"})


def test_the_lock_outlives_the_servers_idle_timeout(server_url, app_factory, caplog):
    """The lock's connection sits idle while a long step runs: a short server idle timeout (MySQL
    ``wait_timeout``, PostgreSQL ``idle_session_timeout``) must not end its session and so release the
    lock in the middle of the step, where another run could take it."""
    setup = app_factory(server_url)  # the data and the tables made with the server's usual timeout
    data = random_dataset(seed=44, rows=300)
    load(setup.dialect.engine, data)
    setup.init()
    app = app_factory(short_idle_timeout(server_url, 1))  # only the refresh meets the short one
    name = lock_name(app.dialect, app.config.refresh.lock_name)
    watcher = procs.watcher(server_url)
    outcome: dict[str, Any] = {}
    try:
        with tier1_held(server_url):  # a step that takes three idle timeouts
            worker = _background_refresh(app, outcome)
            watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)
            holder = watcher.lock_holder(name)
            assert holder is not None
            time.sleep(3)
            assert watcher.lock_holder(name) == holder, "the server ended the lock's idle session"
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert "error" not in outcome, outcome["error"]
    assert outcome["run"].status == "succeeded"
    assert "the run lock's connection was lost; taking the lock again" not in [r.getMessage() for r in caplog.records]
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()), exact=True)


@pytest.mark.parametrize("taken_over", [False, True], ids=["retaken", "taken-over"])
def test_a_killed_lock_connection_is_retaken_or_the_run_stops(server_url, app_factory, caplog, taken_over):
    app = app_factory(server_url)
    data = random_dataset(seed=43, rows=400)
    tables = load(app.dialect.engine, data)
    app.init()
    app.refresh()
    before = actual_tiers(app.dialect.engine, app.schema.live().by_name())
    mutate(data, data.months[:2])
    reload_rows(app.dialect.engine, tables, data)
    name = lock_name(app.dialect, app.config.refresh.lock_name)
    watcher = procs.watcher(server_url)
    outcome: dict[str, Any] = {}
    try:
        with tier1_held(server_url):
            worker = _background_refresh(app, outcome)
            watcher.wait_for_session(procs.TIER_WRITE, watcher.TABLE_LOCK_WAIT)
            lock_session = watcher.lock_holder(name)
            assert lock_session is not None
            watcher.kill(lock_session)
            procs.wait_until(lambda: watcher.lock_holder(name) is None, "the server to release the lock")
            if taken_over:  # another run takes the lock meanwhile
                assert watcher.take_lock(name)
        worker.join(timeout=60)
    finally:
        watcher.close()
    messages = [r.getMessage() for r in caplog.records]
    assert "the run lock's connection was lost; taking the lock again" in messages
    run = app.runs.latest(1)[0]
    if taken_over:
        assert isinstance(outcome.get("error"), RefreshFailed) and "another run holds it" in str(outcome["error"])
        assert run.status == "failed" and "lost the run lock" in run.error
        assert actual_tiers(app.dialect.engine, app.schema.live().by_name()) == before
    else:
        assert "error" not in outcome and outcome["run"].status == run.status == "succeeded"
        assert "took the run lock again" in messages
        assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                           exact=True)
