"""The synthetic source data: sizes, ranges, every edge case the rollup must survive, determinism.

Runs on SQLite always, and on MariaDB / PostgreSQL through the ``db_url`` fixture (a scratch database
per test, skipped with the reason when no server is configured).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL

from summarizer import synth
from summarizer.errors import SummarizerError, UsageError
from summarizer.synth import Shape, create_source_tables, generate

SHAPE = Shape(rows=3000, months=12, first_month=dt.date(2024, 3, 1))


@pytest.fixture
def conn(db_url: URL) -> Iterator[Connection]:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def scalar(conn: Connection, sql: str) -> Any:
    return conn.execute(text(sql)).scalar_one()


def as_date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def test_counts_and_ranges(conn: Connection) -> None:
    counts = generate(conn, SHAPE)
    assert counts == {table: scalar(conn, f"SELECT COUNT(*) FROM {table}") for table in synth.SOURCE_TABLES}
    assert abs(counts["financials"] - SHAPE.rows) <= SHAPE.rows // 100
    assert counts["categories"] == SHAPE.category_count and counts["brands"] == SHAPE.brand_count
    assert scalar(conn, "SELECT COUNT(DISTINCT asin) FROM financials") > SHAPE.asin_count * 0.9
    months = [as_date(m) for (m,) in conn.execute(text("SELECT DISTINCT month FROM financials"))]
    assert all(m.day == 1 and SHAPE.first_month <= m <= SHAPE.last_month for m in months)
    assert len(months) == SHAPE.months
    assert {m for (m,) in conn.execute(text("SELECT DISTINCT marketplace FROM financials"))} == set(SHAPE.marketplaces)
    assert {m for (m,) in conn.execute(text("SELECT DISTINCT metric FROM financials"))} == set(SHAPE.metrics)
    assert abs(scalar(conn, "SELECT MAX(ABS(value)) FROM financials")) < 1_000_000


EDGE_CASES = {
    "asin without product": "SELECT COUNT(DISTINCT f.asin) FROM financials f"
    " LEFT JOIN products p ON p.asin = f.asin WHERE p.asin IS NULL",
    "product without brand": "SELECT COUNT(*) FROM products WHERE brand_id IS NULL",
    "product with dangling brand": "SELECT COUNT(*) FROM products p"
    " LEFT JOIN brands b ON b.brand_id = p.brand_id WHERE p.brand_id IS NOT NULL AND b.brand_id IS NULL",
    "brand without category": "SELECT COUNT(*) FROM brands WHERE category_id IS NULL",
    "negative value": "SELECT COUNT(*) FROM financials WHERE value < 0",
    "zero value": "SELECT COUNT(*) FROM financials WHERE value = 0",
    "duplicate key": "SELECT COUNT(*) FROM (SELECT asin FROM financials"
    " GROUP BY asin, marketplace, month, metric HAVING COUNT(*) > 1) d",
}


def test_every_edge_case_is_present(conn: Connection) -> None:
    generate(conn, SHAPE)
    found = {case: scalar(conn, sql) for case, sql in EDGE_CASES.items()}
    assert all(found.values()), found
    negative_share = found["negative value"] / SHAPE.rows
    assert 0.03 < negative_share < 0.07
    assert scalar(conn, "SELECT COUNT(*) FROM products") < SHAPE.asin_count * 0.98


def test_same_seed_same_data_other_seed_other_data(conn: Connection) -> None:
    def checksum(shape: Shape) -> tuple[Any, ...]:
        create_source_tables(conn, drop=True)
        generate(conn, shape)
        sql = ("SELECT COUNT(*), SUM(value), COUNT(DISTINCT asin),"
               " (SELECT SUM(brand_id) FROM products), (SELECT SUM(category_id) FROM brands) FROM financials")
        return tuple(conn.execute(text(sql)).one())

    first = checksum(SHAPE)
    assert checksum(SHAPE) == first
    assert checksum(Shape(rows=SHAPE.rows, months=SHAPE.months, first_month=SHAPE.first_month, seed=7)) != first


def test_refuses_to_add_to_filled_tables(conn: Connection) -> None:
    generate(conn, Shape(rows=100))
    with pytest.raises(SummarizerError, match="already holds rows"):
        generate(conn, Shape(rows=100))
    create_source_tables(conn, drop=True)
    assert generate(conn, Shape(rows=100))["financials"] == 100


def test_the_same_data_on_every_engine(conn: Connection, tmp_path: Any) -> None:
    """The hash is plain integer arithmetic, so each engine makes the same rows (SQLite: as REAL)."""
    generate(conn, SHAPE)
    reference = create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    with reference.connect() as sqlite:
        generate(sqlite, SHAPE)
        expected = _rows(sqlite)
    reference.dispose()
    assert _rows(conn) == expected


def _rows(conn: Connection) -> list[tuple[str, str, dt.date, str, float]]:
    sql = "SELECT asin, marketplace, month, metric, value FROM financials ORDER BY id"
    return [(a, mp, as_date(m), mt, round(float(v), 4)) for a, mp, m, mt, v in conn.execute(text(sql))]


def test_mysql8_row_source_makes_the_same_rows(mysql_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """MySQL 8 has no SEQUENCE engine; its digit cross join must number the rows the same way."""
    engine = create_engine(mysql_url)
    with engine.connect() as conn:
        generate(conn, SHAPE)
        expected = _rows(conn)
        create_source_tables(conn, drop=True)
        monkeypatch.setitem(synth.DIALECTS, "mariadb", synth.DIALECTS["mysql"])
        generate(conn, SHAPE)
        assert _rows(conn) == expected
    engine.dispose()


def test_default_sizes_scale_with_rows() -> None:
    big = Shape(rows=5_000_000)
    assert (big.asin_count, big.brand_count, big.category_count) == (50_000, 3_333, 333)
    assert (Shape(rows=10).asin_count, Shape(rows=10).brand_count, Shape(rows=10).category_count) == (50, 5, 3)
    assert Shape(months=36).last_month == dt.date(2025, 12, 1)
    assert len(Shape().metrics) == 10 and {"revenue", "refunds", "returns"} <= set(Shape().metrics)


@pytest.mark.parametrize("bad", [
    {"rows": 0},
    {"months": 0},
    {"asins": 0},
    {"first_month": dt.date(2024, 1, 15)},
    {"marketplaces": ()},
    {"marketplaces": ("US", "US")},
    {"metrics": ("revenue'; DROP TABLE financials; --",)},
    {"marketplaces": ("TOO_LONG_MP",)},
])
def test_bad_shapes_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Shape(**bad)
