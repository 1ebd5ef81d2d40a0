"""`summarizer demo`: the embedded default builds a SQLite database whose tiers verify."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from summarizer import Summarizer, load_config

from .clirun import invoke, run_cli


def test_demo_builds_a_database_whose_tiers_verify(tmp_path):
    path = tmp_path / "demo.db"
    result = run_cli(None, "demo", "--rows", "20000", "--path", str(path), cwd=tmp_path)
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
    result = invoke(None, "demo", "--rows", "5", cwd=tmp_path)
    assert result.returncode == 2 and "--rows" in result.stderr
    assert not (tmp_path / "summarizer-demo.db").exists()
