"""What a new user meets in the first hour: the commands that print what an operator copies, the exit
codes, verify's report, the logs, config discovery and the small things.

Most run in-process through click's CliRunner (``clirun.in_process``; a subprocess costs seconds); what
needs a real process (the render module's --help, serve's uvicorn lines) starts one.
"""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from filelock import FileLock
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from summarizer import DISTRIBUTION, __version__
from summarizer.config import example_ini, load_config

from .clirun import in_process
from .databases import env_for, make_app
from .oracle import load, random_dataset
from .setups import load_and_refresh
from .test_api_http import _wait_until_up, free_port

UNREACHABLE = "mysql+pymysql://root@127.0.0.1:1/test"


def invoke(*args: str, url: URL | str | None = None, **env: str) -> Result:
    """``summarizer ARGS`` in-process, with no SUMMARIZER_* variables but ``env`` (and the URL)."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SUMMARIZER_")}
    if url is not None:
        clean["SUMMARIZER_DATABASE_URL"] = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return in_process(args, {**clean, **env}, catch_exceptions=False)


@pytest.fixture
def refreshed(tmp_path: Path) -> URL:
    """A SQLite database with source rows, initialised and refreshed."""
    url = make_url(f"sqlite:///{tmp_path / 'first.db'}")
    app = make_app(url, tmp_path)
    load_and_refresh(app, seed=15, rows=300, huge=False)
    app.close()
    return url


def execute(url: URL, sql: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


# --- 15.1 and 15.2: what an installed package prints ------------------------------------------------
def test_version_names_the_distribution():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output == f"summarizer {__version__} (distribution {DISTRIBUTION})\n"
    assert DISTRIBUTION == "summarizer-tiers"


def test_config_example_prints_the_annotated_example_that_loads(tmp_path):
    result = invoke("config", "example")
    assert result.exit_code == 0 and result.output == example_ini()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(result.output)
    assert parser["database"]["url"] == "" and "# SQLAlchemy URL" in result.output
    (tmp_path / "config.ini").write_text(result.output)
    assert load_config(tmp_path / "config.ini", {}).source.financials_table == "financials"


def test_sql_is_rendered_for_the_users_config(tmp_path):
    config = tmp_path / "mine.ini"
    config.write_text("[source]\nfinancials_table = raw_fin\n[summary]\nasin_table = t1_asin\n")
    result = invoke("--config", str(config), "sql", "--dialect", "postgresql")
    assert result.exit_code == 0, result.output
    for name in ("schema.sql", "refresh_full.sql", "refresh_month.sql", "verify.sql"):
        assert f"-- ==== {name} ====" in result.output
    assert "FROM raw_fin" in result.output and "CREATE TABLE t1_asin" in result.output
    assert "FROM financials " not in result.output and str(config) in result.output
    one = invoke("sql", "--dialect", "mysql", "--file", "schema.sql")
    assert one.exit_code == 0 and one.output.count("CREATE TABLE") == 5  # three tiers, the runs, the data version
    assert invoke("sql").exit_code == 2 and invoke("sql", "--dialect", "oracle").exit_code == 2


def test_schedule_prints_cron_and_systemd_for_this_installation(tmp_path):
    config = tmp_path / "c.ini"
    config.write_text("[schedule]\nfull = 30 4 * * *\ntimezone = Europe/Berlin\n")
    cron = invoke("--config", str(config), "schedule", "--print-cron", "--metrics-file", str(tmp_path / "m.prom"))
    assert cron.exit_code == 0, cron.output
    line = next(x for x in cron.output.splitlines() if x.startswith("30 4 * * * "))
    argv = shlex.split(line)[5:]
    assert Path(argv[0]).name == "summarizer" and Path(argv[0]).exists()
    assert argv[1:3] == ["--config", str(config.resolve())] and argv[-1] == str((tmp_path / "m.prom").resolve())
    units = invoke("--config", str(config), "schedule", "--print-systemd")
    assert units.exit_code == 0, units.output
    assert "OnCalendar=*-*-* 04:30:00 Europe/Berlin" in units.output
    assert f"ExecStart={argv[0]} --config {config.resolve()} refresh" in units.output
    config.write_text("[schedule]\nfull = */5 * * * *\n")
    odd = invoke("--config", str(config), "schedule", "--print-systemd")
    assert odd.exit_code == 2 and "key 'full': the timer takes a fixed time of day" in odd.output


def test_the_render_module_never_writes_on_help_or_outside_a_checkout(tmp_path):
    module = [sys.executable, "-m", "summarizer.render"]
    help_ = subprocess.run([*module, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "usage: python -m summarizer.render" in help_.stdout
    bare = subprocess.run(module, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "not a summarizer checkout" in bare.stderr
    assert list(tmp_path.iterdir()) == []


# --- 15.5 and 15.6: verify's report and the exit codes ----------------------------------------------
def test_verify_reports_one_line_per_month_the_repair_command_and_json_fields(refreshed):
    execute(refreshed, "UPDATE financials_summary_monthly_category SET value = value + 1 WHERE month = '2024-02-01'")
    execute(refreshed, "UPDATE financials_summary_monthly_asin_marketplace SET row_count = row_count + 2 "
                       "WHERE rowid = (SELECT MIN(rowid) FROM financials_summary_monthly_asin_marketplace "
                       "WHERE month = '2024-04-01')")
    result = invoke("verify", url=refreshed)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "verified 4 months x" in lines[0] and "2 months disagree" in lines[0]
    assert lines[1].startswith("  2024-02: raw ") and "tier 3 (category)" in lines[1]
    assert "rows (difference +" in lines[1]
    assert lines[2].startswith("  2024-04: raw ") and "tier 1 (asin)" in lines[2] and "+2 rows)" in lines[2]
    assert lines[3].startswith("repair: summarizer refresh --months 2024-02,2024-04") and len(lines) == 4
    report = json.loads(invoke("verify", "--json", url=refreshed).output)
    assert report["repair"] == "summarizer refresh --months 2024-02,2024-04"
    assert [m["month"] for m in report["months_disagreeing"]] == ["2024-02", "2024-04"]
    assert report["months_disagreeing"][1]["tier_totals"]["tier 1 (asin)"]["rows_difference"] == 2
    first = report["mismatches"][0]
    assert set(first) == {"tier", "month", "metric", "raw_value", "raw_rows", "tier_value", "tier_rows"}
    repair = shlex.split(lines[3].removeprefix("repair: ").split("   ")[0])[1:]
    assert invoke(*repair, "--quiet", url=refreshed).exit_code == 0
    ok = invoke("verify", "--months", "2024-02", url=refreshed)
    assert ok.exit_code == 0 and ok.output.startswith("verified 1 month x ")


@pytest.mark.parametrize("case, code", [
    ("ok", 0), ("mismatch", 1), ("bad_config", 2), ("missing_source_table", 2), ("missing_source_column", 2),
    ("unreachable", 69), ("lock_held", 75),
])
def test_each_exit_code(refreshed, tmp_path, case, code):
    env: dict[str, str] = {}
    args = ["verify"]
    url: URL | str = refreshed
    if case == "mismatch":
        execute(refreshed, "UPDATE financials_summary_monthly_brand SET value = value - 1")
    elif case == "bad_config":
        env["SUMMARIZER_REFRESH_JOBS"] = "many"
    elif case == "missing_source_table":
        env["SUMMARIZER_SOURCE_FINANCIALS_TABLE"] = "nowhere"
        args = ["refresh"]
    elif case == "missing_source_column":
        env["SUMMARIZER_SOURCE_VALUE_COLUMN"] = "amount"
        args = ["init", "--source-indexes"]
    elif case == "unreachable":
        url = UNREACHABLE
    if case == "lock_held":
        with FileLock(f"{refreshed.database}.summarizer-lock", timeout=5):
            result = invoke("refresh", url=url, **env)
    else:
        result = invoke(*args, url=url, **env)
    assert result.exit_code == code, result.output
    if code == 2:
        assert "Error:" in result.output and ("[source]" in result.output or "key 'jobs'" in result.output)


# --- 15.7: logs and timestamps ----------------------------------------------------------------------
def test_log_format_after_the_command_and_every_line_carries_event_and_run_id(refreshed):
    result = in_process(["refresh", "--log-format", "json", "--json"],
                        {"SUMMARIZER_DATABASE_URL": str(refreshed)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    run = json.loads(result.stdout)
    assert lines and all("event" in line and line["run_id"] == run["id"] for line in lines), lines
    assert any(line["message"].startswith("swapped in:") for line in lines)
    for key in ("started_at", "finished_at"):
        assert dt.datetime.fromisoformat(run[key]).utcoffset() == dt.timedelta(0), run[key]
    status = json.loads(invoke("status", "--json", url=refreshed).output)
    assert dt.datetime.fromisoformat(status["last_success"]["finished_at"]).utcoffset() == dt.timedelta(0)


@pytest.mark.slow
def test_serve_log_format_json_makes_uvicorns_lines_json_and_the_api_gives_offsets(refreshed, tmp_path):
    port = free_port()
    env = {**env_for(refreshed), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "summarizer", "serve", "--port", str(port), "--log-format", "json"]
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(base, server)
            health = httpx.get(f"{base}/api/health").json()
            time.sleep(0.5)
        finally:
            server.terminate()
            server.wait(timeout=20)
    lines = (tmp_path / "serve.log").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line, uvicorn's included, is one JSON object
    assert any(p["logger"] == "uvicorn.access" and "/api/health" in p["message"] for p in parsed), lines
    assert any(p["logger"] == "uvicorn.error" for p in parsed), lines
    finished = health["data"]["last_success"]["finished_at"]
    assert dt.datetime.fromisoformat(finished).utcoffset() == dt.timedelta(0)


# --- 15.8: the small things -------------------------------------------------------------------------
def test_status_durations_by_size_and_max_age_only_with_check(refreshed):
    check = invoke("status", "--check", "--max-age", "0s", url=refreshed)
    assert check.exit_code == 1
    assert "ago, more than the allowed 0ms" in check.output and "0.0h" not in check.output
    alone = invoke("status", "--max-age", "5s", url=refreshed)
    assert alone.exit_code == 2 and "--max-age only applies with --check" in alone.output


def test_refresh_of_months_without_raw_rows_warns_naming_them(refreshed):
    result = invoke("refresh", "--months", "2052-01,2024-01", url=refreshed)
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "no raw rows" in line]
    assert len(warnings) == 1 and "no raw rows for 2052-01:" in warnings[0] and "2024-01" not in warnings[0]


def test_explain_has_column_headers_on_mysql(mysql_url, tmp_path):
    app = make_app(mysql_url, tmp_path)
    load(app.dialect.engine, random_dataset(rows=50))
    app.init(source_indexes=True)
    app.close()
    result = invoke("explain", url=mysql_url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("  "))
    assert lines[header].split(" | ")[:3] == ["  id", "select_type", "table"]
    assert "the database's plan:" in result.output and "through index" in result.output


def test_explain_on_postgresql_says_what_the_plan_does(postgres_url, tmp_path):
    app = make_app(postgres_url, tmp_path)
    load(app.dialect.engine, random_dataset(rows=50))
    app.init(source_indexes=True)
    plan = app.explain()
    app.close()
    summary = plan["summary"]
    nodes = " ".join(plan["explain"])
    assert summary.split(":")[0].split(" over ")[0] in nodes
    if "HashAggregate" in nodes:
        assert "hash table, not in the index's order" in summary
    elif "GroupAggregate" in nodes and "Sort" not in nodes:
        assert "streams the groups" in summary


# --- 15.9: config discovery -------------------------------------------------------------------------
def test_summarizer_config_names_the_file_and_unknown_variables_are_named(refreshed, tmp_path, caplog):
    config = tmp_path / "from-env.ini"
    config.write_text(f"[database]\nurl = {refreshed}\n")
    found = invoke("status", SUMMARIZER_CONFIG=str(config), SUMMARIZER_REFRESH_JOB="4")
    assert found.exit_code == 0 and "last success: run 1" in found.stdout
    assert "environment variable SUMMARIZER_REFRESH_JOB matches no setting and is ignored; " \
           "did you mean SUMMARIZER_REFRESH_JOBS?" in caplog.messages
    missing = invoke("status", SUMMARIZER_CONFIG=str(tmp_path / "nope.ini"))
    assert missing.exit_code == 2 and "nope.ini: file not found" in missing.output
    caplog.clear()
    quiet = invoke("status", url=refreshed, SUMMARIZER_TEST_ANYTHING="x", SUMMARIZER_CONFIG=str(config))
    assert quiet.exit_code == 0 and not [m for m in caplog.messages if "matches no setting" in m]


# --- 15.4: the test suite's skip summary ------------------------------------------------------------
@pytest.mark.slow
def test_skips_are_summarised_one_line_per_missing_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_TEST_")}
    env["PATH"] = str(tmp_path)  # no docker on it either: both servers are missing
    tests = Path(__file__).parent / "test_init.py"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    summary = [line for line in result.stdout.splitlines() if " skipped: " in line]
    assert len(summary) == 2 and all("is not set" in line for line in summary), result.stdout
    assert "SKIPPED [" not in result.stdout
