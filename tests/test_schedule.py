"""``summarizer schedule``: cron read as cron means it, and the real process on a fast trigger.

The process tests start ``python -m summarizer schedule`` with a six-field (seconds) cron
expression, so a run fires every second, and watch the run history and the JSON log lines.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from summarizer.schedule import cron_trigger, weekdays, zone

from .clirun import invoke, run_cli
from .databases import env_for, make_app
from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows

UTC = zone("UTC")
BLOCKER = "financials_summary_monthly_category__new"  # a view where the refresh builds a shadow table


# --- cron as crontab(5) reads it --------------------------------------------------------------
def fires(expression: str, start: dt.datetime, count: int, tz: dt.tzinfo = UTC) -> list[dt.datetime]:
    trigger, previous, now, found = cron_trigger(expression, tz), None, start, []
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        found.append(previous)
        now = previous + dt.timedelta(seconds=1)
    return found


WEDNESDAY = dt.datetime(2025, 1, 1, tzinfo=UTC)  # 2025-01-01 was a Wednesday


def test_weekday_0_is_sunday_as_in_cron():
    first = fires("0 3 * * 0", WEDNESDAY, 3)
    assert [f.strftime("%A %Y-%m-%d %H:%M") for f in first] == [
        "Sunday 2025-01-05 03:00", "Sunday 2025-01-12 03:00", "Sunday 2025-01-19 03:00"]
    assert fires("0 3 * * 7", WEDNESDAY, 1) == first[:1]
    assert fires("0 3 * * sun", WEDNESDAY, 1) == first[:1]


@pytest.mark.parametrize("field, days", [
    ("1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
    ("0,6", {"Sunday", "Saturday"}),
    ("*/2", {"Sunday", "Tuesday", "Thursday", "Saturday"}),    # cron counts steps from Sunday = 0
    ("1-7/3", {"Monday", "Thursday", "Sunday"}),
    ("5-7", {"Friday", "Saturday", "Sunday"}),
    ("mon-wed,FRI", {"Monday", "Tuesday", "Wednesday", "Friday"}),
    ("0-6", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}),
])
def test_day_of_week_fields_fire_on_cron_days(field, days):
    fired = fires(f"0 3 * * {field}", WEDNESDAY, 14)
    assert {f.strftime("%A") for f in fired} == days
    assert all(f.hour == 3 and f.minute == 0 for f in fired)


def test_day_of_month_and_week_both_restricted_fire_on_either():
    # cron: the 13th of the month OR any Friday (January 2025: Fridays 3, 10, 17, 24, 31; the 13th a Monday)
    days = [f.day for f in fires("0 3 13 * 5", WEDNESDAY, 6)]
    assert days == [3, 10, 13, 17, 24, 31]
    # a field starting with * counts as unrestricted, as in cron: then both must match (days 1, 11, 21, 31 that
    # are Fridays: 2025-01-31 and 2025-02-21)
    assert [f.date() for f in fires("0 3 */10 * 5", WEDNESDAY, 2)] == [dt.date(2025, 1, 31), dt.date(2025, 2, 21)]


def test_seconds_field_nicknames_and_time_zone():
    assert [f.second for f in fires("*/15 * * * * *", WEDNESDAY, 5)] == [0, 15, 30, 45, 0]
    assert fires("@daily", WEDNESDAY + dt.timedelta(hours=1), 1)[0] == dt.datetime(2025, 1, 2, tzinfo=UTC)
    berlin = fires("0 3 * * *", WEDNESDAY, 1, zone("Europe/Berlin"))[0]
    assert berlin.astimezone(UTC) == dt.datetime(2025, 1, 1, 2, 0, tzinfo=UTC)  # 03:00 CET is 02:00 UTC
    assert weekdays("*") == "*" and weekdays("7") == "sun"


@pytest.mark.parametrize("expression, message", [
    ("61 * * * *", "61"),
    ("* * *", "expected five fields"),
    ("0 3 * * 8", "day of week '8'"),
    ("0 3 * * 5-1", "from low to high"),
    ("0 3 * * 1/2", "a step needs a range"),
    ("0 3 * * */x", "whole number"),
    ("@reboot", "unknown nickname"),
])
def test_bad_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(ValueError, match=message):
        cron_trigger(expression, UTC)


# --- the process ---------------------------------------------------------------------------
class Scheduler:
    """A running ``summarizer schedule`` with its stderr in a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, log_format: str = "json") -> None:
        self.log, self.handle = log, log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "summarizer", "--log-format", log_format, "schedule", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=self.handle)

    def text(self) -> str:
        return self.log.read_text()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def count(self, **match: Any) -> int:
        return sum(all(e.get(k) == v for k, v in match.items()) for e in self.events())

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            assert self.proc.poll() is None, f"schedule exited ({self.proc.returncode}) before {what}:\n{self.text()}"
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.text()[-4000:]}")

    def wait_exit(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"schedule did not exit; log:\n{self.text()[-4000:]}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.handle.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Scheduler]]:
    started: list[Scheduler] = []

    def factory(env: dict[str, str], *args: str, log_format: str = "json") -> Scheduler:
        started.append(Scheduler(env, tmp_path / f"schedule{len(started)}.log", *args, log_format=log_format))
        return started[-1]
    yield factory
    for scheduler in started:
        scheduler.close()


def prepare(url: URL, tmp_path: Path, rows: int = 600):
    app = make_app(url, tmp_path)
    data = random_dataset(seed=4, rows=rows, huge=app.dialect.EXACT_DECIMAL)
    tables = load(app.dialect.engine, data)
    app.init()
    return app, data, tables


def runs(url: URL) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM summarizer_runs ORDER BY id"))]
    finally:
        engine.dispose()
    for row in rows:  # SQLite hands back text
        for key in ("started_at", "finished_at"):
            if isinstance(row[key], str):
                row[key] = dt.datetime.fromisoformat(row[key])
    return rows


def with_status(url: URL, status: str, after: int = 0) -> list[dict[str, Any]]:
    return [r for r in runs(url) if r["status"] == status and r["id"] > after]


def execute(url: URL, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def assert_one_at_a_time(history: list[dict[str, Any]], pid: int) -> None:
    assert history and all(r["pid"] == pid for r in history)
    for earlier, later in zip(history, history[1:], strict=False):
        assert earlier["finished_at"] is not None and later["started_at"] >= earlier["finished_at"], (earlier, later)


def assert_started_finished_alternate(events: list[dict[str, Any]]) -> None:
    marks = [e["event"] for e in events if e.get("event") in ("run_started", "run_finished")]
    assert marks and marks == ["run_started", "run_finished"] * (len(marks) // 2)


def metric(path: Path, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def unix(value: dt.datetime) -> float:
    return value.replace(tzinfo=dt.UTC).timestamp()


def test_runs_one_at_a_time_survive_a_failed_run_and_skip_when_the_lock_is_held(tmp_path, start):
    db = tmp_path / "sched.db"
    url = make_url(f"sqlite:///{db}")
    prepare(url, tmp_path)[0].close()
    metrics = tmp_path / "summarizer.prom"
    proc = start(env_for(url, schedule_full="* * * * * *"), "--metrics-file", str(metrics))
    proc.wait_for(lambda: len(with_status(url, "succeeded")) >= 2, "two successful runs")

    execute(url, f"CREATE VIEW {BLOCKER} AS SELECT 1 AS x")   # the next run fails after it has started
    # a run ends in this order: its record, the metrics file, then the run_finished line; so wait for
    # the line, the last of the three (waiting for the record raced the line and the file)
    proc.wait_for(lambda: proc.count(event="run_finished", status="failed") >= 1, "a failed run's log line")
    failed = with_status(url, "failed")[0]
    assert BLOCKER in failed["error"]
    assert metric(metrics, "summarizer_last_run_success") == 0
    execute(url, f"DROP VIEW {BLOCKER}")
    proc.wait_for(lambda: with_status(url, "succeeded", after=failed["id"]), "a success after the failure")

    with FileLock(f"{db}.summarizer-lock", timeout=10):       # what a manual `summarizer refresh` holds
        newest, skipped = runs(url)[-1]["id"], proc.count(event="run_finished", status="skipped")
        proc.wait_for(lambda: proc.count(event="run_finished", status="skipped") > skipped, "a skipped run")
        assert runs(url)[-1]["id"] == newest
    assert "skipped: another run holds the lock" in proc.text()
    proc.wait_for(lambda: with_status(url, "succeeded", after=newest), "a success after the lock was free")

    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    history = runs(url)
    assert {r["status"] for r in history} == {"succeeded", "failed"}
    assert_one_at_a_time(history, proc.proc.pid)
    events = proc.events()                                    # every line of stderr is one JSON object
    assert_started_finished_alternate(events)
    assert any(e.get("event") == "next_run" and e["mode"] == "full" for e in events)
    last = with_status(url, "succeeded")[-1]
    assert metric(metrics, "summarizer_last_success_timestamp_seconds") == unix(last["finished_at"])
    assert metric(metrics, "summarizer_tier_rows", tier="asin") == last["rows_asin"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_idle_stops_at_once_and_the_log_says_when_the_next_run_is_due(tmp_path, start, signum):
    url = make_url(f"sqlite:///{tmp_path / 'idle.db'}")
    prepare(url, tmp_path)[0].close()
    proc = start(env_for(url, schedule_full="0 3 * * 0", schedule_timezone="UTC"), log_format="text")
    line = proc.wait_for(lambda: [x for x in proc.text().splitlines() if "next full refresh at" in x], "the next run")
    due = dt.datetime.strptime(line[0].split("next full refresh at ")[1][:19], "%Y-%m-%d %H:%M:%S")
    assert (due.strftime("%A"), due.hour, due.minute) == ("Sunday", 3, 0)
    proc.proc.send_signal(signum)
    assert proc.wait_exit(timeout=10) == 0
    assert f"{signal.Signals(signum).name}: stopping (no run in progress)" in proc.text()
    assert "schedule stopped" in proc.text() and runs(url) == []


@pytest.mark.parametrize("settings, message", [
    ({"schedule_full": "0 3 * * 9"}, "section [schedule], key 'full': day of week '9'"),
    ({"schedule_timezone": "Mars/Olympus"}, "key 'timezone': unknown time zone 'Mars/Olympus'"),
    ({"schedule_full": "", "schedule_changed": ""}, "nothing to schedule"),
    ({"schedule_changed": "*/15 * * * *"}, "key 'changed': a --changed refresh needs updated_at_column"),
    ({"schedule_misfire_grace": "0"}, "key 'misfire_grace': expected at least 1 second"),
])
def test_bad_schedule_settings_exit_2_before_anything_runs(tmp_path, settings, message):
    url = make_url(f"sqlite:///{tmp_path / 'bad.db'}")
    result = invoke(url, "schedule", cwd=tmp_path, timeout=30, **settings)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_an_unreachable_database_at_start_exits_69(tmp_path):
    result = run_cli("mysql+pymysql://root@127.0.0.1:1/test", "schedule", cwd=tmp_path, timeout=60)
    assert result.returncode == 69 and "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


# --- MariaDB: the database going away, and signals during a run -----------------------------------
class Proxy:
    """A TCP forwarder to the database server that the test can cut (refusing and dropping) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.target, self.port = (host, port), 0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self.port, self.listener = listener.getsockname()[1], listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self.listener is listener:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target)
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def mysql_settings(**more: str) -> dict[str, str]:
    # GET_LOCK is server-wide: a lock name of our own keeps other tests' refreshes out of the way
    return {"refresh_lock_name": f"sched_{uuid.uuid4().hex[:12]}", "refresh_retry_attempts": "2",
            "refresh_retry_initial_wait": "0.05", **more}


def test_the_database_going_away_fails_runs_and_the_schedule_recovers(mysql_url, tmp_path, start):
    prepare(mysql_url, tmp_path)[0].close()
    proxy = Proxy(mysql_url.host or "127.0.0.1", mysql_url.port or 3306)
    try:
        via_proxy = mysql_url.set(host="127.0.0.1", port=proxy.port)
        metrics = tmp_path / "summarizer.prom"
        proc = start(env_for(via_proxy, **mysql_settings(schedule_full="* * * * * *")),
                     "--metrics-file", str(metrics))
        proc.wait_for(lambda: len(with_status(mysql_url, "succeeded")) >= 2, "two successful runs")
        failures = proc.count(event="run_finished", status="failed")
        proxy.cut()
        proc.wait_for(lambda: proc.count(event="run_finished", status="failed") > failures + 1, "failed runs")
        succeeded = with_status(mysql_url, "succeeded")
        last_ok = succeeded[-1]
        assert metric(metrics, "summarizer_last_run_status", status="failed") == 1
        # kept from the file's previous version (the database is unreachable); the last success, unless the cut
        # fell between a run's commit and its reply (then the client saw a failure, and it is the one before)
        assert metric(metrics, "summarizer_last_success_timestamp_seconds") in {
            unix(r["finished_at"]) for r in succeeded[-2:]}
        proxy.restore()
        proc.wait_for(lambda: with_status(mysql_url, "succeeded", after=last_ok["id"]), "a success after", 20)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait_exit() == 0
    finally:
        proxy.cut()
    history = runs(mysql_url)
    assert {r["status"] for r in history} <= {"succeeded", "interrupted"}   # a run cut mid-way: interrupted
    assert_one_at_a_time(history, proc.proc.pid)
    assert_started_finished_alternate(proc.events())
    assert metric(metrics, "summarizer_last_run_success") == 1


class SwapBlocker:
    """A reader's open transaction on the live brand tier: the swap waits for its metadata lock."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url)
        self.conn = self.engine.connect()
        self.conn.execute(text("SELECT COUNT(*) FROM financials_summary_monthly_brand")).scalar()

    def waiting(self) -> bool:
        return bool(self.conn.execute(text(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
            "AND STATE LIKE 'Waiting for table metadata lock%'")).scalar())

    def release(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


@pytest.fixture
def blocked_swap(mysql_url: URL, tmp_path: Path, start):
    """A scheduled full refresh stuck at its swap; yields (scheduler, blocker, app, data, tables)."""
    app, data, tables = prepare(mysql_url, tmp_path)
    app.refresh()
    blocker = SwapBlocker(mysql_url)
    settings = mysql_settings(schedule_full="* * * * * *", refresh_swap_lock_timeout="1",
                              refresh_swap_attempts="100")
    try:
        yield lambda: (start(env_for(mysql_url, **settings)), blocker), app, data, tables
    finally:
        blocker.close()
        app.close()


def wait_for_orphaned_swap(blocker: SwapBlocker, timeout: float = 10) -> None:
    """The client is gone but its RENAME still waits on the server, for up to lock_wait_timeout; released
    now it would still swap. (Only a reader's lock timing decides that; the tables stay complete either way.)"""
    deadline = time.monotonic() + timeout
    while blocker.waiting():
        assert time.monotonic() < deadline, "the orphaned swap statement is still waiting"
        time.sleep(0.1)


def wait_until_stuck(proc: Scheduler, blocker: SwapBlocker) -> None:
    proc.wait_for(blocker.waiting, "the swap waiting for the reader's lock")


def test_sigterm_during_a_run_lets_it_finish_then_exits_0(mysql_url, blocked_swap):
    begin, app, data, tables = blocked_swap
    mutate(data, data.months[:2])
    reload_rows(app.dialect.engine, tables, data)
    proc, blocker = begin()
    wait_until_stuck(proc, blocker)
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for(lambda: proc.count(event="stopping", mode="full"), "the 'stopping after this run' line")
    time.sleep(1.5)                                           # still running, still waiting for the reader
    assert proc.proc.poll() is None and runs(mysql_url)[-1]["status"] == "running"
    blocker.release()
    assert proc.wait_exit(timeout=20) == 0
    history = runs(mysql_url)
    assert [r["status"] for r in history] == ["succeeded", "succeeded"]   # the manual one, then the scheduled
    assert proc.count(event="run_started") == 1               # nothing started after the signal
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=True)
    assert app.verify().ok


def test_a_second_sigterm_stops_the_run_at_once_recorded_interrupted(mysql_url, blocked_swap):
    begin, app, _data, _tables = blocked_swap
    before = actual_tiers(app.dialect.engine, app.schema.live().by_name())
    proc, blocker = begin()
    wait_until_stuck(proc, blocker)
    proc.proc.send_signal(signal.SIGTERM)
    proc.wait_for(lambda: proc.count(event="stopping", mode="full"), "the 'stopping after this run' line")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    wait_for_orphaned_swap(blocker)
    blocker.release()
    last = runs(mysql_url)[-1]
    assert last["status"] == "interrupted" and "signal" in last["error"]
    assert proc.count(event="run_finished", status="interrupted") == 1
    assert actual_tiers(app.dialect.engine, app.schema.live().by_name()) == before
    assert app.verify().ok
