"""Incremental refresh (--months, --since, --changed, --jobs) on every engine, and its command line.

Every correctness check compares the tiers with the oracle (tests/oracle.py), computed in Python
from the raw rows; "not rewritten" is checked through ``refreshed_at``, which the test first sets to
a sentinel that no refresh writes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import select as selectmodule
import subprocess
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, delete, func, insert, select, update
from sqlalchemy.engine import URL

from summarizer.errors import ConfigError, RefreshFailed, SummarizerError
from summarizer.model import Tiers
from summarizer.months import parse_months

from . import procs
from .clirun import command, environment, invoke, run_cli
from .oracle import Dataset, actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows
from .setups import load_and_refresh

SENTINEL = dt.datetime(2000, 1, 1)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


# --- helpers ---------------------------------------------------------------------------------------
def restamp(engine: Engine, live: Tiers) -> None:
    """Mark every summary row with the sentinel time, so a rewritten row shows."""
    with engine.begin() as conn:
        for table in live:
            conn.execute(update(table).values(refreshed_at=SENTINEL))


def stamps(engine: Engine, live: Tiers) -> dict[dt.date, set[dt.datetime]]:
    """month -> the refreshed_at values found in any tier."""
    found: dict[dt.date, set[dt.datetime]] = {}
    with engine.connect() as conn:
        for table in live:
            for month, stamp in conn.execute(select(table.c.month, table.c.refreshed_at).distinct()):
                found.setdefault(_date(month), set()).add(stamp)
    return found


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def assert_only_rewritten(engine: Engine, live: Tiers, rewritten: list[dt.date], all_months: list[dt.date]) -> None:
    found = stamps(engine, live)
    for month in all_months:
        if month in rewritten:
            assert SENTINEL not in found.get(month, set()), f"{month} was not rewritten"
        elif month in found:
            assert found[month] == {SENTINEL}, f"{month} was rewritten although it was not asked for"


def assert_matches_oracle(app: Any, data: Dataset) -> None:
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)


def raw_dataset(engine: Engine, financials: Table, data: Dataset) -> Dataset:
    """The raw rows as the database holds them now (after changes made in SQL), for the oracle."""
    f = financials
    with engine.connect() as conn:
        rows = conn.execute(select(f.c.asin, f.c.marketplace, f.c.month, f.c.metric, f.c.value)).mappings().all()
    return Dataset(data.months, data.products, data.brands,
                   [{**row, "month": _date(row["month"]), "value": Decimal(str(row["value"]))} for row in rows])


def loaded(app: Any, seed: int, *, months: int = 4, rows: int = 600) -> tuple[Dataset, dict[str, Table]]:
    data = random_dataset(seed=seed, rows=rows, months=months, huge=app.dialect.EXACT_DECIMAL)
    tables = load(app.dialect.engine, data)
    app.init()
    app.refresh()
    restamp(app.dialect.engine, app.schema.live())
    return data, tables


# --- --months -------------------------------------------------------------------------------------
@pytest.mark.parametrize("jobs", [1, 2])
def test_months_make_the_changed_months_right_and_leave_the_others_alone(db_url, app_factory, jobs):
    app = app_factory(db_url)
    data, tables = loaded(app, seed=31)
    changed = data.months[1:3]
    mutate(data, changed, seed=jobs)  # inserts, updates and deletes, only in these two months
    reload_rows(app.dialect.engine, tables, data)

    run = app.refresh(months=changed, jobs=jobs)

    assert (run.status, run.mode, run.months) == ("succeeded", "months", "2024-02,2024-03")
    assert_matches_oracle(app, data)
    assert_only_rewritten(app.dialect.engine, app.schema.live(), changed, data.months)
    assert app.verify().ok
    assert app.runs.latest(1)[0].rows == {tier: len(rows) for tier, rows in expected_tiers(data).items()}


def test_rows_per_tier_follow_incremental_runs_and_are_counted_after_a_failed_one(db_url, app_factory):
    """An incremental run records rows per tier without counting them: the previous run's figures plus
    its own changes. After a run that failed having committed a month, they are counted again."""
    app = app_factory(db_url)
    data, tables = loaded(app, seed=39, months=5)
    m1, m2, m3, m4, _ = data.months

    def oracle_rows() -> dict[str, int]:
        return {tier: len(rows) for tier, rows in expected_tiers(data).items()}

    mutate(data, [m1, m4], seed=11)
    data.rows = [r for r in data.rows if not (r["month"] == m4 and r["marketplace"] == "US")]  # fewer keys
    reload_rows(app.dialect.engine, tables, data)
    assert app.refresh(months=[m1, m4], jobs=2).rows == oracle_rows()

    before = oracle_rows()
    data.rows = [r for r in data.rows if r["month"] != m2]  # month 2 goes: every tier loses its rows
    data.rows.append({"asin": "A0001", "marketplace": "ALL", "month": m3, "metric": "revenue",  # month 3 fails
                      "value": Decimal("1.5")})
    reload_rows(app.dialect.engine, tables, data)
    with pytest.raises(RefreshFailed):
        app.refresh(months=[m2, m3])
    data.rows.pop()
    reload_rows(app.dialect.engine, tables, data)
    assert oracle_rows() != before  # month 2's deletion was committed by the failed run, and not recorded
    assert app.refresh(months=[m3]).rows == oracle_rows()
    assert_matches_oracle(app, data)


def test_a_month_without_raw_rows_disappears_from_every_tier(db_url, app_factory):
    app = app_factory(db_url)
    data, tables = loaded(app, seed=32)
    gone = data.months[2]
    data.rows = [r for r in data.rows if r["month"] != gone]
    with app.dialect.engine.begin() as conn:
        conn.execute(delete(tables["financials"]).where(tables["financials"].c.month == gone))

    app.refresh(months=[gone, dt.date(2031, 1, 1)])  # and a month that never had rows: nothing to do

    found = stamps(app.dialect.engine, app.schema.live())
    assert gone not in found and dt.date(2031, 1, 1) not in found
    assert_matches_oracle(app, data)


# --- --changed and --since ------------------------------------------------------------------------
def changed_app(app_factory: Any, url: URL) -> Any:
    return app_factory(url, source_updated_at_column="updated_at")


def age_all_rows(engine: Engine, financials: Table) -> None:
    with engine.begin() as conn:
        conn.execute(update(financials).values(updated_at=dt.datetime(2020, 1, 1)))


def change_two_months(engine: Engine, financials: Table, months: list[dt.date]) -> None:
    """Inserts and updates in ``months``, made the way an application makes them (updated_at = now)."""
    f = financials
    with engine.begin() as conn:
        conn.execute(insert(f), [{"asin": f"A{n:04d}", "marketplace": "US", "month": months[n % 2],
                                  "metric": "revenue", "value": Decimal(n * 7) / 4} for n in range(30)])
        conn.execute(update(f).where(f.c.month.in_(months), f.c.id % 3 == 0)
                     .values(value=f.c.value + 1, updated_at=func.current_timestamp()))


def test_changed_refreshes_the_months_whose_rows_changed_since_the_last_run(db_url, app_factory):
    app = changed_app(app_factory, db_url)
    data = random_dataset(seed=33, rows=600, months=4, huge=app.dialect.EXACT_DECIMAL)
    tables = load(app.dialect.engine, data)
    age_all_rows(app.dialect.engine, tables["financials"])
    app.init()
    app.refresh()
    restamp(app.dialect.engine, app.schema.live())
    changed = [data.months[0], data.months[3]]
    change_two_months(app.dialect.engine, tables["financials"], changed)

    run = app.refresh(changed=True, jobs=2)

    assert (run.status, run.mode, run.months) == ("succeeded", "changed", "2024-01,2024-04")
    assert_matches_oracle(app, raw_dataset(app.dialect.engine, tables["financials"], data))
    assert_only_rewritten(app.dialect.engine, app.schema.live(), changed, data.months)

    # A second --changed starts from the first: (almost) nothing is left to do.
    restamp(app.dialect.engine, app.schema.live())
    again = app.refresh(changed=True)
    assert again.months in ("", "2024-01,2024-04")  # rows changed within a minute of the run are read again
    assert_matches_oracle(app, raw_dataset(app.dialect.engine, tables["financials"], data))


def test_changed_cannot_see_deleted_rows_but_months_can(db_url, app_factory):
    """The documented gap: a deleted row leaves no updated_at behind; --months repairs its month."""
    app = changed_app(app_factory, db_url)
    data = random_dataset(seed=34, rows=300, months=3, huge=app.dialect.EXACT_DECIMAL)
    tables = load(app.dialect.engine, data)
    age_all_rows(app.dialect.engine, tables["financials"])
    app.init()
    app.refresh()
    f = tables["financials"]
    with app.dialect.engine.begin() as conn:
        conn.execute(delete(f).where(f.c.month == data.months[1], f.c.id % 2 == 0))

    assert app.refresh(changed=True).months == ""
    assert not app.verify().ok
    app.refresh(months=[data.months[1]])
    assert app.verify().ok
    assert_matches_oracle(app, raw_dataset(app.dialect.engine, f, data))


def test_since_refreshes_the_months_changed_after_a_time(db_url, app_factory):
    app = changed_app(app_factory, db_url)
    data = random_dataset(seed=35, rows=300, months=4, huge=app.dialect.EXACT_DECIMAL)
    tables = load(app.dialect.engine, data)
    age_all_rows(app.dialect.engine, tables["financials"])
    app.init()
    app.refresh()
    restamp(app.dialect.engine, app.schema.live())
    change_two_months(app.dialect.engine, tables["financials"], data.months[1:3])

    run = app.refresh(since=dt.datetime(2021, 6, 1))

    assert (run.mode, run.months) == ("since", "2024-02,2024-03")
    assert_only_rewritten(app.dialect.engine, app.schema.live(), data.months[1:3], data.months)
    assert_matches_oracle(app, raw_dataset(app.dialect.engine, tables["financials"], data))


def test_changed_without_an_updated_at_column_is_a_config_error(db_url, app_factory):
    app = app_factory(db_url)
    load(app.dialect.engine, random_dataset(seed=36, rows=50, huge=app.dialect.EXACT_DECIMAL))
    app.init()
    for kwargs in ({"changed": True}, {"since": dt.datetime(2024, 1, 1)}):
        with pytest.raises(ConfigError, match=r"\[source\].*updated_at_column"):
            app.refresh(**kwargs)
    assert app.runs.latest() == []


def test_changed_needs_an_earlier_full_refresh(db_url, app_factory):
    app = changed_app(app_factory, db_url)
    load(app.dialect.engine, random_dataset(seed=37, rows=50, huge=app.dialect.EXACT_DECIMAL))
    app.init()
    with pytest.raises(SummarizerError, match="run `summarizer refresh` once first"):
        app.refresh(changed=True)
    assert app.runs.latest() == []


# --- --jobs: months at once, on as many connections -----------------------------------------------
def test_jobs_refresh_months_at_once_on_separate_connections(server_url, app_factory):
    app = app_factory(server_url)
    data, tables = loaded(app, seed=38, months=3)
    mutate(data, data.months, seed=5)
    reload_rows(app.dialect.engine, tables, data)
    watcher = procs.watcher(server_url)
    errors: list[BaseException] = []
    try:
        with watcher.lock_tables("products"):  # every month's tier-1 insert waits for it
            worker = threading.Thread(target=_capture(errors, lambda: app.refresh(months=data.months, jobs=2)))
            worker.start()
            waiting = watcher.wait_for_session("INSERT INTO%", watcher.TABLE_LOCK_WAIT, count=2)
            assert len(waiting) == 2
            assert len(watcher.sessions("INSERT INTO%")) == 2  # two months at once, the third one waits its turn
        worker.join(timeout=60)
    finally:
        watcher.close()
    assert errors == []
    assert_matches_oracle(app, data)


def test_a_full_refresh_with_jobs_gives_the_same_tiers(db_url, app_factory):
    app = app_factory(db_url)
    data = random_dataset(seed=40, rows=600, months=5, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init(source_indexes=True)
    run = app.refresh(jobs=3)
    assert run.status == "succeeded" and {"tier1", "tier2", "tier3"} <= set(run.steps)
    assert_matches_oracle(app, data)


def _capture(errors: list[BaseException], work: Any) -> Any:
    def target() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
    return target


# --- month lists and ranges ------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "months"), [
    ("2024-01", ["2024-01"]),
    ("2024-01..2024-03", ["2024-01", "2024-02", "2024-03"]),
    ("2023-11..2024-02", ["2023-11", "2023-12", "2024-01", "2024-02"]),
    ("2024-05, 2024-02", ["2024-02", "2024-05"]),
    ("2024-01..2024-03,2024-02,2024-07", ["2024-01", "2024-02", "2024-03", "2024-07"]),
    ("2024-04..2024-04", ["2024-04"]),
])
def test_month_specs(spec, months):
    assert [f"{m:%Y-%m}" for m in parse_months(spec)] == months


@pytest.mark.parametrize(("spec", "message"), [
    ("2024-13", "expected a month as YYYY-MM"), ("24-01", "expected a month as YYYY-MM"),
    ("2024-03..2024-01", "ends before it starts"), ("2024-01,,2024-02", "empty month"),
    ("2024-01..", "expected a month as YYYY-MM"), ("", "empty month"), ("1900-01..2024-01", "more than"),
])
def test_bad_month_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_months(spec)


@pytest.fixture
def sqlite_refreshed(tmp_path: Path, app_factory: Any) -> tuple[Any, URL]:
    url = URL.create("sqlite", database=str(tmp_path / "cli.db"))
    app = changed_app(app_factory, url)
    load_and_refresh(app, seed=39, rows=200, months=3, huge=False, source_indexes=True)
    return app, url


@pytest.mark.parametrize("args", [
    ["--months", "2024-13"], ["--months", "2024-03..2024-01"], ["--months", ""], ["--months", "2024-01,,2024-02"],
    ["--months", "2024-01", "--changed"], ["--since", "yesterday"], ["--jobs", "0"], ["--wait", "-1"],
])
def test_bad_arguments_exit_2_and_change_nothing(sqlite_refreshed, tmp_path, args):
    app, url = sqlite_refreshed
    before = (actual_tiers(app.dialect.engine, app.schema.live().by_name()), app.runs.latest())
    result = invoke(url, "refresh", *args, cwd=tmp_path, source_updated_at_column="updated_at")
    assert result.returncode == 2, result.stderr
    option = next(a for a in args if a.startswith("--"))
    assert option in result.stderr and "Traceback" not in result.stderr
    assert (actual_tiers(app.dialect.engine, app.schema.live().by_name()), app.runs.latest()) == before


def test_changed_without_updated_at_exits_2_naming_the_setting(sqlite_refreshed, tmp_path):
    app, url = sqlite_refreshed
    before = app.runs.latest()
    result = invoke(url, "refresh", "--changed", cwd=tmp_path)
    assert result.returncode == 2
    assert "[source]" in result.stderr and "updated_at_column" in result.stderr
    assert app.runs.latest() == before


# --- progress and output -------------------------------------------------------------------------
def test_progress_is_a_timestamped_log_line_per_month_when_not_on_a_terminal(sqlite_refreshed, tmp_path):
    _, url = sqlite_refreshed
    result = run_cli(url, "refresh", "--months", "2024-01..2024-03", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), result.stderr
    for month in ("2024-01", "2024-02", "2024-03"):
        assert any(f"{month} done" in line for line in lines), f"no progress line for {month}:\n{result.stderr}"
    assert re.match(r"run \d+ succeeded", result.stdout)


def test_quiet_prints_nothing_on_success(sqlite_refreshed, tmp_path):
    app, url = sqlite_refreshed
    for args in (["--months", "2024-02"], []):
        result = run_cli(url, "refresh", "--quiet", *args, cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert [r.status for r in app.runs.latest(2)] == ["succeeded", "succeeded"]


def test_json_prints_the_run_record(sqlite_refreshed, tmp_path):
    app, url = sqlite_refreshed
    result = run_cli(url, "refresh", "--json", "--months", "2024-01,2024-03", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    latest = app.runs.latest(1)[0]
    assert record["id"] == latest.id
    assert (record["status"], record["mode"], record["months"]) == ("succeeded", "months", "2024-01,2024-03")
    assert record["rows"] == latest.rows and all(isinstance(n, int) for n in record["rows"].values())
    assert set(record["steps"]) == {"months"} and record["pid"] > 0 and record["host"] and record["version"]


def test_a_progress_bar_on_a_terminal(sqlite_refreshed, tmp_path):
    _, url = sqlite_refreshed
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(command("refresh"), cwd=tmp_path, env=environment(url, {}),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        output = _read_all(leader, proc)
    finally:
        os.close(leader)
    assert proc.returncode == 0, output
    assert "full refresh" in output and "3/3" in output and "#" in output, output


def _read_all(fd: int, proc: subprocess.Popen[bytes]) -> str:
    chunks = []
    while True:
        ready, _, _ = selectmodule.select([fd], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the other side closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.communicate(timeout=30)
    return b"".join(chunks).decode(errors="replace")
