"""Table names that would destroy data, names too long, and a summary type that would round: refused, nothing changed.

Each clash goes through the real command (``python -m summarizer``) on every engine and must leave
every table, source and summary, with exactly the rows it had.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Column, Date, MetaData, Numeric, String, Table, create_engine, insert, inspect, select, text

from summarizer import facade as app_module
from summarizer import refresh as refresh_module
from summarizer.errors import TableClash

from .clirun import invoke_env
from .databases import env_for
from .oracle import load, random_dataset

DEFAULT_BRAND = "financials_summary_monthly_brand"


def summarizer(*args, env):
    return invoke_env(env, *args)


def contents(url):
    """Every table with all its rows, sorted: what must not change."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted(tuple(str(v) for v in row) for row in conn.execute(select(table)))
                    for name, table in metadata.tables.items()}
    finally:
        engine.dispose()


@pytest.fixture
def refreshed(db_url):
    """A working setup: source data, tiers initialised and refreshed once."""
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=120, huge=False))
    engine.dispose()
    env = env_for(db_url)
    for command in ("init", "refresh"):
        result = summarizer(command, env=env)
        assert result.returncode == 0, result.stderr
    return db_url


CLASHES = {
    "summary_asin_table=financials": ({"summary_asin_table": "financials"}, "asin_table", "financials_table"),
    "summary_category_table=products": ({"summary_category_table": "products"}, "category_table", "products_table"),
    "summary_brand_table=brands": ({"summary_brand_table": "brands"}, "brand_table", "brands_table"),
    "two tiers, one table": ({"summary_asin_table": DEFAULT_BRAND}, "brand_table", "asin_table"),
    "summary_runs_table=categories": ({"summary_runs_table": "categories"}, "runs_table", "categories_table"),
    "a shadow name is a source table": ({"source_products_table": f"{DEFAULT_BRAND}__old"}, "brand_table",
                                        "products_table"),
}


