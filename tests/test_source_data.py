"""Raw rows the rollup cannot sum as they are: bad months, duplicate keys. Refused with a message naming
table, column and an example, through the real command, with the tiers left as they were."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from summarizer.serve.read import Reader

from .clirun import invoke_env
from .databases import env_for
from .oracle import load, random_dataset, source_tables

TIERS = ("financials_summary_monthly_asin_marketplace", "financials_summary_monthly_brand",
         "financials_summary_monthly_category")


def summarizer(*args, env):
    return invoke_env(env, *args)


def tier_rows(url):
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine, only=TIERS)
        with engine.connect() as conn:
            return {t: sorted(tuple(str(v) for v in r) for r in conn.execute(select(metadata.tables[t])))
                    for t in TIERS}
    finally:
        engine.dispose()


@pytest.fixture
def refreshed(db_url):
    """Source data whose month column allows NULL, with the covering index, refreshed once."""
    engine = create_engine(db_url)
    tables = source_tables()
    tables["financials"].c.month.nullable = True
    tables["financials"].metadata.create_all(engine)
    load(engine, random_dataset(rows=120, huge=False))  # the tables exist: only the rows are added
    engine.dispose()
    env = env_for(db_url)
    for command in (["init", "--source-indexes"], ["refresh"]):
        result = summarizer(*command, env=env)
        assert result.returncode == 0, result.stderr
    return db_url


def bad_values(url):
    """The bad month values each engine can hold, as SQL literals."""
    backend = create_engine(url).dialect.name
    values = ["'2024-02-15'", "NULL"]
    if backend in ("mysql", "mariadb"):
        values += ["'0000-00-00'", "'2024-02-00'"]
    if backend == "sqlite":
        values += ["'2024-02-00'"]
    return values


def insert_month(url, literal):
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            conn.execute(text("SET SESSION sql_mode = ''"))  # lets MariaDB store its zero dates
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          f"VALUES ('A0001', 'US', {literal}, 'revenue', 5)"))
    engine.dispose()


def test_every_command_refuses_a_month_that_is_not_a_first_day(refreshed):
    for literal in bad_values(refreshed):
        insert_month(refreshed, literal)
        before = tier_rows(refreshed)
        env = env_for(refreshed)
        shown = "NULL" if literal == "NULL" else literal.strip("'")
        for command in (["refresh"], ["refresh", "--months", "2024-02"], ["verify"], ["status"]):
            result = summarizer(*command, env=env)
            assert result.returncode == 1, (literal, command, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr, result.stderr
            message = result.stderr
            assert "raw table financials" in message and "month is not the first day" in message, message
            assert shown in message, (shown, message)
        assert tier_rows(refreshed) == before
        engine = create_engine(refreshed)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM financials WHERE month IS NULL OR "
                              "month NOT IN ('2024-01-01', '2024-02-01', '2024-03-01', '2024-04-01')"))
        engine.dispose()
    assert summarizer("verify", env=env_for(refreshed)).returncode == 0


def test_the_message_counts_the_rows(refreshed):
    for _ in range(3):
        insert_month(refreshed, "'2024-02-15'")
    result = summarizer("refresh", env=env_for(refreshed))
    assert result.returncode == 1 and "has 3 row(s) whose month" in result.stderr, result.stderr


def test_duplicate_products_rows_are_named(db_url):
    engine = create_engine(db_url)
    with engine.begin() as conn:  # the user's products table has no unique key
        conn.execute(text("CREATE TABLE products (asin VARCHAR(16) NOT NULL, brand_id BIGINT NULL)"))
    load(engine, random_dataset(rows=120, huge=False))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO products (asin, brand_id) VALUES ('A0001', 2)"))
    engine.dispose()
    env = env_for(db_url)
    assert summarizer("init", env=env).returncode == 0
    result = summarizer("refresh", env=env)
    assert result.returncode == 1, result.stderr
    assert "source table products has 2 rows for asin 'A0001'" in result.stderr, result.stderr
    assert "unique key" in result.stderr


def test_raw_keys_that_differ_in_case_only_are_explained(mysql_url):
    engine = create_engine(mysql_url)
    load(engine, random_dataset(rows=60, huge=False))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE financials MODIFY asin VARCHAR(16) CHARACTER SET utf8mb4 "
                          "COLLATE utf8mb4_bin NOT NULL"))
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) VALUES "
                          "('a0001', 'US', '2024-01-01', 'revenue', 1), ('A0001', 'US', '2024-01-01', 'revenue', 2)"))
    engine.dispose()
    env = env_for(mysql_url)
    assert summarizer("init", env=env).returncode == 0
    result = summarizer("refresh", env=env)
    assert result.returncode == 1, result.stderr
    assert "differ only in letter case" in result.stderr and "Duplicate entry" in result.stderr, result.stderr


def test_a_dangling_category_id_is_unassigned_like_a_dangling_brand_id(db_url, app_factory):
    """Brand 6's category 555 has no categories row: its rows count as unassigned (0), in every tier and in
    status's unassigned share, as the rows of product brand 999 (no brands row) do."""
    app = app_factory(db_url)
    data = random_dataset(rows=300, huge=False)
    assert data.brands[6] == 555 and 555 not in data.categories
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    live = app.schema.live()
    with app.dialect.engine.connect() as conn:
        brand_categories = dict(conn.execute(select(live.brand.c.brand_id, live.brand.c.category_id).distinct()).all())
        categories = set(conn.execute(select(live.category.c.category_id).distinct()).scalars())
    assert brand_categories[6] == 0 and brand_categories.get(999, 0) == 0
    assert 555 not in categories and 0 in categories
    dangling_rows = sum(1 for r in data.rows if data.products.get(r["asin"]) == 6)
    assert dangling_rows > 0
    share = app.status().unassigned["rows_without_category"]
    unassigned = sum(1 for r in data.rows if (data.products.get(r["asin"]) or 0) in (0, 4, 6, 999))
    assert share == round(unassigned / len(data.rows), 6)


def test_the_read_api_lists_a_month_once_whatever_day_tier_rows_carry(db_url, app_factory):
    """Tiers written before months were checked may hold a row dated 2024-02-15: /api/meta lists 2024-02 once."""
    app = app_factory(db_url)
    load(app.dialect.engine, random_dataset(rows=60, months=3, huge=False))
    app.init()
    app.refresh()
    category = app.schema.live().category
    with app.dialect.engine.begin() as conn:
        conn.execute(category.insert().values(month=dt.date(2024, 2, 15), category_id=0, metric="revenue", value=1,
                                              row_count=1, refreshed_at=dt.datetime(2024, 3, 1)))
    assert Reader(app).meta()["months"] == ["2024-01", "2024-02", "2024-03"]
