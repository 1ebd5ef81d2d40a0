"""Bad input through the real command: a clear message, the right exit code, nothing changed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect, text

from .databases import env_for
from .oracle import load, random_dataset


def summarizer(*args, env, cwd=None):
    return subprocess.run([sys.executable, "-m", "summarizer", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def tables(url):
    engine = create_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_missing_raw_table(db_url):
    env = env_for(db_url)
    assert summarizer("init", env=env).returncode == 0
    before = tables(db_url)
    result = summarizer("refresh", env=env)
    assert result.returncode == 2  # the configuration names a table that is not there
    assert "table financials does not exist" in result.stderr and "[source]" in result.stderr
    assert tables(db_url) == before


def test_missing_source_column(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=20))
    engine.dispose()
    env = env_for(db_url, source_value_column="amount")
    before = tables(db_url)
    result = summarizer("init", "--source-indexes", env=env)
    assert result.returncode == 2
    assert "table financials has no column amount" in result.stderr
    assert tables(db_url) == before


def test_refresh_before_init_says_run_init(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=20))
    engine.dispose()
    result = summarizer("refresh", env=env_for(db_url))
    assert result.returncode == 1 and "run `summarizer init` first" in result.stderr


def test_unreachable_database(tmp_path):
    env = env_for(create_engine("mysql+pymysql://root@127.0.0.1:1/test").url)
    result = summarizer("status", env=env)
    assert result.returncode == 69
    assert "cannot connect to mysql+pymysql://root@127.0.0.1:1/test" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_config_file(tmp_path, db_url):
    config = tmp_path / "bad.ini"
    config.write_text("[refresh]\nretry_attempts = lots\n")
    result = summarizer("--config", str(config), "refresh", env=env_for(db_url))
    assert result.returncode == 2
    assert f"{config}, section [refresh], key 'retry_attempts': expected a whole number" in result.stderr
    assert tables(db_url) == []


def test_explicit_config_file_that_does_not_exist(tmp_path, db_url):
    result = summarizer("--config", str(tmp_path / "nope.ini"), "status", env=env_for(db_url))
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
    env = env_for(db_url)
    assert summarizer("init", env=env).returncode == 0
    before = tables(db_url)
    result = summarizer(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert tables(db_url) == before


def test_verify_exits_1_and_prints_one_line_per_month_and_the_repair(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=200))
    env = env_for(db_url)
    assert summarizer("init", env=env).returncode == 0
    assert summarizer("refresh", "--quiet", env=env).returncode == 0
    ok = summarizer("verify", env=env)
    assert ok.returncode == 0 and "every tier matches" in ok.stdout
    with engine.begin() as conn:
        conn.execute(text("UPDATE financials_summary_monthly_category SET value = value + 1 "
                          "WHERE month = '2024-02-01' AND metric = 'revenue'"))
    engine.dispose()
    bad = summarizer("verify", env=env)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert "1 month disagrees with the raw data" in lines[0]
    assert lines[1].startswith("  2024-02: raw ") and "tier 3 (category)" in lines[1] and "metrics revenue" in lines[1]
    assert "(difference +" in lines[1] and "+0 rows)" in lines[1]
    assert lines[2].startswith("repair: summarizer refresh --months 2024-02") and len(lines) == 3
