"""Monitoring: ``status --check``, the Prometheus metrics file, and JSON log lines, through the real command."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url

from summarizer.metrics import Outcome, exposition, write_file

from .clirun import invoke, run_cli_env
from .databases import env_for, make_app
from .oracle import expected_tiers, load, random_dataset

BLOCKER = "financials_summary_monthly_category__new"  # a view where the refresh builds a shadow table


def summarizer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli_env(env, *args)


@pytest.fixture
def loaded(db_url, tmp_path):
    """(url, app, data): the source tables filled and init run."""
    app = make_app(db_url, tmp_path)
    data = random_dataset(seed=12, rows=400, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    yield db_url, app, data
    app.close()


def execute(url, statement: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text file, parsed by prometheus_client: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and family.documentation, family.name
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return found


def unix(value: dt.datetime) -> float:
    return value.replace(tzinfo=dt.UTC).timestamp()


# --- status --check ---------------------------------------------------------------------------
def test_status_check_fails_on_stale_and_failed_and_passes_on_fresh(loaded):
    url, app, _ = loaded
    env = env_for(url)
    never = summarizer("status", "--check", env=env)
    assert never.returncode == 1 and "CHECK FAILED: no refresh has succeeded yet" in never.stderr

    assert summarizer("refresh", "--quiet", env=env).returncode == 0
    fresh = summarizer("status", "--check", "--max-age", "26h", env=env)
    assert fresh.returncode == 0 and "CHECK FAILED" not in fresh.stderr

    last = app.runs.last_success()
    with app.dialect.engine.begin() as conn:        # the last success finished two days ago
        conn.execute(update(app.runs.table).where(app.runs.table.c.id == last.id)
                     .values(finished_at=last.finished_at - dt.timedelta(hours=48)))
    stale = summarizer("status", "--check", "--max-age", "26h", env=env)
    assert stale.returncode == 1
    assert "CHECK FAILED: the last successful refresh finished 48.0h ago, more than the allowed 26.0h" in stale.stderr
    assert summarizer("status", "--check", "--max-age", "3d", env=env).returncode == 0

    execute(url, f"CREATE VIEW {BLOCKER} AS SELECT 1 AS x")
    assert summarizer("refresh", "--quiet", env=env).returncode == 1
    failed = summarizer("status", "--check", "--max-age", "3d", env=env)
    assert failed.returncode == 1
    assert f"CHECK FAILED: the last run (run {last.id + 1} (full)" in failed.stderr and "failed" in failed.stderr

    execute(url, f"DROP VIEW {BLOCKER}")
    assert summarizer("refresh", "--quiet", env=env).returncode == 0
    assert summarizer("status", "--check", "--max-age", "1h", env=env).returncode == 0


# --- the metrics file -------------------------------------------------------------------------
def test_metrics_file_holds_the_figures_of_the_run(loaded, tmp_path):
    url, app, data = loaded
    path = tmp_path / "summarizer.prom"
    result = summarizer("refresh", "--quiet", "--metrics-file", str(path), env=env_for(url))
    assert result.returncode == 0, result.stderr
    run = app.runs.latest(1)[0]
    got = samples(path)
    expected_rows = {tier: len(rows) for tier, rows in expected_tiers(data).items()}
    assert run.rows == expected_rows
    assert {tier: got[("summarizer_tier_rows", (("tier", tier),))] for tier in expected_rows} == expected_rows
    assert got[("summarizer_last_run_success", ())] == 1
    assert {s: got[("summarizer_last_run_status", (("status", s),))] for s in ("succeeded", "failed", "interrupted")} \
        == {"succeeded": 1, "failed": 0, "interrupted": 0}
    assert got[("summarizer_last_run_id", ())] == run.id
    assert got[("summarizer_last_run_info", (("mode", "full"), ("version", run.version)))] == 1
    assert got[("summarizer_last_success_timestamp_seconds", ())] == unix(run.finished_at)
    assert abs(got[("summarizer_last_run_timestamp_seconds", ())] - unix(run.finished_at)) < 5
    steps = {labels[0][1]: v for (name, labels), v in got.items() if name == "summarizer_last_run_step_seconds"}
    assert set(steps) == set(run.steps) >= {"prepare", "tier1", "tier2", "tier3", "swap"}
    assert 0 <= sum(steps.values()) <= got[("summarizer_last_run_duration_seconds", ())]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".summarizer.prom")] == []  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644


def sqlite_loaded(tmp_path: Path):
    url = make_url(f"sqlite:///{tmp_path / 'm.db'}")
    app = make_app(url, tmp_path)
    load(app.dialect.engine, random_dataset(seed=2, rows=200, huge=False))
    app.init()
    return url, app


def test_a_failed_run_writes_failed_and_keeps_the_last_success(tmp_path):
    url, app = sqlite_loaded(tmp_path)
    path, env = tmp_path / "summarizer.prom", env_for(url)
    assert summarizer("refresh", "-q", "--metrics-file", str(path), env=env).returncode == 0
    success = app.runs.last_success()
    execute(url, f"CREATE VIEW {BLOCKER} AS SELECT 1 AS x")
    assert summarizer("refresh", "-q", "--metrics-file", str(path), env=env).returncode == 1
    failed = app.runs.latest(1)[0]
    got = samples(path)
    assert failed.status == "failed" and failed.id == success.id + 1
    assert got[("summarizer_last_run_success", ())] == 0
    assert got[("summarizer_last_run_status", (("status", "failed"),))] == 1
    assert got[("summarizer_last_run_id", ())] == failed.id
    assert got[("summarizer_last_success_timestamp_seconds", ())] == unix(success.finished_at)
    assert got[("summarizer_tier_rows", (("tier", "brand"),))] == success.rows["brand"]
    steps = {labels[0][1] for (name, labels) in got if name == "summarizer_last_run_step_seconds"}
    assert steps == set(failed.steps) and "prepare" in steps
    app.close()


def test_an_unreachable_database_writes_failed_and_keeps_the_last_success_from_the_file(tmp_path):
    url, app = sqlite_loaded(tmp_path)
    path = tmp_path / "summarizer.prom"
    assert summarizer("refresh", "-q", "--metrics-file", str(path), env=env_for(url)).returncode == 0
    success = app.runs.last_success()
    app.close()
    unreachable = env_for(make_url("mysql+pymysql://root@127.0.0.1:1/test"))
    result = summarizer("refresh", "-q", "--metrics-file", str(path), env=unreachable)
    assert result.returncode == 69 and "cannot connect" in result.stderr
    got = samples(path)
    assert got[("summarizer_last_run_status", (("status", "failed"),))] == 1
    assert ("summarizer_last_run_id", ()) not in got
    assert got[("summarizer_last_success_timestamp_seconds", ())] == unix(success.finished_at)


def test_a_run_skipped_for_the_lock_leaves_the_metrics_file_alone(tmp_path):
    url, app = sqlite_loaded(tmp_path)
    path = tmp_path / "summarizer.prom"
    assert summarizer("refresh", "-q", "--metrics-file", str(path), env=env_for(url)).returncode == 0
    before = path.read_text()
    with FileLock(f"{tmp_path / 'm.db'}.summarizer-lock", timeout=5):
        result = summarizer("refresh", "-q", "--metrics-file", str(path), env=env_for(url))
    assert result.returncode == 75 and "another refresh holds the lock" in result.stderr
    assert path.read_text() == before
    app.close()


def test_a_metrics_file_in_a_missing_directory_is_a_usage_error_and_nothing_runs(tmp_path):
    url, app = sqlite_loaded(tmp_path)
    result = invoke(url, "refresh", "--metrics-file", str(tmp_path / "no" / "m.prom"))
    assert result.returncode == 2
    assert f"--metrics-file: directory {tmp_path / 'no'} does not exist" in result.stderr
    result = invoke(url, "refresh", "--metrics-file", str(tmp_path))
    assert result.returncode == 2 and "is a directory" in result.stderr
    assert app.runs.latest() == []
    app.close()


def test_write_atomic_moves_a_complete_file_into_place(tmp_path):
    path = tmp_path / "summarizer.prom"
    path.write_text("old complete content\n")
    with path.open() as reader:                     # a collector that opened the old file mid-write
        outcome = Outcome(mode="full", status="succeeded", finished_at=1.7e9, duration=3.5,
                          steps={"tier1": 1.25}, last_success_at=1.7e9, rows={"asin": 10})
        write_file(path, outcome)
        assert reader.read() == "old complete content\n"   # it still reads the old file whole: a new inode
    assert path.read_text() == exposition(outcome)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["summarizer.prom"]


def test_exposition_parses_and_leaves_out_what_is_unknown():
    text_ = exposition(Outcome(mode="changed", status="interrupted", finished_at=1.7e9, duration=0.5))
    names = {f.name for f in text_string_to_metric_families(text_)}
    assert "summarizer_last_success_timestamp_seconds" not in names and "summarizer_last_run_id" not in names
    assert 'summarizer_last_run_status{status="interrupted"} 1' in text_


# --- JSON log lines ---------------------------------------------------------------------------
def test_log_format_json_writes_one_object_per_line(tmp_path):
    url, app = sqlite_loaded(tmp_path)
    result = summarizer("--log-format", "json", "refresh", env=env_for(url))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["message"].startswith("swapped in:") for line in lines)
    assert dt.datetime.fromisoformat(lines[0]["time"]).utcoffset() == dt.timedelta(0)
    bad = invoke(url, "--log-format", "xml", "refresh")
    assert bad.returncode == 2 and "'xml' is not one of 'text', 'json'" in bad.stderr
    app.close()
