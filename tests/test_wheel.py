"""The built wheel, installed into a fresh venv in an empty directory, does the README's first steps.

Nothing from the checkout is on hand there: the config example, the SQL and the cron/systemd files
come out of the installed package. The wheel's dependencies come from the package index (pip's cache
makes that about 20 s; the wheel build about 12 s), so the test is marked slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from summarizer.config import example_ini

from .databases import make_app
from .oracle import expected_tiers, load, random_dataset

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``summarizer`` console script of the wheel, installed with its dependencies into a fresh venv."""
    where = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(where / "dist")], cwd=where)
    wheels = list((where / "dist").glob("summarizer_tiers-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:  # the benchmark, which truncates tables, stays in the repository
        names = wheel.namelist()
    assert not [n for n in names if n.startswith("benchmarks/") or "bench" in n.rsplit("/", 1)[-1]], names
    assert any(n.startswith("summarizer/serve/static/pages/") for n in names), names  # the pages ship
    run([sys.executable, "-m", "venv", str(where / "venv")], cwd=where)
    pip = [str(where / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, str(wheels[0])], cwd=where)
    return where / "venv" / "bin" / "summarizer"


def test_the_installed_wheel_prints_what_operators_copy_and_runs_the_first_steps(installed, mysql_url, tmp_path):
    app = make_app(mysql_url, tmp_path)
    data = random_dataset(seed=15, rows=300)
    load(app.dialect.engine, data)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_") and k != "PYTHONPATH"}
    summarizer = [str(installed)]

    assert "(distribution summarizer-tiers)" in run([*summarizer, "--version"], empty, env)
    example = run([*summarizer, "config", "example"], empty, env)
    assert example == example_ini()
    (empty / "config.ini").write_text(example)     # the README's `summarizer config example > config.ini`
    for dialect in ("mysql", "postgresql"):
        sql = run([*summarizer, "sql", "--dialect", dialect], empty, env)
        assert "-- ==== refresh_month.sql ====" in sql and "CREATE TABLE financials_summary_monthly_brand" in sql
    cron = run([*summarizer, "schedule", "--print-cron"], empty, env)
    assert f"0 3 * * * {installed} --config {empty / 'config.ini'} refresh --quiet" in cron
    units = run([*summarizer, "schedule", "--print-systemd"], empty, env)
    assert f"ExecStart={installed} --config {empty / 'config.ini'} refresh" in units and "OnCalendar=" in units

    env["SUMMARIZER_DATABASE_URL"] = mysql_url.render_as_string(hide_password=False)
    assert "statement(s) run" in run([*summarizer, "init", "--source-indexes"], empty, env)
    assert "succeeded" in run([*summarizer, "refresh"], empty, env)
    assert "every tier matches the raw data" in run([*summarizer, "verify"], empty, env)
    rows = {tier: len(r) for tier, r in expected_tiers(data).items()}
    status = run([*summarizer, "status"], empty, env)
    assert f"rows: asin {rows['asin']}, brand {rows['brand']}, category {rows['category']}" in status
    assert sorted(p.name for p in empty.iterdir()) == ["config.ini"]
    app.close()
