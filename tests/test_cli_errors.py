"""Bad input through the command: a clear message, the right exit code, nothing changed.

Most cases run in-process (``clirun.invoke``); one per kind of exit runs ``python -m summarizer``
itself (``clirun.run_cli``): a configuration error (2) and a failed check (1).
"""

from __future__ import annotations

import logging
import sys

import pytest
from sqlalchemy import create_engine, inspect, text

from summarizer import secrets

from .clirun import invoke, run_cli
from .oracle import load, random_dataset


def tables(url):
    engine = create_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_missing_raw_table(db_url):
    assert invoke(db_url, "init").returncode == 0
    before = tables(db_url)
    result = invoke(db_url, "refresh")
    assert result.returncode == 2  # the configuration names a table that is not there
    assert "table financials does not exist" in result.stderr and "[source]" in result.stderr
    assert tables(db_url) == before


def test_missing_source_column(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=20))
    engine.dispose()
    before = tables(db_url)
    result = invoke(db_url, "init", "--source-indexes", source_value_column="amount")
    assert result.returncode == 2
    assert "table financials has no column amount" in result.stderr
    assert tables(db_url) == before


def test_refresh_before_init_says_run_init(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=20))
    engine.dispose()
    result = invoke(db_url, "refresh")
    assert result.returncode == 1 and "run `summarizer init` first" in result.stderr


def test_unreachable_database(tmp_path):
    result = invoke("mysql+pymysql://root@127.0.0.1:1/test", "status")
    assert result.returncode == 69
    assert "cannot connect to mysql+pymysql://root@127.0.0.1:1/test" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_config_file(tmp_path, db_url):
    config = tmp_path / "bad.ini"
    config.write_text("[refresh]\nretry_attempts = lots\n")
    result = run_cli(db_url, "--config", str(config), "refresh")
    assert result.returncode == 2
    assert f"{config}, section [refresh], key 'retry_attempts': expected a whole number" in result.stderr
    assert tables(db_url) == []


def test_explicit_config_file_that_does_not_exist(tmp_path, db_url):
    result = invoke(db_url, "--config", str(tmp_path / "nope.ini"), "status")
    assert result.returncode == 2 and "file not found" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["refresh", "--months", "2024-13"], "--months: expected a month as YYYY-MM"),
    (["refresh", "--months", "2024-03..2024-01"], "ends before it starts"),
    (["refresh", "--since", "yesterday"], "--since: expected a timestamp"),
    (["refresh", "--months", "2024-01", "--changed"], "choose one of --months, --since and --changed"),
    (["status", "--check", "--max-age", "soon"], "--max-age: expected a duration"),
    (["verify", "--months", "24-1"], "expected a month as YYYY-MM"),
])
def test_malformed_arguments(db_url, args, expected):
    assert invoke(db_url, "init").returncode == 0
    before = tables(db_url)
    result = invoke(db_url, *args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert tables(db_url) == before


def test_verify_exits_1_and_prints_one_line_per_month_and_the_repair(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=200))
    assert invoke(db_url, "init").returncode == 0
    assert invoke(db_url, "refresh", "--quiet").returncode == 0
    ok = run_cli(db_url, "verify")
    assert ok.returncode == 0 and "every tier matches" in ok.stdout
    with engine.begin() as conn:
        conn.execute(text("UPDATE financials_summary_monthly_category SET value = value + 1 "
                          "WHERE month = '2024-02-01' AND metric = 'revenue'"))
    engine.dispose()
    bad = run_cli(db_url, "verify")
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert "1 month disagrees with the raw data" in lines[0]
    assert lines[1].startswith("  2024-02: raw ") and "tier 3 (category)" in lines[1] and "metrics revenue" in lines[1]
    assert "(difference +" in lines[1] and "+0 rows)" in lines[1]
    assert lines[2].startswith("repair: summarizer refresh --months 2024-02") and len(lines) == 3


def test_an_in_process_run_leaves_logging_secrets_and_hooks_as_they_were(db_url):
    """What ``invoke`` relies on: a command run in this process leaks nothing into the next test."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level, set(secrets._remembered), sys.excepthook)
    url = db_url.set(password="in-process-secret") if db_url.get_backend_name() != "sqlite" else db_url
    invoke(url, "--log-format", "json", "-v", "status")
    invoke(url, "refresh", "--months", "2024-13")
    assert (list(root.handlers), root.level, set(secrets._remembered), sys.excepthook) == before
