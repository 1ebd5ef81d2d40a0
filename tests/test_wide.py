"""Real fact tables: a wide raw table (one column per measure), a date or timestamp instead of a month, a view.

The tiers are compared with an independent computation in Python from the same rows (``tests/oracle.py``:
each wide row unpivoted into one long row per measure that is not NULL, in the month of its date).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from sqlalchemy import Column, DateTime, MetaData, create_engine, inspect, select, text, update
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.dialects.postgresql import TIMESTAMP as PG_TIMESTAMP

from summarizer.months import add_months
from summarizer.synth import WIDE_SETTINGS, Shape, generate

from .clirun import invoke_env
from .databases import env_for
from .oracle import (
    MEASURES,
    WIDE,
    actual_tiers,
    assert_tiers_equal,
    expected_tiers,
    load_wide,
    reload_wide,
    source_tables,
    unpivoted,
    wide_dataset,
)
from .test_spark import MASTER, SPARK, spark  # noqa: F401 (spark: the session fixture, shared)


def tiers(app):
    return actual_tiers(app.dialect.engine, app.schema.live().by_name())


def check(app, data):
    assert_tiers_equal(expected_tiers(unpivoted(data)), tiers(app), exact=app.dialect.EXACT_DECIMAL)
    assert app.verify().ok


def change_months(data, months, seed):
    """Deletes, changed and NULLed measures and new rows, all inside ``months``."""
    rng = random.Random(seed)
    inside = [i for i, r in enumerate(data.rows) if r["order_date"].replace(day=1) in months]
    for i in sorted(rng.sample(inside, len(inside) // 4), reverse=True):
        del data.rows[i]
    for row in data.rows:
        if row["order_date"].replace(day=1) in months and rng.random() < 0.3:
            row.update(net_amount=None if rng.random() < 0.3 else Decimal(rng.randint(-500, 90_000)) / 100,
                       quantity=rng.randint(0, 9))
    for n in range(30):
        month = rng.choice(months)
        data.rows.append({"order_date": month.replace(day=1 + n % 28), "asin": f"A{rng.randint(0, 45):04d}",
                          "marketplace": rng.choice(["US", "FR"]), "net_amount": Decimal(n) - 7, "quantity": None,
                          "fee_amount": Decimal(n) / 4})


def test_a_wide_table_with_a_date_column_equals_the_oracle(db_url, app_factory):
    """Full refresh in one pass and in month chunks, --months and --changed; NULL measures give nothing."""
    app = app_factory(db_url, **WIDE)
    data = wide_dataset(seed=21, rows=500, months=4, huge=app.dialect.EXACT_DECIMAL)
    assert any(r["order_date"].day not in (1,) for r in data.rows)  # mid-month days
    tables = load_wide(app.dialect.engine, data)
    app.init()
    run = app.refresh()
    assert run.plan.startswith("one pass")
    check(app, data)
    expected = expected_tiers(unpivoted(data))
    assert run.rows == {tier: len(rows) for tier, rows in expected.items()}
    nulls = sum(r[c] is None for r in data.rows for _, c in MEASURES)
    with app.dialect.engine.connect() as conn:  # row_count counts the raw rows that gave a value
        counted = conn.execute(select(app.schema.live().asin.c.row_count)).scalars().all()
    assert sum(counted) == len(data.rows) * len(MEASURES) - nulls and nulls > 0

    app.init(source_indexes=True)
    run = app.refresh()
    assert run.plan.startswith("month chunks through the covering index") and "range of order_date" in run.plan
    check(app, data)

    changed = data.months[1:3]
    change_months(data, changed, seed=5)
    reload_wide(app.dialect.engine, tables, data)
    run = app.refresh(months=changed)
    assert run.months == ",".join(f"{m:%Y-%m}" for m in changed)
    check(app, data)
    report = app.verify(changed)
    assert report.ok and report.months == len(changed)
    assert report.raw_rows == sum(1 for r in unpivoted(data).rows if r["month"] in changed)

    month = data.months[3]
    with app.dialect.engine.begin() as conn:  # the application changes rows of one month, stamping them
        lines = tables["order_lines"]
        conn.execute(update(lines).where(lines.c.order_date >= month, lines.c.order_date < add_months(month, 1),
                                         lines.c.quantity.is_not(None))
                     .values(quantity=lines.c.quantity + 1, updated_at=text("CURRENT_TIMESTAMP")))
    for row in data.rows:
        if row["order_date"].replace(day=1) == month and row["quantity"] is not None:
            row["quantity"] += 1
    run = app.refresh(changed=True)
    assert run.months == f"{month:%Y-%m}"
    check(app, data)


def test_a_datetime_on_month_boundaries_counts_in_its_own_month(db_url, app_factory):
    """The long form with a DATETIME(3): 00:00:00.000 on the first and 23:59:59.999 on the last day of a month
    stay in that month, in one pass and in month chunks (the range [month, next month))."""
    engine = create_engine(db_url)
    metadata = MetaData()
    stamp_type = DateTime().with_variant(MYSQL_DATETIME(fsp=3), "mysql", "mariadb").with_variant(
        PG_TIMESTAMP(precision=3), "postgresql")
    tables = source_tables(metadata)
    financials = tables["financials"]
    financials.append_column(Column("booked_at", stamp_type, nullable=False))
    metadata.create_all(engine)
    data = wide_dataset(seed=4, rows=0, months=3, huge=False)
    moments = [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 31, 23, 59, 59, 999000), dt.datetime(2024, 2, 1),
               dt.datetime(2024, 2, 29, 23, 59, 59, 999000), dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 15, 12),
               dt.datetime(2024, 3, 31, 23, 59, 59, 999000)]
    rng = random.Random(3)
    data.rows = [{"asin": f"A{rng.randint(0, 39):04d}", "marketplace": rng.choice(["US", "DE"]),
                  "month": moment.date().replace(day=1), "booked_at": moment, "metric": rng.choice(["revenue", "cogs"]),
                  "value": Decimal(rng.randint(-999, 99_999)) / 100} for moment in moments for _ in range(12)]
    floats = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        conn.execute(tables["categories"].insert(), [{"category_id": c, "name": "c"} for c in data.categories])
        conn.execute(tables["brands"].insert(), [{"brand_id": b, "category_id": c} for b, c in data.brands.items()])
        conn.execute(tables["products"].insert(), [{"asin": a, "brand_id": b} for a, b in data.products.items()])
        conn.execute(financials.insert(), [{**r, "month": dt.date(2000, 1, 1), "value": float(r["value"]) if floats
                                            else r["value"]} for r in data.rows])  # month: not read
        kept = conn.execute(select(financials.c.booked_at).order_by(financials.c.booked_at.desc())).scalars().first()
    engine.dispose()
    assert str(kept).startswith("2024-03-31 23:59:59.999")  # the column keeps the milliseconds
    app = app_factory(db_url, source_date_column="booked_at")
    for indexes in (False, True):
        app.init(source_indexes=indexes)
        app.refresh()
        assert_tiers_equal(expected_tiers(data), tiers(app), exact=app.dialect.EXACT_DECIMAL)
        assert app.verify().ok
    assert {m for (m, *_rest) in tiers(app)["category"]} == {dt.date(2024, m, 1) for m in (1, 2, 3)}
    run = app.refresh(months=[dt.date(2024, 2, 1)])
    assert run.status == "succeeded" and app.verify().ok


def test_a_date_that_is_no_date_is_refused(db_url, app_factory):
    """NULL (and MariaDB's zero dates, which sort before their month's first day, outside its range): refresh and
    verify exit 1 naming the table, the column and examples, through the index and without it; tiers untouched."""
    engine = create_engine(db_url)
    load_wide(engine, wide_dataset(seed=6, rows=120, months=3, huge=False), nullable_date=True)
    engine.dispose()
    env = env_for(db_url, **WIDE)
    for command in (["init", "--source-indexes"], ["refresh"]):
        assert invoke_env(env, *command).returncode == 0
    app = app_factory(db_url, **WIDE)
    before = tiers(app)
    mysql = app.dialect.name == "mysql"
    bad = ["NULL", "'2024-02-00'", "'0000-00-00'"] if mysql else ["NULL"]
    with app.dialect.engine.begin() as conn:
        if mysql:
            conn.execute(text("SET SESSION sql_mode = ''"))  # lets MariaDB store its zero dates
        for literal in bad:
            conn.execute(text("INSERT INTO order_lines (order_date, asin, marketplace, net_amount, updated_at) "
                              f"VALUES ({literal}, 'A0001', 'US', 5, CURRENT_TIMESTAMP)"))
    for indexed in (True, False):
        if not indexed:
            with app.dialect.engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_order_lines_summarizer" + (" ON order_lines" if mysql else "")))
        for command in (["refresh"], ["refresh", "--months", "2024-02"], ["verify"])[: 3 if indexed else 1]:
            result = invoke_env(env, *command)
            assert result.returncode == 1, (indexed, command, result.stderr)
            assert f"the raw table order_lines has {len(bad)} row(s) whose order_date is not a date" in result.stderr
            for literal in bad:
                assert literal.strip("'") in result.stderr, (indexed, literal, result.stderr)
    assert tiers(app) == before


def test_a_timestamp_counts_in_the_month_its_session_time_zone_shows(server_url, app_factory):
    """23:30 UTC on the last day of a month is the next month's first morning in Tokyo: a TIMESTAMP (MariaDB) or
    timestamptz (PostgreSQL) counts in the month of the session's time zone, in month chunks and in verify."""
    engine = create_engine(server_url)
    mysql = engine.dialect.name == "mysql"
    with engine.begin() as conn:
        for table in ("categories", "brands", "products"):
            source_tables(MetaData())[table].create(conn)
        conn.execute(text(f"CREATE TABLE sales (sold_at {'TIMESTAMP NULL' if mysql else 'timestamptz'}, "
                          "asin VARCHAR(16), marketplace VARCHAR(8), amount DECIMAL(18,4))"))
        if mysql:
            conn.execute(text("SET SESSION time_zone = '+00:00'"))
        conn.execute(text("INSERT INTO sales VALUES (:at, 'A0001', 'US', :amount)"),
                      [{"at": f"2024-0{m}-{d} 23:30:00{'' if mysql else '+00'}", "amount": m}
                       for m, d in ((1, 31), (2, 29), (1, 15))])
        if not mysql:
            conn.execute(text(f'ALTER DATABASE "{server_url.database}" SET timezone = \'Asia/Tokyo\''))
    engine.dispose()
    tokyo = server_url.update_query_dict({"init_command": "SET time_zone = '+09:00'"}) if mysql else server_url
    app = app_factory(tokyo, source_financials_table="sales", source_date_column="sold_at",
                      source_measures="revenue:amount")
    app.init(source_indexes=True)
    run = app.refresh()
    assert run.plan.startswith("month chunks")
    months = {key[0]: value[-2] for key, value in tiers(app)["category"].items()}
    assert months == {dt.date(2024, 1, 1): 1, dt.date(2024, 2, 1): 1, dt.date(2024, 3, 1): 2}, months
    assert app.verify().ok