@pytest.mark.parametrize("clash", CLASHES, ids=list(CLASHES))
def test_a_summary_name_that_clashes_changes_nothing(refreshed, clash):
    settings, key, other = CLASHES[clash]
    before = contents(refreshed)
    env = env_for(refreshed, **settings)
    commands = [["refresh"], ["init"]] + ([["refresh", "--months", "2024-01"]] if "financials" in clash else [])
    for command in commands:
        result = summarizer(*command, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"key '{key}'" in result.stderr and other in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert contents(refreshed) == before


def test_a_user_table_under_an_old_name_is_never_dropped(refreshed):
    engine = create_engine(refreshed)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {DEFAULT_BRAND}__old (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
        conn.execute(text(f"INSERT INTO {DEFAULT_BRAND}__old VALUES (1, 'keep me')"))
    engine.dispose()
    before = contents(refreshed)
    result = summarizer("refresh", env=env_for(refreshed))
    assert result.returncode == 2, result.stderr
    assert f"{DEFAULT_BRAND}__old exists with another shape" in result.stderr
    assert contents(refreshed) == before


def test_the_swap_itself_refuses_a_table_of_another_shape(refreshed, app_factory, monkeypatch):
    """With the first check skipped, the swap's own check still keeps a source table from being replaced."""
    monkeypatch.setattr(app_module, "check_names", lambda *a, **k: None)
    monkeypatch.setattr(refresh_module, "check_before_write", lambda *a, **k: None)
    app = app_factory(refreshed, summary_asin_table="financials")
    before = contents(refreshed)
    with pytest.raises(TableClash) as caught:
        app.refresh()
    assert "the swap would rename or drop" in str(caught.value) and "financials exists" in str(caught.value)
    after = contents(refreshed)
    assert after["financials"] == before["financials"]
    assert "financials__old" not in after


def test_leftovers_of_another_shape_are_not_dropped_even_after_the_first_check(refreshed, app_factory, monkeypatch):
    app = app_factory(refreshed)
    with app.dialect.engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {DEFAULT_BRAND}__new (note VARCHAR(20))"))
        conn.execute(text(f"INSERT INTO {DEFAULT_BRAND}__new VALUES ('keep me')"))
    before = contents(refreshed)
    monkeypatch.setattr(refresh_module, "check_before_write", lambda *a, **k: None)
    with pytest.raises(TableClash, match="leftovers"):
        app.refresh()
    after = contents(refreshed)
    assert after[f"{DEFAULT_BRAND}__new"] == [("keep me",)]
    assert {k: v for k, v in after.items() if k != "summarizer_runs"} == \
        {k: v for k, v in before.items() if k != "summarizer_runs"}


def test_a_name_too_long_for_the_database_is_refused_before_anything_is_created(server_url):
    engine = create_engine(server_url)
    load(engine, random_dataset(rows=20, huge=False))
    before = sorted(inspect(engine).get_table_names())
    engine.dispose()
    result = summarizer("init", env=env_for(server_url, summary_asin_table="a" * 60))
    assert result.returncode == 2, result.stderr
    assert "key 'asin_table'" in result.stderr and "at most" in result.stderr
    engine = create_engine(server_url)
    assert sorted(inspect(engine).get_table_names()) == before
    engine.dispose()


def _raw_with_scale_6(url):
    engine = create_engine(url)
    metadata = MetaData()
    financials = Table("financials", metadata, Column("asin", String(16)), Column("marketplace", String(8)),
                       Column("month", Date), Column("metric", String(32)), Column("value", Numeric(20, 6)))
    tables = load(engine, random_dataset(rows=5, huge=False))
    tables["financials"].drop(engine)
    financials.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(financials), [{"asin": "A0001", "marketplace": "US", "month": dt.date(2024, 1, 1),
                                           "metric": "revenue", "value": Decimal("0.000410")}])
    engine.dispose()


@pytest.fixture
def scale_6_url(server_url):
    _raw_with_scale_6(server_url)
    return server_url


def test_a_raw_scale_wider_than_the_summary_is_refused(scale_6_url):
    before = contents(scale_6_url)
    for command in ("init", "refresh"):
        result = summarizer(command, env=env_for(scale_6_url))
        assert result.returncode == 2, result.stderr
        assert "key 'value_scale'" in result.stderr and "6 decimal places" in result.stderr, result.stderr
    assert contents(scale_6_url) == before
    env = env_for(scale_6_url, summary_value_scale="6")
    for command in ("init", "refresh"):
        assert summarizer(command, env=env).returncode == 0
    engine = create_engine(scale_6_url)
    with engine.connect() as conn:
        value = conn.execute(text("SELECT value FROM financials_summary_monthly_category")).scalar()
    engine.dispose()
    assert Decimal(str(value)) == Decimal("0.000410")


def test_a_summary_too_narrow_for_sums_is_refused(scale_6_url):
    result = summarizer("init", env=env_for(scale_6_url, summary_value_scale="6", summary_value_precision="20"))
    assert result.returncode == 2 and "key 'value_precision'" in result.stderr, result.stderr


def test_a_view_as_raw_table_gets_advice_that_can_work(db_url):
    engine = create_engine(db_url)
    load(engine, random_dataset(rows=60, huge=False))
    with engine.begin() as conn:
        conn.execute(text("CREATE VIEW financials_v AS SELECT * FROM financials"))
    before = sorted(inspect(engine).get_table_names())
    engine.dispose()
    env = env_for(db_url, source_financials_table="financials_v")
    result = summarizer("init", "--source-indexes", env=env)
    assert result.returncode == 2, result.stderr
    assert "financials_v is a view, and a view cannot be indexed" in result.stderr, result.stderr
    assert "CREATE INDEX" in result.stderr and "Traceback" not in result.stderr
    if db_url.get_backend_name() == "postgresql":
        assert " ON financials (" in result.stderr  # the catalogue names the base table
    engine = create_engine(db_url)
    assert sorted(inspect(engine).get_table_names()) == before
    engine.dispose()
    assert summarizer("init", env=env).returncode == 0
    result = summarizer("refresh", "--months", "2024-01", env=env)
    assert result.returncode == 0, result.stderr
    assert "is a view" in result.stderr and "--source-indexes" not in result.stderr, result.stderr
    result = summarizer("refresh", env=env)
    assert result.returncode == 0, result.stderr
    assert "is a view" in result.stderr and "--source-indexes" not in result.stderr, result.stderr
