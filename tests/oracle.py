"""Random raw data with every awkward case, and the tiers computed from it in plain Python.

The expected tiers are computed here, from the same Python rows that were inserted, with Decimal
arithmetic and none of summarizer's code: an independent oracle.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.types import REAL

MARKETPLACES = ["US", "UK", "DE", "JP"]
METRICS = ["revenue", "units", "refunds", "cogs"]
HUGE = Decimal("99999999999999.9999")  # the largest DECIMAL(18,4)


def source_tables(metadata: MetaData | None = None, *, updated_at: bool = True) -> dict[str, Table]:
    metadata = metadata or MetaData()
    value = Numeric(18, 4).with_variant(REAL(), "sqlite")
    cols: list[Column[Any]] = [
            Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
            Column("asin", String(16), nullable=False), Column("marketplace", String(8), nullable=False),
            Column("month", Date, nullable=False), Column("metric", String(32), nullable=False),
            Column("value", value, nullable=False)]
    if updated_at:
        cols.append(Column("updated_at", DateTime, nullable=False, server_default=func.current_timestamp()))
    return {
        "financials": Table("financials", metadata, *cols),
        "products": Table("products", metadata, Column("asin", String(16), primary_key=True),
                          Column("brand_id", BigInteger, nullable=True)),
        "brands": Table("brands", metadata, Column("brand_id", BigInteger, primary_key=True, autoincrement=False),
                        Column("category_id", BigInteger, nullable=True), Column("name", String(100))),
        "categories": Table("categories", metadata,
                            Column("category_id", BigInteger, primary_key=True, autoincrement=False),
                            Column("name", String(100))),
    }


@dataclass
class Dataset:
    months: list[dt.date]
    products: dict[str, int | None] = field(default_factory=dict)
    brands: dict[int, int | None] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    categories: list[int] = field(default_factory=lambda: [100, 101, 102])  # a brand's other category ids dangle


def random_dataset(seed: int = 1, rows: int = 600, months: int = 4, *, huge: bool = True) -> Dataset:
    """``huge`` adds values near the DECIMAL(18,4) limit (beyond what SQLite's REAL holds exactly)."""
    rng = random.Random(seed)
    month_list = [dt.date(2024, m + 1, 1) for m in range(months)]
    data = Dataset(month_list)
    # brand 4: no category; brand 6: a category with no categories row
    data.brands = {b: (None if b == 4 else 555 if b == 6 else 100 + b % 3) for b in range(1, 8)}
    asins = [f"A{n:04d}" for n in range(40)]
    for i, asin in enumerate(asins[:-4]):  # the last 4 ASINs have no product row
        data.products[asin] = None if i % 9 == 0 else 999 if i % 11 == 0 else rng.randint(1, 7)  # none, dangling
    big = (HUGE / 3).quantize(Decimal("0.0001")) if huge else Decimal("12345678.9012")
    specials = [Decimal(0), -big, big, Decimal("-0.0001"), Decimal("0.0001")]
    for n in range(rows):
        value = specials[n % len(specials)] if n % 13 == 0 else Decimal(rng.randint(-200_000, 2_000_000)) / 10_000
        data.rows.append({"asin": rng.choice(asins[: 8 if n % 3 else 40]),  # skew: a few hot ASINs
                          "marketplace": rng.choice(MARKETPLACES), "month": rng.choice(month_list),
                          "metric": rng.choice(METRICS), "value": value})
    return data


def load(engine: Engine, data: Dataset, *, updated_at: bool = True) -> dict[str, Table]:
    tables = source_tables(updated_at=updated_at)
    tables["financials"].metadata.create_all(engine)
    floats = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        conn.execute(insert(tables["categories"]), [{"category_id": c, "name": f"cat {c}"} for c in data.categories])
        conn.execute(insert(tables["brands"]), [{"brand_id": b, "category_id": c, "name": f"brand {b}"}
                                                for b, c in data.brands.items()])
        conn.execute(insert(tables["products"]), [{"asin": a, "brand_id": b} for a, b in data.products.items()])
        rows = [{**r, "value": float(r["value"])} if floats else r for r in data.rows]
        conn.execute(insert(tables["financials"]), rows)
    return tables


def reload_rows(engine: Engine, tables: dict[str, Table], data: Dataset) -> None:
    """Make the financials table hold exactly ``data.rows`` again (after the test changed the list)."""
    floats = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        conn.execute(delete(tables["financials"]))
        conn.execute(insert(tables["financials"]),
                     [{**r, "value": float(r["value"])} if floats else r for r in data.rows])


TierRows = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


def expected_tiers(data: Dataset, all_marketplace: str = "ALL", unassigned: int = 0) -> TierRows:
    """tier name -> key -> (attributes..., value, row_count), computed without summarizer."""
    t1: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [None, None, Decimal(0), 0])
    for row in data.rows:
        brand = data.products.get(row["asin"]) or unassigned
        category = unassigned if brand == unassigned else (data.brands.get(brand) or unassigned)
        category = category if category in data.categories else unassigned  # no categories row: unassigned
        entry = t1[(row["month"], row["asin"], row["marketplace"], row["metric"])]
        entry[0], entry[1] = brand, category
        entry[2] += row["value"]
        entry[3] += 1
    t2: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [None, Decimal(0), 0])
    t3: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for (month, _asin, market, metric), (brand, category, value, count) in t1.items():
        for m in (market, all_marketplace):
            entry = t2[(month, brand, m, metric)]
            entry[0] = category
            entry[1] += value
            entry[2] += count
        t3[(month, category, metric)][0] += value
        t3[(month, category, metric)][1] += count
    return {"asin": {k: tuple(v) for k, v in t1.items()}, "brand": {k: tuple(v) for k, v in t2.items()},
            "category": {k: tuple(v) for k, v in t3.items()}}