def test_a_chunk_of_a_date_column_reads_its_range_through_the_index(server_url, app_factory):
    """EXPLAIN: one month of the date column is an index range, not a scan (MariaDB and PostgreSQL)."""
    app = app_factory(server_url, **{f"source_{k}": v for k, v in WIDE_SETTINGS.items()})
    with app.dialect.engine.connect() as conn:  # 36 months of synth's order lines: a month is 1/36 of the table
        generate(conn, Shape(rows=40_000, wide=True))
    app.init(source_indexes=True)
    with app.dialect.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE TABLE order_lines" if app.dialect.name == "mysql" else "VACUUM ANALYZE order_lines"))
    explained = app.explain()
    plan = "\n".join(explained["explain"])
    assert explained["chunked"] and not explained["temporary"], plan
    if app.dialect.name == "mysql":
        rows = [dict(zip(explained["explain"][0].split(" | "), line.split(" | "), strict=False))
                for line in explained["explain"][1:]]
        raw = next(r for r in rows if r["table"] == "f")
        assert raw["type"] == "range" and raw["key"] == "ix_order_lines_summarizer", plan
        assert "Using index" in raw["Extra"], plan
    else:  # an index-only scan, or (a table this small) a bitmap scan of the index: its range either way
        scan = next(line for line in explained["explain"] if "ix_order_lines_summarizer" in line)
        condition = explained["explain"][explained["explain"].index(scan) + 1]
        january = "Index Cond: ((order_date >= '2023-01-01'::date) AND (order_date < '2023-02-01'::date))"
        assert january in condition, plan
        assert "Seq Scan on order_lines" not in plan, plan


