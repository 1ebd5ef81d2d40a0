"""A randomised workload of source-table changes for the follower's tests and benchmark.

:func:`seed_data` loads a starting dataset (hundreds of ASINs, products without a brand, ASINs without
a product, a brand without a category, a brand whose category has no row); :class:`Workload` then
changes it with multi-row SQL statements, each its own transaction: inserts, value updates, updates
that move rows between months, ASINs and marketplaces, deletes, one bulk delete of a whole month, and
dimension moves (products changing brand or losing it, new and deleted products, brands changing or
losing their category, new and deleted brands and categories), some in the same transaction as raw
changes. :func:`expected` computes the tiers the final tables should give with ``oracle.py``, in plain
Python, from the rows read back.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, text

from .oracle import Dataset, TierRows, expected_tiers, load, source_tables

MARKETPLACES = ["US", "UK", "DE", "JP", "FR"]
METRICS = ["revenue", "units", "refunds", "cogs"]
MONTHS = [dt.date(2024, m, 1) for m in range(1, 13)]
ASINS = [f"B{n:05d}" for n in range(400)]
BRANDS = list(range(1, 31))
CATEGORIES = [100, 101, 102, 103, 104]


def _value(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(-500_000, 5_000_000)) / 10_000


def starting_dataset(seed: int, rows: int) -> Dataset:
    rng = random.Random(seed)
    data = Dataset(MONTHS, categories=list(CATEGORIES))
    # brand 7: no category; brand 9: a category with no categories row
    data.brands = {b: None if b == 7 else 999 if b == 9 else rng.choice(CATEGORIES) for b in BRANDS}
    for i, asin in enumerate(ASINS[:-40]):  # the last 40 ASINs have no product row
        data.products[asin] = None if i % 17 == 0 else rng.choice(BRANDS)
    data.rows = [_raw_row(rng) for _ in range(rows)]
    return data


def _raw_row(rng: random.Random) -> dict[str, Any]:
    return {"asin": rng.choice(ASINS[: 60 if rng.random() < 0.4 else len(ASINS)]),  # a few hot ASINs
            "marketplace": rng.choice(MARKETPLACES), "month": rng.choice(MONTHS), "metric": rng.choice(METRICS),
            "value": _value(rng)}


def seed_data(engine: Engine, seed: int = 1, rows: int = 20_000) -> Dataset:
    data = starting_dataset(seed, rows)
    load(engine, data)
    return data


class Workload:
    """Random changes to the source tables; :attr:`raw_changes` counts the raw rows they changed."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine, self.rng = engine, random.Random(seed)
        self.raw_changes = 0
        self.statements = 0
        self.month_deleted = False
        with engine.connect() as conn:
            self.max_id = int(conn.execute(text("SELECT MAX(id) FROM financials")).scalar() or 0)

    def run(self, changes: int, between: Callable[[], None] | None = None, rate: float = 0.0) -> None:
        """Statements until at least ``changes`` raw rows changed; ``between`` is called after each;
        ``rate``: at most that many raw changes per second (0: as fast as the server takes them)."""
        start, first = time.monotonic(), self.raw_changes
        while self.raw_changes < changes:
            with self.engine.begin() as conn:
                self.step(conn, changes)
            self.statements += 1
            if between is not None:
                between()
            if rate:
                time.sleep(max(0.0, start + (self.raw_changes - first) / rate - time.monotonic()))

    def step(self, conn: Connection, target: int) -> None:
        rng = self.rng
        if not self.month_deleted and self.raw_changes > target * 0.6:
            self.month_deleted = True
            self._raw(conn, "DELETE FROM financials WHERE month = :m", m=rng.choice(MONTHS[3:9]))
            return
        roll = rng.random()
        if roll < 0.25:
            self._insert(conn, rng.randint(50, 400))
        elif roll < 0.80:
            self._update_or_delete(conn)
        else:
            self._dimension(conn)
            if rng.random() < 0.5:  # raw rows in the same transaction as the move
                self._update_or_delete(conn)

    def _insert(self, conn: Connection, count: int) -> None:
        rows = [_raw_row(self.rng) for _ in range(count)]
        conn.execute(insert(_financials()), rows)
        self.raw_changes += count
        self.max_id += count

    def _update_or_delete(self, conn: Connection) -> None:
        rng = self.rng
        low = rng.randint(1, max(1, self.max_id))
        where = {"lo": low, "hi": low + rng.randint(20, 300)}
        kind = rng.choice(["value", "value", "month", "asin", "marketplace", "metric", "delete", "all"])
        # each statement changes every row it matches, so its row count is the raw changes it made
        statements: dict[str, tuple[str, dict[str, Any]]] = {
            "value": ("UPDATE financials SET value = value + :d WHERE id BETWEEN :lo AND :hi",
                      {"d": _value(rng) / 10 or Decimal("0.0001")}),
            "month": ("UPDATE financials SET month = :m WHERE id BETWEEN :lo AND :hi AND month <> :m",
                      {"m": rng.choice(MONTHS)}),
            "asin": ("UPDATE financials SET asin = :a WHERE id BETWEEN :lo AND :hi AND asin <> :a",
                     {"a": rng.choice(ASINS)}),
            "marketplace": ("UPDATE financials SET marketplace = :mp "
                            "WHERE id BETWEEN :lo AND :hi AND marketplace <> :mp", {"mp": rng.choice(MARKETPLACES)}),
            "metric": ("UPDATE financials SET metric = :me WHERE id BETWEEN :lo AND :hi AND metric <> :me",
                       {"me": rng.choice(METRICS)}),
            "delete": ("DELETE FROM financials WHERE id BETWEEN :lo AND :hi", {}),
            "all": ("UPDATE financials SET month = :m, asin = :a, value = 1 - value "
                    "WHERE id BETWEEN :lo AND :hi AND (month <> :m OR asin <> :a)",
                    {"m": rng.choice(MONTHS), "a": rng.choice(ASINS)}),
        }
        sql, params = statements[kind]
        self._raw(conn, sql, **where, **params)

    def _raw(self, conn: Connection, sql: str, **params: Any) -> None:
        self.raw_changes += int(conn.execute(text(sql), params).rowcount)

    def _dimension(self, conn: Connection) -> None:
        rng = self.rng
        asin, brand, category = rng.choice(ASINS), rng.choice(BRANDS + [40, 41]), rng.choice(CATEGORIES + [105])
        moves: list[tuple[str, dict[str, Any]]] = [
            ("UPDATE products SET brand_id = :b WHERE asin = :a", {"a": asin, "b": brand}),
            ("UPDATE products SET brand_id = NULL WHERE asin = :a", {"a": asin}),
            ("DELETE FROM products WHERE asin = :a", {"a": asin}),
            ("INSERT IGNORE INTO products (asin, brand_id) VALUES (:a, :b)", {"a": asin, "b": brand}),
            ("UPDATE brands SET category_id = :c WHERE brand_id = :b", {"b": brand, "c": category}),
            ("UPDATE brands SET category_id = NULL WHERE brand_id = :b", {"b": brand}),
            ("DELETE FROM brands WHERE brand_id = :b", {"b": brand}),
            ("INSERT IGNORE INTO brands (brand_id, category_id, name) VALUES (:b, :c, 'new')",
             {"b": brand, "c": category}),
            ("DELETE FROM categories WHERE category_id = :c", {"c": category}),
            ("INSERT IGNORE INTO categories (category_id, name) VALUES (:c, 'new')", {"c": category}),
            ("UPDATE products SET brand_id = :b WHERE asin IN :many", {"b": brand, "many": rng.sample(ASINS, 8)}),
        ]
        sql, params = rng.choice(moves)
        if sql.startswith("INSERT IGNORE") and conn.dialect.name == "postgresql":
            sql = sql.replace("INSERT IGNORE", "INSERT") + " ON CONFLICT DO NOTHING"
        statement = text(sql)
        if "many" in params:
            statement = statement.bindparams(bindparam("many", expanding=True))
        conn.execute(statement, params)


def _financials() -> Any:
    return source_tables()["financials"]


def expected(engine: Engine) -> TierRows:
    """The tiers the source tables hold now, computed in plain Python by the oracle."""
    with engine.connect() as conn:
        data = Dataset(MONTHS)
        data.rows = [dict(r._mapping) for r in conn.execute(text(
            "SELECT asin, marketplace, month, metric, value FROM financials"))]
        data.products = {str(a): (None if b is None else int(b)) for a, b in conn.execute(text(
            "SELECT asin, brand_id FROM products"))}
        data.brands = {int(b): (None if c is None else int(c)) for b, c in conn.execute(text(
            "SELECT brand_id, category_id FROM brands"))}
        data.categories = [int(c) for c in conn.execute(text("SELECT category_id FROM categories")).scalars()]
    return expected_tiers(data)
