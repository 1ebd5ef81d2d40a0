"""The benchmark end to end at small scale, so it cannot rot: the report's shape, and tiers that verify.

No test here asserts a timing: the figures are whatever the machine gives; only their presence, their
type and the correctness checks the benchmark makes on the way (baseline and answers) are asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

from benchmarks.measure import BenchOptions, render, run_bench
from benchmarks.servers import bench_server
from summarizer import load_config
from summarizer.errors import UsageError
from summarizer.synth import Shape, generate

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "benchmarks.bench"]  # run from the repository: the benchmark is not installed
SHAPE = Shape(rows=20_000, asins=400, brands=40, categories=8, rows_per_key=10)
TARGETS = {"full_refresh_ratio_to_floor", "month_share_of_full", "peak_rss_bytes", "dashboard_typical_min_ratio",
           "dashboard_typical_summary_p50_ms"}


def small(url: URL, **changes: object) -> BenchOptions:
    settings = {"repeat": 1, "summary_queries": 5, "raw_queries": 1, "settle": False, "shape": SHAPE, **changes}
    return BenchOptions(url=url, **settings)  # type: ignore[arg-type]


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_report_shape(report: dict) -> None:
    assert report["database"]["version"] and report["database"]["cache_bytes"] > 0
    assert report["rows"]["raw"] == SHAPE.rows
    assert all(report["rows"][tier] > 0 for tier in ("asin", "brand", "category"))
    for key in ("floor", "full_refresh", "baseline", "month"):
        assert is_number(report[key]["seconds"]) and report[key]["seconds"] > 0, key
    for key, ratio in (("full_refresh", "ratio_to_floor"), ("baseline", "ratio_ours_to_baseline"),
                       ("month", "share_of_full")):
        assert is_number(report[key][ratio]), (key, ratio)
    assert set(report["full_refresh"]["steps"]) >= {"tier1", "tier2", "tier3", "indexes", "swap"}
    assert set(report["baseline"]["steps"]) >= {"tier 1", "tier 2", "tier 2 ALL", "tier 3"}
    assert report["full_refresh"]["plan"].startswith("month chunks through the covering index")
    assert 10 * 2**20 < report["memory"]["peak_rss_bytes"] < 2**30
    assert len(report["dashboard"]) == 4 and any(q["typical"] for q in report["dashboard"].values())
    for name, question in report["dashboard"].items():
        assert question["rows"] > 0, name
        assert all(is_number(question[k]) for k in ("summary_p50_ms", "summary_p99_ms", "raw_p50_ms", "raw_p99_ms",
                                                   "ratio")), name
    assert_floors_and_disk(report)
    assert set(report["targets"]) == TARGETS
    assert all(is_number(t["measured"]) and isinstance(t["met"], bool) for t in report["targets"].values())


def assert_floors_and_disk(report: dict) -> None:
    """The write floor wrote exactly the tiers' rows into each copy; the disk figures are sizes that add up."""
    write, rows = report["write_floor"], report["rows"]
    assert write["rows_per_tier"] == {tier: rows[tier] for tier in ("asin", "brand", "category")}
    assert write["rows"] == rows["asin"] + rows["brand"] + rows["category"]
    assert all(is_number(write[k]) and write[k] >= 0 for k in ("seconds", "rows_seconds", "index_seconds"))
    assert write["seconds"] == pytest.approx(write["rows_seconds"] + write["index_seconds"])
    full = report["full_refresh"]
    assert full["ratio_to_floors"] == pytest.approx(full["seconds"] / (report["floor"]["seconds"] + write["seconds"]))
    disk = report["disk"]
    assert disk["tiers_bytes"] > 0 and disk["samples"] >= 1
    # during a refresh the live tiers and their shadows exist side by side: at least the tiers' size at its peak
    assert disk["peak_during_refresh_bytes"] >= disk["tiers_bytes"] * 0.9


def assert_correct(report: dict) -> None:
    """What the benchmark checked on the way: every answer the same from both sides, every tier verified."""
    assert report["baseline"]["verifies"], "the hand-written method built tiers that do not add up"
    assert all(q["answers_match"] for q in report["dashboard"].values()), report["dashboard"]
    assert report["verify"] == {"ok": True, "mismatches": []}


CACHE_SETTINGS = {"mysql": "innodb_buffer_pool_size", "postgresql": "shared_buffers", "sqlite": "cache_size"}