def test_a_view_that_joins_a_key_in_is_a_source(db_url, app_factory):
    """The marketplace lives in another table: a view joins it in. init --source-indexes says the view cannot be
    indexed (exit 2, the index printed, nothing created); refresh and verify work on it."""
    engine = create_engine(db_url)
    data = wide_dataset(seed=8, rows=300, months=3, huge=False)
    load_wide(engine, data)
    stores = {"US": 1, "UK": 2, "DE": 3, "JP": 4}
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE stores (store_id INTEGER PRIMARY KEY, marketplace VARCHAR(8) NOT NULL)"))
        conn.execute(text("INSERT INTO stores VALUES (:id, :m)"), [{"id": i, "m": m} for m, i in stores.items()])
        conn.execute(text("ALTER TABLE order_lines ADD COLUMN store_id INTEGER"))
        conn.execute(text("UPDATE order_lines SET store_id = (SELECT store_id FROM stores "
                          "WHERE stores.marketplace = order_lines.marketplace)"))
        conn.execute(text("UPDATE order_lines SET marketplace = 'XX'"))  # only the store says it now
        conn.execute(text("CREATE VIEW order_lines_v AS SELECT o.order_date, o.asin, s.marketplace, o.net_amount, "
                          "o.quantity, o.fee_amount, o.updated_at FROM order_lines o JOIN stores s "
                          "ON s.store_id = o.store_id"))
    before = sorted(inspect(engine).get_table_names())
    engine.dispose()
    env = env_for(db_url, **{**WIDE, "source_financials_table": "order_lines_v"})
    result = invoke_env(env, "init", "--source-indexes")
    assert result.returncode == 2, result.stderr
    assert "order_lines_v is a view, and a view cannot be indexed" in result.stderr, result.stderr
    assert "CREATE INDEX ix_order_lines_v_summarizer ON" in result.stderr, result.stderr
    assert "(order_date, asin, marketplace, net_amount, quantity, fee_amount)" in result.stderr, result.stderr
    engine = create_engine(db_url)
    assert sorted(inspect(engine).get_table_names()) == before
    engine.dispose()
    assert invoke_env(env, "init").returncode == 0
    result = invoke_env(env, "refresh")
    assert result.returncode == 0, result.stderr
    assert "is a view" in result.stderr and "--source-indexes" not in result.stderr, result.stderr
    assert invoke_env(env, "verify").returncode == 0
    app = app_factory(db_url, **{**WIDE, "source_financials_table": "order_lines_v"})
    assert_tiers_equal(expected_tiers(unpivoted(data)), tiers(app), exact=app.dialect.EXACT_DECIMAL)


