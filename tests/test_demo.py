"""`summarizer demo`: the embedded default builds a SQLite database whose tiers verify."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, text

from summarizer import Summarizer, load_config


def test_demo_builds_a_database_whose_tiers_verify(tmp_path):
    path = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")}
    result = subprocess.run([sys.executable, "-m", "summarizer", "demo", "--rows", "20000", "--path", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "every tier matches the raw data" in result.stdout
    assert "top brands by revenue" in result.stdout and "summarizer serve" in result.stdout
    app = Summarizer(load_config(tmp_path / "absent.ini", {"SUMMARIZER_DATABASE_URL": f"sqlite:///{path}"}))
    try:
        assert app.verify().ok
        status = app.status()
        assert status.last_success is not None and status.rows["asin"] > 0
        assert len(status.months) == 36
    finally:
        app.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT COUNT(*), SUM(value < 0), SUM(asin NOT IN (SELECT asin FROM products)) "
                                "FROM financials")).one()
    engine.dispose()
    assert raw[0] == 20000 and raw[1] > 0 and raw[2] > 0  # refunds and unassigned ASINs are there


def test_demo_rejects_a_bad_row_count(tmp_path):
    result = subprocess.run([sys.executable, "-m", "summarizer", "demo", "--rows", "5"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "--rows" in result.stderr
    assert not (tmp_path / "summarizer-demo.db").exists()