def test_bench_end_to_end(db_url):
    jobs = 1 if db_url.get_backend_name() == "sqlite" else 2
    report = run_bench(small(db_url, jobs=jobs), echo=lambda _line: None)
    assert_report_shape(report)
    assert_correct(report)
    assert report["database"]["cache_setting"] == CACHE_SETTINGS[report["database"]["engine"]]
    assert report["full_refresh"]["jobs"] == jobs
    engine = create_engine(db_url)
    try:  # the database is left as summarizer wants it: our covering index, none of the baseline's
        names = {i["name"] for i in inspect(engine).get_indexes("financials")}
    finally:
        engine.dispose()
    assert "ix_financials_summarizer" in names and not names & {"idx_month_metric_marketplace", "idx_metric_month"}
    assert "full refresh" in render(report)


def test_the_wide_shape_measures_its_floor_refresh_and_month(tmp_path):
    """order_lines with three measures: the floor sums all three; no hand-written method or raw questions."""
    url = make_url(f"sqlite:///{tmp_path / 'wide.db'}")
    report = run_bench(small(url, shape=replace(SHAPE, wide=True)), echo=lambda _line: None)
    assert report["floor"]["sql"] == "SELECT COUNT(*), SUM(net_amount), SUM(quantity), SUM(fee_amount) FROM order_lines"
    assert report["rows"]["raw"] == SHAPE.rows and report["rows"]["asin"] > 0
    assert report["full_refresh"]["plan"].startswith("month chunks through the covering index")
    assert is_number(report["full_refresh"]["ratio_to_floor"]) and is_number(report["month"]["share_of_full"])
    assert "baseline" not in report and "dashboard" not in report
    assert_floors_and_disk(report)
    assert set(report["targets"]) == {"full_refresh_ratio_to_floor", "month_share_of_full", "peak_rss_bytes"}
    assert report["verify"] == {"ok": True, "mismatches": []}
    assert "COUNT(*), SUM(net_amount), SUM(quantity), SUM(fee_amount)" in render(report)