def test_measures_and_date_columns_that_cannot_serve_are_refused(db_url):
    """Exit 2 naming the setting, before anything is written."""
    engine = create_engine(db_url)
    load_wide(engine, wide_dataset(seed=3, rows=40, months=2, huge=False))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE order_lines ADD COLUMN sku VARCHAR(16)"))
        conn.execute(text("ALTER TABLE order_lines ADD COLUMN ratio DOUBLE PRECISION"))
        conn.execute(text("ALTER TABLE order_lines ADD COLUMN shipped VARCHAR(10)"))
        conn.execute(text("ALTER TABLE order_lines ADD COLUMN tiny DECIMAL(20,6)"))
    before = sorted(inspect(engine).get_table_names())
    engine.dispose()
    exact = db_url.get_backend_name() != "sqlite"
    cases = [({"source_measures": "revenue"}, "measures", "expected metric:column pairs"),
             ({"source_measures": "revenue:net_amount, revenue:quantity"}, "measures", "named twice"),
             ({"source_measures": "revenue:net_amt"}, "measures", "has no column net_amt"),
             ({"source_measures": "units:sku"}, "measures", "not a number")]
    if exact:  # SQLite keeps dates as text and sums REAL
        cases += [({"source_date_column": "shipped"}, "date_column", "not a DATE, DATETIME or TIMESTAMP"),
                  ({"source_measures": "ratio:ratio"}, "measures", "binary floating point"),
                  ({"source_measures": "revenue:net_amount, tiny:tiny"}, "value_scale", "order_lines.tiny has 6")]
    for change, key, words in cases:
        env = env_for(db_url, **{**WIDE, **change})
        verify = [["verify"]] if key != "value_scale" else []
        for command in (["init"], ["init", "--source-indexes"], ["refresh"], ["refresh", "--months", "2024-01"],
                        *verify):
            result = invoke_env(env, *command)
            assert result.returncode == 2, (change, command, result.stderr)
            assert f"key '{key}'" in result.stderr and words in result.stderr, (change, command, result.stderr)
    engine = create_engine(db_url)
    assert sorted(inspect(engine).get_table_names()) == before
    engine.dispose()


@pytest.mark.spark
@pytest.mark.usefixtures("spark")
def test_spark_computes_a_wide_table_with_a_date_column_as_the_oracle(mysql_url, app_factory):
    """The database computes each row's month, Spark unpivots the measures: full refresh and --months (on MariaDB,
    as tests/test_spark.py; the month's SQL is the database engine's, tested on every engine above)."""
    app = app_factory(mysql_url, **WIDE, **SPARK)
    data = wide_dataset(seed=31, rows=400, months=3)
    tables = load_wide(app.dialect.engine, data)
    app.init(source_indexes=True)
    run = app.refresh()
    assert run.plan.startswith(f"spark ({MASTER})") and "one JDBC partition per month" in run.plan
    assert_tiers_equal(expected_tiers(unpivoted(data)), tiers(app), exact=True)
    changed = data.months[1:2]
    change_months(data, changed, seed=9)
    reload_wide(app.dialect.engine, tables, data)
    app.refresh(months=changed)
    assert_tiers_equal(expected_tiers(unpivoted(data)), tiers(app), exact=True)
    assert app.verify().ok
