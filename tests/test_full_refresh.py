"""The full refresh on every engine: tiers equal an independent computation, and the swap is safe."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, inspect, select, text

from summarizer.errors import RefreshFailed
from summarizer.model import OLD_SUFFIX, SHADOW_SUFFIX
from summarizer.rollup import Rollup

from .clirun import run_cli
from .oracle import METRICS, actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows


def test_full_refresh_equals_independent_computation(db_url, app_factory):
    app = app_factory(db_url)
    data = random_dataset(seed=3, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    run = app.refresh()
    assert run.status == "succeeded"
    assert run.plan.startswith("one pass")
    expected = expected_tiers(data)
    assert_tiers_equal(expected, actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)
    assert run.rows == {tier: len(rows) for tier, rows in expected.items()}
    assert app.verify().ok
    recorded = app.runs.latest(1)[0]
    assert (recorded.id, recorded.status, recorded.rows) == (run.id, "succeeded", run.rows)
    assert set(recorded.steps) >= {"prepare", "tier1", "tier2", "tier3", "indexes", "swap"}


@pytest.mark.parametrize("jobs", [1, 2])
def test_month_chunks_through_the_covering_index(db_url, app_factory, jobs):
    """Month chunks, one at a time or two at once (on PostgreSQL one job makes each tier by one CREATE TABLE
    ... AS SELECT instead, two jobs INSERT the months in parallel): the same tiers, and the run record's row
    counts, which come from the statements' own, are the tiers' rows."""
    app = app_factory(db_url)
    data = random_dataset(seed=5, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init(source_indexes=True)
    run = app.refresh(jobs=jobs)
    assert run.plan.startswith("month chunks through the covering index")
    expected = expected_tiers(data)
    assert_tiers_equal(expected, actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)
    assert run.rows == {tier: len(rows) for tier, rows in expected.items()}
    assert not app.explain()["temporary"] or app.dialect.name == "postgresql"


def test_row_counts_add_up_to_the_raw_rows(db_url, refreshed_on):
    done = refreshed_on(db_url, seed=11, rows=300)
    app, data = done.app, done.data
    live = app.schema.live()
    with app.dialect.engine.connect() as conn:
        t1 = conn.execute(select(func.sum(live.asin.c.row_count))).scalar()
        all_rows = live.brand.c.marketplace == "ALL"
        t2_all = conn.execute(select(func.sum(live.brand.c.row_count)).where(all_rows)).scalar()
        t3 = conn.execute(select(func.sum(live.category.c.row_count))).scalar()
    assert int(t1) == int(t2_all) == int(t3) == len(data.rows)


def test_a_failure_just_before_the_swap_leaves_the_live_tiers_untouched(db_url, refreshed_on, monkeypatch):
    done = refreshed_on(db_url, seed=8)
    app, data, tables, before = done.app, done.data, done.tables, done.tiers
    mutate(data, data.months[:2])
    reload_rows(app.dialect.engine, tables, data)

    real_phases = app.dialect.swap_phases

    def failing_phases(pairs, timeout):  # a real statement that errors where the swap begins
        phases = real_phases(pairs, timeout)
        return [["SELECT no_such_column FROM no_such_table_here"] + phases[0], *phases[1:]]
    monkeypatch.setattr(app.dialect, "swap_phases", failing_phases)
    with pytest.raises(RefreshFailed, match="no_such_table_here"):
        app.refresh()
    assert actual_tiers(app.dialect.engine, app.schema.live().by_name()) == before
    failed = app.runs.latest(1)[0]
    assert failed.status == "failed" and "no_such_table_here" in failed.error

    monkeypatch.undo()
    app.refresh()  # the next run cleans up the shadow tables and succeeds
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)
    leftovers = [t for t in inspect(app.dialect.engine).get_table_names() if t.endswith(SHADOW_SUFFIX)]
    assert leftovers == []


def test_a_failure_between_the_renames_and_the_drops_leaves_the_new_tiers_live(server_url, refreshed_on, monkeypatch):
    """The swap's renames commit before the old copies are dropped (MariaDB, PostgreSQL; SQLite does both in one
    transaction): a run that stops in between leaves the new tiers live and the data version moved with them;
    the next refresh drops the old copies and succeeds."""
    done = refreshed_on(server_url, seed=9)
    app, data, tables = done.app, done.data, done.tables
    assert len(app.dialect.swap_phases([], 1)) == 2
    mutate(data, data.months[:2])
    reload_rows(app.dialect.engine, tables, data)
    real_phases = app.dialect.swap_phases

    def failing_drops(pairs, timeout):  # a real statement that errors where the drops begin
        renames, drops = real_phases(pairs, timeout)
        return [renames, ["SELECT no_such_column FROM no_such_table_here", *drops]]
    monkeypatch.setattr(app.dialect, "swap_phases", failing_drops)
    with app.dialect.engine.connect() as conn:
        version_before = conn.execute(select(app.schema.data_version().c.version)).scalar_one()
    with pytest.raises(RefreshFailed, match="no_such_table_here"):
        app.refresh()
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)
    with app.dialect.engine.connect() as conn:
        assert conn.execute(select(app.schema.data_version().c.version)).scalar_one() == version_before + 1
    old = sorted(t for t in inspect(app.dialect.engine).get_table_names() if t.endswith(OLD_SUFFIX))
    assert old == sorted(t.name for t in [*app.schema.tiers(OLD_SUFFIX), app.schema.data_version(OLD_SUFFIX)])

    monkeypatch.undo()
    assert app.refresh().status == "succeeded"
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                       exact=app.dialect.EXACT_DECIMAL)
    left = [t for t in inspect(app.dialect.engine).get_table_names() if t.endswith((OLD_SUFFIX, SHADOW_SUFFIX))]
    assert left == []


def test_readers_see_complete_old_or_complete_new_tiers(db_url, refreshed_on):
    done = refreshed_on(db_url, seed=21, rows=3000, months=12)
    app, data, tables = done.app, done.data, done.tables
    old_total = sum(r["value"] for r in data.rows)
    mutate(data, data.months[:6])
    reload_rows(app.dialect.engine, tables, data)
    new_total = sum(r["value"] for r in data.rows)
    assert old_total != new_total

    live = app.schema.live()
    names = [t.name for t in live]
    observations: list[tuple[object, ...]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def poll() -> None:
        reader = app.dialect.engine
        while not done.is_set():
            try:
                with reader.connect() as conn:
                    sums = []
                    for name in names:
                        where = " WHERE marketplace = 'ALL'" if name == live.brand.name else ""
                        sums.append(conn.execute(text(f"SELECT SUM(value) FROM {name}{where}")).scalar())
                    observations.append(tuple(sums))
            except Exception as exc:  # a missing table would land here
                errors.append(exc)
                return

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        app.refresh()
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert len(observations) >= 3
    exact = app.dialect.EXACT_DECIMAL
    allowed = [old_total, new_total]
    for sums in observations:
        for value in sums:
            assert value is not None, "a tier was empty"
            assert any(_close(value, total, exact) for total in allowed), f"{value} is neither {allowed}"
        # all three tiers of one observation come from the same generation only if read at once; each
        # must be complete on its own, which is what the check above asserts


def _close(value: object, total: Decimal, exact: bool) -> bool:
    if exact:
        return Decimal(str(value)) == total
    return abs(float(value) - float(total)) <= 1e-6 * max(1.0, abs(float(total)))  # type: ignore[arg-type]


# --- raw rows that use the all-marketplaces label ------------------------------------------------------
RESERVED_LABEL = ("the raw table financials has rows with marketplace 'ALL', the label the summaries reserve for "
                  "all marketplaces together: set [summary] all_marketplace to a label no raw marketplace uses")


def _with_label_rows(data, label="ALL"):
    """Raw rows in the second month whose marketplace is ``label``, one per metric."""
    month = data.months[1]
    data.rows += [{"asin": f"A{n:04d}", "marketplace": label, "month": month, "metric": metric,
                   "value": Decimal(n * 100 + 7) / 100} for n, metric in enumerate(METRICS)]
    return month


@pytest.mark.parametrize("mode", ["full", "months"])
def test_raw_rows_with_the_all_marketplace_label_fail_the_refresh_clearly(db_url, refreshed_on, mode):
    done = refreshed_on(db_url, seed=13)
    app, data, tables, before = done.app, done.data, done.tables, done.tiers
    month = _with_label_rows(data)
    reload_rows(app.dialect.engine, tables, data)

    with pytest.raises(RefreshFailed) as failure:
        app.refresh(months=[month] if mode == "months" else ())
    assert str(failure.value) == f"refresh failed: {RESERVED_LABEL}"
    failed = app.runs.latest(1)[0]
    assert (failed.mode, failed.status, failed.error) == (mode, "failed", RESERVED_LABEL)
    assert actual_tiers(app.dialect.engine, app.schema.live().by_name()) == before


def test_the_cli_names_the_all_marketplace_label(db_url, refreshed_on, tmp_path):
    done = refreshed_on(db_url, seed=14, rows=200)
    app, data, tables, before = done.app, done.data, done.tables, done.tiers
    month = _with_label_rows(data)
    reload_rows(app.dialect.engine, tables, data)

    for args in (("refresh",), ("refresh", "--months", f"{month:%Y-%m}")):
        done = run_cli(db_url, *args, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert f"Error: refresh failed: {RESERVED_LABEL}" in done.stderr
        assert "UNIQUE" not in done.stderr and "Duplicate" not in done.stderr and "UniqueViolation" not in done.stderr
    assert [(r.status, r.error) for r in app.runs.latest(2)] == [("failed", RESERVED_LABEL)] * 2
    assert actual_tiers(app.dialect.engine, app.schema.live().by_name()) == before


def test_another_all_marketplace_label_refreshes_the_same_data(db_url, app_factory, monkeypatch):
    looked: list[object] = []
    real = Rollup.reserved_marketplace

    def spy(self, *args, **kwargs):
        looked.append(args)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Rollup, "reserved_marketplace", spy)
    app = app_factory(db_url, summary_all_marketplace="EVERY")
    data = random_dataset(seed=13, huge=app.dialect.EXACT_DECIMAL)
    month = _with_label_rows(data)
    load(app.dialect.engine, data)
    app.init()
    expected = expected_tiers(data, all_marketplace="EVERY")
    assert any(key[2] == "ALL" for key in expected["brand"])  # 'ALL' is an ordinary marketplace here
    for months in ((), [month]):
        run = app.refresh(months=months)
        assert run.status == "succeeded"
        assert_tiers_equal(expected, actual_tiers(app.dialect.engine, app.schema.live().by_name()),
                           exact=app.dialect.EXACT_DECIMAL)
    assert app.verify().ok
    assert looked == []  # the check runs only after an integrity error, never on the happy path


# --- planner statistics ------------------------------------------------------------------------------
def test_postgresql_tiers_go_live_with_planner_statistics(postgres_url, app_factory):
    """PostgreSQL: a new table has no statistics until autovacuum samples it, and the planner guesses
    meanwhile. The full refresh analyzes the tiers the dashboards read before the swap, so they go live with them."""
    app = app_factory(postgres_url)
    load(app.dialect.engine, random_dataset(seed=15, rows=300, huge=True))
    app.init()
    run = app.refresh()
    with app.dialect.engine.connect() as conn:
        analyzed = {t.name: conn.execute(text("SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() "
                                              "AND tablename = :t"), {"t": t.name}).scalar()
                    for t in (app.schema.live().brand, app.schema.live().category)}
    assert all(columns > 0 for columns in analyzed.values()), analyzed
    assert "statistics" in run.steps


# --- the run record's times ----------------------------------------------------------------------------
def test_the_run_record_times_a_run_to_the_microsecond(db_url, app_factory):
    """The run history keeps microseconds, so a run under a second does not show 0 s (or 1 s); the tiers'
    refreshed_at is the run's start to the second."""
    app = app_factory(db_url)
    load(app.dialect.engine, random_dataset(seed=16, rows=200, huge=app.dialect.EXACT_DECIMAL))
    app.init()
    started = time.perf_counter()
    app.refresh()
    wall = time.perf_counter() - started
    run = app.runs.latest(1)[0]  # as the database gives it back
    assert run.finished_at is not None and 0 < run.duration() <= wall
    assert run.started_at.microsecond or run.finished_at.microsecond
    live = app.schema.live()
    with app.dialect.engine.connect() as conn:
        stamps = {conn.execute(select(t.c.refreshed_at).distinct()).scalar_one() for t in live}
    assert stamps == {run.stamp}


def test_a_run_table_with_whole_second_times_still_serves(mysql_url, app_factory):
    """A run history created before it kept microseconds (MySQL DATETIME): init accepts it, refreshes run."""
    app = app_factory(mysql_url)
    load(app.dialect.engine, random_dataset(seed=17, rows=200))
    app.init()
    runs = app.schema.runs().name
    with app.dialect.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {runs} MODIFY started_at DATETIME NOT NULL, MODIFY finished_at DATETIME NULL, "
                          "MODIFY data_as_of DATETIME NULL"))
    app.init()
    assert app.refresh().status == "succeeded"
    run = app.runs.latest(1)[0]
    assert run.status == "succeeded" and run.started_at.microsecond == 0
    assert app.verify().ok