KEYS = {"asin": ("month", "asin", "marketplace", "metric"), "brand": ("month", "brand_id", "marketplace", "metric"),
        "category": ("month", "category_id", "metric")}
ATTRS = {"asin": ("brand_id", "category_id", "value", "row_count"),
         "brand": ("category_id", "value", "row_count"), "category": ("value", "row_count")}


def actual_tiers(engine: Engine, tables: dict[str, Table]) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    result = {}
    with engine.connect() as conn:
        for tier, table in tables.items():
            rows = conn.execute(select(*(table.c[c] for c in KEYS[tier] + ATTRS[tier]))).all()
            n = len(KEYS[tier])
            result[tier] = {tuple(_norm(v) for v in r[:n]): tuple(r[n:]) for r in rows}
    return result


def _norm(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 10 and value[4] == "-":
        return dt.date.fromisoformat(value)
    return value


def assert_tiers_equal(expected: dict[str, dict[Any, Any]], actual: dict[str, dict[Any, Any]], exact: bool) -> None:
    for tier in ("asin", "brand", "category"):
        want, have = expected[tier], actual[tier]
        missing, extra = set(want) - set(have), set(have) - set(want)
        assert not missing and not extra, f"{tier}: keys differ: missing {missing}, extra {extra}"
        for key, want_row in want.items():
            have_row = have[key]
            assert have_row[:-2] == want_row[:-2], f"{tier} {key}: attributes {have_row} != {want_row}"
            assert have_row[-1] == want_row[-1], f"{tier} {key}: row_count {have_row[-1]} != {want_row[-1]}"
            if exact:
                value = Decimal(str(have_row[-2]))
                assert value == want_row[-2], f"{tier} {key}: value {value} != {want_row[-2]}"
            else:
                assert abs(float(have_row[-2]) - float(want_row[-2])) <= 1e-6 * max(1.0, abs(float(want_row[-2])))


def mutate(data: Dataset, months: list[dt.date], seed: int = 7) -> None:
    """Random inserts, updates and deletes confined to ``months``."""
    rng = random.Random(seed)
    inside = [i for i, r in enumerate(data.rows) if r["month"] in months]
    for i in sorted(rng.sample(inside, len(inside) // 4), reverse=True):
        del data.rows[i]
    for r in data.rows:
        if r["month"] in months and rng.random() < 0.3:
            r["value"] = Decimal(rng.randint(-50_000, 500_000)) / 10_000
    for _ in range(40):
        data.rows.append({"asin": f"A{rng.randint(0, 45):04d}", "marketplace": rng.choice(MARKETPLACES + ["FR"]),
                          "month": rng.choice(months), "metric": rng.choice(METRICS),
                          "value": Decimal(rng.randint(-10_000, 90_000)) / 100})



# --- a wide raw table: one row per order line, a date, three measures ---------------------------------

MEASURES = (("revenue", "net_amount"), ("units", "quantity"), ("fees", "fee_amount"))
WIDE = {"source_financials_table": "order_lines", "source_date_column": "order_date",
        "source_measures": ", ".join(f"{m}:{c}" for m, c in MEASURES), "source_updated_at_column": "updated_at"}
LONG_AGO = dt.datetime(2020, 1, 1)  # the updated_at of loaded rows: older than any run's --changed start


def wide_table(metadata: MetaData, date_type: Any = Date, *, nullable_date: bool = False) -> Table:
    """order_lines(id, order_date, asin, marketplace, net_amount, quantity, fee_amount, updated_at): the measures
    may be NULL; ``date_type`` is the date column's type (DATE by default)."""
    money = Numeric(18, 4).with_variant(REAL(), "sqlite")
    return Table("order_lines", metadata,
                 Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
                 Column("order_date", date_type, nullable=nullable_date), Column("asin", String(16), nullable=False),
                 Column("marketplace", String(8), nullable=False), Column("net_amount", money, nullable=True),
                 Column("quantity", Integer, nullable=True), Column("fee_amount", money, nullable=True),
                 Column("updated_at", DateTime, nullable=False))


def wide_dataset(seed: int = 1, rows: int = 600, months: int = 4, *, huge: bool = True) -> Dataset:
    """Order lines on any day of ``months`` months, with the products and brands of :func:`random_dataset` (every
    unassigned case); each measure NULL in about one row of six, all three in some rows."""
    data = random_dataset(seed, rows=0, months=months, huge=huge)
    rng = random.Random(seed + 1000)
    asins = [f"A{n:04d}" for n in range(40)]
    big = (HUGE / 3).quantize(Decimal("0.0001")) if huge else Decimal("12345678.9012")
    for n in range(rows):
        month = rng.choice(data.months)
        day = month.replace(day=rng.choice([1, 2, 15, 28, _last_day(month)]))
        amount = big if n % 97 == 0 else -big if n % 89 == 0 else Decimal(rng.randint(-20_000, 900_000)) / 10_000
        row = {"order_date": day, "asin": rng.choice(asins[: 8 if n % 3 else 40]),
               "marketplace": rng.choice(MARKETPLACES), "net_amount": amount, "quantity": rng.randint(-2, 40),
               "fee_amount": Decimal(rng.randint(0, 50_000)) / 100}
        if n % 29 == 0:
            row.update(net_amount=None, quantity=None, fee_amount=None)
        else:
            for name in ("net_amount", "quantity", "fee_amount"):
                if rng.random() < 1 / 6:
                    row[name] = None
        data.rows.append(row)
    return data


def _last_day(month: dt.date) -> int:
    following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return (following - dt.timedelta(days=1)).day


def unpivoted(data: Dataset, date: str = "order_date") -> Dataset:
    """The wide rows as long rows: one per measure that is not NULL, in the month of the row's date."""
    rows = [{"asin": r["asin"], "marketplace": r["marketplace"], "month": _month(r[date]), "metric": metric,
             "value": Decimal(r[name]) if isinstance(r[name], int) else r[name]}
            for r in data.rows for metric, name in MEASURES if r[name] is not None]
    return Dataset(data.months, data.products, data.brands, rows, data.categories)


def _month(value: dt.date) -> dt.date:
    return dt.date(value.year, value.month, 1)


def load_wide(engine: Engine, data: Dataset, date_type: Any = Date, *, nullable_date: bool = False) -> dict[str, Table]:
    """The dimension tables of :func:`load` and ``data.rows`` in order_lines."""
    metadata = MetaData()
    dimensions = {k: v for k, v in source_tables(metadata).items() if k != "financials"}
    tables = {"order_lines": wide_table(metadata, date_type, nullable_date=nullable_date), **dimensions}
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(tables["categories"]), [{"category_id": c, "name": f"cat {c}"} for c in data.categories])
        conn.execute(insert(tables["brands"]), [{"brand_id": b, "category_id": c, "name": f"brand {b}"}
                                                for b, c in data.brands.items()])
        conn.execute(insert(tables["products"]), [{"asin": a, "brand_id": b} for a, b in data.products.items()])
    reload_wide(engine, tables, data)
    return tables


def reload_wide(engine: Engine, tables: dict[str, Table], data: Dataset) -> None:
    """Make order_lines hold exactly ``data.rows`` again, all stamped :data:`LONG_AGO`."""
    floats = engine.dialect.name == "sqlite"

    def stored(row: dict[str, Any]) -> dict[str, Any]:
        values = {k: float(v) if floats and isinstance(v, Decimal) else v for k, v in row.items()}
        return {**values, "updated_at": LONG_AGO}
    with engine.begin() as conn:
        conn.execute(delete(tables["order_lines"]))
        conn.execute(insert(tables["order_lines"]), [stored(r) for r in data.rows])