def test_script_on_sqlite_writes_the_json_and_reuses_the_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    out = tmp_path / "bench.json"
    common = [*BENCH, "--url", url, "--repeat", "1", "--summary-queries", "3",
              "--raw-queries", "1", "--json-out", str(out)]
    shape = ["--rows", str(SHAPE.rows), "--asins", "400", "--brands", "40", "--categories", "8", "--rows-per-key", "10"]
    first = subprocess.run(common + shape, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    assert "floor" in first.stdout and "one month" in first.stdout
    report = json.loads(out.read_text())
    assert_report_shape(report)
    assert_correct(report)
    assert report["generate"]["shape"]["rows_per_key"] == 10

    again = subprocess.run(common + ["--skip-generate"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "generate" not in json.loads(out.read_text())


def test_skip_baseline_and_the_tpch_shape(tmp_path):
    """--skip-baseline leaves the hand-written method out; --shape tpch: a tier 1 nearly as big as the raw table."""
    url = f"sqlite:///{tmp_path / 'tpch.db'}"
    out = tmp_path / "tpch.json"
    command = [*BENCH, "--url", url, "--rows", "20000", "--shape", "tpch", "--asins", "20000", "--repeat", "1",
               "--summary-queries", "3", "--raw-queries", "1", "--no-settle", "--skip-baseline", "--json-out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert "baseline" not in report and "hand-written" not in done.stdout
    assert report["compression"]["tier1_share_of_raw"] > 0.95
    assert report["generate"]["shape"]["skew"] == 1 and len(report["generate"]["shape"]["marketplaces"]) == 25
    assert_floors_and_disk(report)
    assert "write floor" in done.stdout and report["verify"]["ok"]


def test_refuses_to_replace_data_it_did_not_make(tmp_path):
    url = make_url(f"sqlite:///{tmp_path / 'user.db'}")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE financials (asin TEXT, marketplace TEXT, month TEXT, metric TEXT, value REAL)"))
        conn.execute(text("INSERT INTO financials VALUES ('B01', 'US', '2024-01-01', 'revenue', 1.5)"))
    with pytest.raises(UsageError, match="already holds 1 rows.*--skip-generate.*--replace"):
        run_bench(small(url), echo=lambda _line: None)
    with engine.connect() as conn:  # nothing changed
        assert conn.execute(text("SELECT COUNT(*) FROM financials")).scalar_one() == 1
        assert set(inspect(engine).get_table_names()) == {"financials"}
    engine.dispose()


@pytest.mark.parametrize("args, message", [
    (["--rows", "0"], "rows must be at least 1"),
    (["--repeat", "0"], "--repeat, --jobs, --summary-queries and --raw-queries must be at least 1"),
    (["--url", "not a url"], "is not a SQLAlchemy URL"),
])
def test_bad_arguments_name_what_is_wrong(tmp_path, args, message):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    result = subprocess.run([*BENCH, "--url", url, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "never.db").exists() or not inspect(create_engine(url)).get_table_names()


def test_help_describes_the_run():
    result = subprocess.run([*BENCH, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0
    for option in ("--url", "--rows", "--shape", "--skip-generate", "--json-out", "--repeat", "--jobs"):
        assert option in result.stdout


def test_settings_are_read_from_nowhere_but_the_url(tmp_path, monkeypatch):
    """A config.ini in the working directory must not rename the tables the benchmark generates."""
    (tmp_path / "config.ini").write_text("[source]\nfinancials_table = elsewhere\n")
    monkeypatch.chdir(tmp_path)
    assert load_config().source.financials_table == "elsewhere"
    report = run_bench(small(make_url(f"sqlite:///{tmp_path / 'b.db'}")), echo=lambda _line: None)
    assert report["rows"]["raw"] == SHAPE.rows


def test_explain_says_when_the_group_by_needs_a_temporary_table(db_url, app_factory):
    """Without the covering index the plan sorts or spills (PostgreSQL: as its planner expects at this
    work_mem); with it, the GROUP BY streams in index order. ``explain`` tells the two apart."""
    app = app_factory(db_url)
    engine = app.dialect.engine
    if app.dialect.name == "postgresql":  # the smallest work_mem, so 20,000 rows already spill
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER DATABASE {db_url.database} SET work_mem = '64kB'"))
        engine.dispose()
    with engine.connect() as conn:
        generate(conn, SHAPE)
    app.init()
    before = app.explain()
    assert not before["chunked"] and before["temporary"], before["explain"]
    app.init(source_indexes=True)
    sql, _ = bench_server(app.dialect).analyze_sql("financials")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(sql)).close()
    after = app.explain()
    assert after["chunked"] and not after["temporary"], after["explain"]


@pytest.mark.parametrize("plan, temporary", [
    (["Hash Left Join  (cost=1..2 rows=5 width=113)", "  ->  GroupAggregate  (cost=0.56..9658.79 rows=1 width=65)",
      "        ->  Index Only Scan using ix on financials f  (cost=0.56..6096.13 rows=1 width=32)"], False),
    (["  ->  HashAggregate  (cost=1757.00..1819.50 rows=5000 width=65)", "        Group Key: f.month"], False),
    (["  ->  HashAggregate  (cost=68641.34..71901.44 rows=116980 width=65)", "        Planned Partitions: 8"], True),
    (["  ->  Sort  (cost=360846.56..362096.46 rows=499959 width=65)", "        Sort Key: f.month, f.asin"], True),
])
def test_postgresql_plans_that_sort_or_spill(plan, temporary):
    from summarizer.dialects import PostgresDialect
    assert PostgresDialect.plan_uses_temporary(plan) is temporary


def test_online_index_build_is_timed_while_a_writer_inserts(server_url: URL) -> None:
    """benchmarks/onlineindex.py: the covering index is dropped, rebuilt by a real ``init`` while a writer
    writes, and the writer's rows are gone again afterwards (no timing asserted)."""
    from benchmarks.onlineindex import WRITER_ASIN, run
    from summarizer.facade import Summarizer
    from summarizer.model import covering_index_columns

    engine = create_engine(server_url)
    with engine.connect() as conn:
        generate(conn, SHAPE)
    url = server_url.render_as_string(hide_password=False)
    report = run(url, before=0.3, after=0.3, interval=0.005, echo=lambda line: None)
    assert report["init_exit"] == 0 and not report["errors"], report
    assert report["raw_rows"] == SHAPE.rows and report["init_seconds"] > 0
    assert all(report["writer"][phase]["inserts"] > 0 for phase in ("before", "during", "after"))
    assert report["writer_rows_deleted"] == sum(p["inserts"] for p in report["writer"].values())
    app = Summarizer(load_config(os.devnull, {"SUMMARIZER_DATABASE_URL": url}))
    columns = covering_index_columns(app.source)
    app.close()
    assert any(list(i["column_names"]) == columns for i in inspect(engine).get_indexes("financials"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM financials WHERE asin = :a"), {"a": WRITER_ASIN}).scalar() == 0
    engine.dispose()
