"""Synthetic source data: ``financials``, ``products``, ``brands`` and ``categories``, made in the database.

Every row is computed by the database itself from a row source (MariaDB's SEQUENCE engine,
PostgreSQL's ``generate_series``, a recursive CTE on SQLite and a digit cross join on MySQL 8) in
a few big ``INSERT ... SELECT`` statements (one per million rows, committed one by one); no row
travels through Python. 5M rows take about 30 s on MariaDB 10.11 on two cores.

Randomness is a hash of the row number, not ``RAND()``: stream *k* of row *n* is
``x0 = (n*a + s) % P``, then twice ``x = (x*x + c) % P`` with ``P = 2**31 - 1`` and constants
derived from the seed in Python. All products stay below 2**63, so the same integer arithmetic
runs everywhere and the same seed gives the same rows on every engine (SQLite: values as REAL).

The shape the refresh and its tests rely on:

* ASIN popularity is skewed (index ``floor(asins * r**skew)``, ``skew`` 3 by default), marketplaces
  too (``floor(m * r**2)``), so popular keys get several raw rows per (asin, marketplace, month, metric);
  ``rows_per_key`` consecutive rows share one drawn key (as daily rows share their month), so the
  rollup compresses about that much more;
* ASIN index ``i`` has no products row when ``i % 33 == 16`` (3 %), a NULL brand when
  ``i % 33 == 5`` (3 %), a brand id without a brands row when ``i % 211 == 11``; brand ``b`` has a
  NULL category when ``b % 33 == 4`` (3 %): all four exist as soon as ``asins >= 17`` and ``brands >= 4``;
* ``value`` is 1..1e6 with four decimals, spread over six orders of magnitude, 5 % negative and
  1 % exactly zero.

``Shape(wide=True)`` makes a wide raw table instead of ``financials``: ``order_lines``, one row per order
line, with an ``order_date`` on any of a month's first 28 days and three measures, ``net_amount`` (as
``value`` above), ``quantity`` (1..5) and ``fee_amount`` (0..2, NULL in 10 % of the rows). The
configuration that reads it is :data:`WIDE_SETTINGS`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from sqlalchemy import Connection, text

from .errors import SummarizerError, UsageError

P = 2_147_483_647  # 2**31 - 1, prime: x*x < 2**62 never overflows a BIGINT
CHUNK_ROWS = 1_000_000
SOURCE_TABLES = ("financials", "products", "brands", "categories")
WIDE_TABLE = "order_lines"
WIDE_SETTINGS = {"financials_table": WIDE_TABLE, "date_column": "order_date",  # [source] for order_lines
                 "measures": "revenue:net_amount, units:quantity, fees:fee_amount"}
VALUE_LIMIT = re.compile(r"^[A-Za-z0-9_]+$")

NO_PRODUCT = (33, 16)  # asin index i % 33 == 16: the ASIN has no products row
NULL_BRAND = (33, 5)  # i % 33 == 5: the product's brand_id is NULL
DANGLING_BRAND = (211, 11)  # i % 211 == 11: brand_id points past the last brand
NULL_CATEGORY = (33, 4)  # brand_id % 33 == 4: the brand's category_id is NULL


@dataclass(frozen=True)
class Shape:
    """How much synthetic data to make; ``None`` counts scale with ``rows``."""

    rows: int = 100_000
    months: int = 36
    first_month: dt.date = dt.date(2023, 1, 1)
    asins: int | None = None
    brands: int | None = None
    categories: int | None = None
    marketplaces: tuple[str, ...] = ("US", "UK", "DE", "FR", "IT", "ES", "JP", "CA")
    metrics: tuple[str, ...] = (
        "revenue", "units", "refunds", "cogs", "fees",
        "ad_spend", "shipping", "tax", "promotions", "returns",
    )
    seed: int = 42
    skew: int = 3  # ASIN popularity exponent: index floor(asins * r**skew); higher: more rows per key
    rows_per_key: int = 1  # consecutive raw rows sharing one drawn (asin, marketplace, month, metric), like daily rows
    wide: bool = False  # order_lines (a date, three measures) instead of financials (module docstring)

    def __post_init__(self) -> None:
        _check_positive(rows=self.rows, months=self.months, skew=self.skew, rows_per_key=self.rows_per_key)
        _check_positive(asins=self.asins, brands=self.brands, categories=self.categories)
        if self.first_month.day != 1:
            raise UsageError(f"first_month must be the first day of a month, not {self.first_month}")
        if self.asin_count >= 10**8:
            raise UsageError("asins must stay below 100,000,000 (ASINs are 'B0' + 8 digits)")
        _check_values("marketplaces", self.marketplaces, 8)
        _check_values("metrics", self.metrics, 32)

    @property
    def tables(self) -> tuple[str, ...]:
        """The source tables this shape fills: the raw table first."""
        return (WIDE_TABLE, *SOURCE_TABLES[1:]) if self.wide else SOURCE_TABLES

    @property
    def asin_count(self) -> int:
        """Distinct ASINs: ``asins``, else ``max(50, rows // 100)``."""
        return self.asins if self.asins is not None else max(50, self.rows // 100)

    @property
    def brand_count(self) -> int:
        """Brands with a brands row: ``brands``, else ``max(5, asins // 15)``."""
        return self.brands if self.brands is not None else max(5, self.asin_count // 15)

    @property
    def category_count(self) -> int:
        """Categories: ``categories``, else ``max(3, brands // 10)``."""
        return self.categories if self.categories is not None else max(3, self.brand_count // 10)

    @property
    def last_month(self) -> dt.date:
        """The first day of the last month covered."""
        index = self.first_month.year * 12 + self.first_month.month - 1 + self.months - 1
        return dt.date(index // 12, index % 12 + 1, 1)


def _check_positive(**counts: int | None) -> None:
    for name, count in counts.items():
        if count is not None and count < 1:
            raise UsageError(f"{name} must be at least 1, not {count}")


def _check_values(name: str, values: Sequence[str], width: int) -> None:
    if not values or len(set(values)) != len(values):
        raise UsageError(f"{name} must be a non-empty tuple of distinct strings")
    for value in values:
        if not VALUE_LIMIT.match(value) or len(value) > width:
            raise UsageError(f"{name}: {value!r} is not 1-{width} letters, digits or underscores")


# --- what differs between engines ---------------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    """The SQL fragments that differ between engines; ``{…}`` slots take SQL expressions."""

    ddl: tuple[str, ...]
    idiv: str  # integer division {a} by {b}
    floor_of: str  # floor of the non-negative DOUBLE {x} as an integer
    unit_float: str  # {x} in [0, P) as a DOUBLE in [0, 1)
    asin: str  # 'B0' + {i} zero-padded to 8 digits
    name: str  # {prefix} || {i}
    month: str  # first day of month number {k} counted from :first_month
    day: str  # day {d} (0-based) of month number {k}: {month} plus {d} days
    row_source: Callable[[int, int], str]  # FROM item with one column n, lo..hi inclusive
    setup: tuple[str, ...] = ()
    analyze: str = "ANALYZE {table}"


SOURCE_DDL = (
    """CREATE TABLE IF NOT EXISTS financials (
        id {id}, asin VARCHAR(16) NOT NULL, marketplace VARCHAR(8) NOT NULL, month {date} NOT NULL,
        metric VARCHAR(32) NOT NULL, value {decimal} NOT NULL, updated_at {updated_at}
    ){engine}""",
    "CREATE TABLE IF NOT EXISTS products (asin VARCHAR(16) NOT NULL PRIMARY KEY, brand_id BIGINT NULL){engine}",
    "CREATE TABLE IF NOT EXISTS brands (brand_id BIGINT NOT NULL PRIMARY KEY, category_id BIGINT NULL, "
    + "name VARCHAR(100)){engine}",
    "CREATE TABLE IF NOT EXISTS categories (category_id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(100)){engine}",
)
WIDE_DDL = """CREATE TABLE IF NOT EXISTS order_lines (
        id {id}, order_date {date} NOT NULL, asin VARCHAR(16) NOT NULL, marketplace VARCHAR(8) NOT NULL,
        net_amount {decimal} NOT NULL, quantity INTEGER NOT NULL, fee_amount {decimal} NULL, updated_at {updated_at}
    ){engine}"""
COLUMN_TYPES: dict[str, dict[str, str]] = {
    "mysql": {
        "id": "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
        "date": "DATE",
        "decimal": "DECIMAL(18,4)",
        "updated_at": "DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
        "engine": " ENGINE=InnoDB",
    },
    "postgresql": {
        "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "date": "DATE",
        "decimal": "NUMERIC(18,4)",
        "updated_at": "TIMESTAMP NOT NULL DEFAULT now()",
        "engine": "",
    },
    "sqlite": {  # no DECIMAL in SQLite: value is REAL; month is 'YYYY-MM-DD' text
        "id": "INTEGER PRIMARY KEY",
        "date": "TEXT",
        "decimal": "REAL",
        "updated_at": "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP",
        "engine": "",
    },
}


def _ddl(engine: str) -> tuple[str, ...]:
    return tuple(statement.format(**COLUMN_TYPES[engine]) for statement in (*SOURCE_DDL, WIDE_DDL))


def _mariadb_rows(lo: int, hi: int) -> str:
    return f"(SELECT CAST(seq AS SIGNED) AS n FROM seq_{lo}_to_{hi}) AS s"  # seq is UNSIGNED


def _mysql8_rows(lo: int, hi: int) -> str:
    # MySQL 8 has no SEQUENCE engine: cross join enough copies of the ten digits.
    digits = "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {d}" for d in range(1, 10)) + ")"
    width = len(str(max(hi - lo, 1)))
    joined = " CROSS JOIN ".join(f"{digits} AS d{p}" for p in range(width))
    number = " + ".join([str(lo)] + [f"{10**p} * d{p}.d" for p in range(width)])
    return f"(SELECT n FROM (SELECT {number} AS n FROM {joined}) AS g WHERE n <= {hi}) AS s"


def _postgresql_rows(lo: int, hi: int) -> str:
    return f"generate_series(CAST({lo} AS BIGINT), CAST({hi} AS BIGINT)) AS s(n)"


def _sqlite_rows(lo: int, hi: int) -> str:
    return (
        f"(WITH RECURSIVE g(n) AS (SELECT {lo} UNION ALL SELECT n + 1 FROM g WHERE n < {hi})"
        " SELECT n FROM g) AS s"
    )


_MYSQL = _Dialect(
    ddl=_ddl("mysql"),
    idiv="({a} DIV {b})",
    floor_of="(({x}) DIV 1)",
    unit_float="({x} / 2147483647e0)",
    asin="CONCAT('B0', LPAD({i}, 8, '0'))",
    name="CONCAT({prefix}, {i})",
    month="(CAST(:first_month AS DATE) + INTERVAL ({k}) MONTH)",
    day="(CAST(:first_month AS DATE) + INTERVAL ({k}) MONTH + INTERVAL ({d}) DAY)",
    row_source=_mysql8_rows,
    setup=("SET SESSION unique_checks = 0", "SET SESSION foreign_key_checks = 0"),
    analyze="ANALYZE TABLE {table}",
)

DIALECTS: dict[str, _Dialect] = {
    "mysql": _MYSQL,
    "mariadb": replace(_MYSQL, row_source=_mariadb_rows),
    "postgresql": _Dialect(
        ddl=_ddl("postgresql"),
        idiv="({a} / {b})",
        floor_of="CAST(floor({x}) AS BIGINT)",
        unit_float="(CAST({x} AS DOUBLE PRECISION) / 2147483647)",
        asin="('B0' || lpad(CAST({i} AS TEXT), 8, '0'))",
        name="({prefix} || CAST({i} AS TEXT))",
        month="CAST(CAST(:first_month AS DATE) + ({k}) * INTERVAL '1 month' AS DATE)",
        day="CAST(CAST(:first_month AS DATE) + ({k}) * INTERVAL '1 month' + ({d}) * INTERVAL '1 day' AS DATE)",
        row_source=_postgresql_rows,
    ),
    "sqlite": _Dialect(
        ddl=_ddl("sqlite"),
        idiv="({a} / {b})",
        floor_of="CAST({x} AS INTEGER)",
        unit_float="({x} / 2147483647.0)",
        asin="('B0' || printf('%08d', {i}))",
        name="({prefix} || {i})",
        month="date(:first_month, '+' || ({k}) || ' months')",
        day="date(:first_month, '+' || ({k}) || ' months', '+' || ({d}) || ' days')",
        row_source=_sqlite_rows,
    ),
}


def dialect_name(conn: Connection) -> str:
    """The key of :data:`DIALECTS` for this connection ('mariadb' apart from 'mysql')."""
    name = conn.dialect.name
    if name == "mysql" and getattr(conn.dialect, "is_mariadb", False):
        name = "mariadb"
    if name not in DIALECTS:
        raise SummarizerError(f"synthetic data needs SQLite, MySQL/MariaDB or PostgreSQL, not {name}")
    return name


# --- the expressions ---------------------------------------------------------------------------


def _stream(seed: int, stream: str, n: str) -> str:
    """A pseudo-random integer in [0, P) for row number ``n``: a short quadratic hash."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    a, s, c1, c2 = (int.from_bytes(digest[i : i + 8], "big") % (P - 1) + 1 for i in range(0, 32, 8))
    x = f"(({n}) * {a} + {s}) % {P}"
    x = f"(({x}) * ({x}) + {c1}) % {P}"
    return f"(({x}) * ({x}) + {c2}) % {P}"


def _pick(index: str, choices: Sequence[str], prefix: str) -> str:
    """``CASE index WHEN 0 THEN :prefix0 ...``: one bound parameter per choice."""
    whens = " ".join(f"WHEN {i} THEN :{prefix}{i}" for i in range(len(choices)))
    return f"CASE {index} {whens} END"


def _powers_of_ten(exponent: str, count: int) -> str:
    whens = " ".join(f"WHEN {e} THEN {10**e}" for e in range(count))
    return f"CASE {exponent} {whens} END"


def _hashed(d: _Dialect, seed: int, streams: Sequence[str], lo: int, hi: int, key: str = "n",
            keyed: Sequence[str] = ()) -> str:
    """FROM item: row numbers ``n`` in ``lo..hi`` with one hash column per stream name (``keyed`` ones hash ``key``)."""
    columns = "".join(f", {_stream(seed, name, key if name in keyed else 'n')} AS {name}" for name in streams)
    return f"(SELECT n{columns} FROM {d.row_source(lo, hi)}) AS h"


def _keys(d: _Dialect, shape: Shape) -> tuple[str, str, str]:
    """The raw row's ASIN, marketplace and month number (0-based) from the popularity and place streams."""
    r = d.unit_float.format(x="popularity")
    asin_index = d.floor_of.format(x=" * ".join([str(shape.asin_count), *[r] * shape.skew]))
    marketplace = d.idiv.format(a=f"{len(shape.marketplaces)} * (place % 1024) * (place % 1024)", b=1024 * 1024)
    month = f"({d.idiv.format(a='place', b=1024)} % {shape.months})"
    return d.asin.format(i=asin_index), _pick(marketplace, shape.marketplaces, "mp"), month


def _rows(d: _Dialect, shape: Shape, lo: int, hi: int, keyed: Sequence[str]) -> str:
    """FROM item: rows ``lo..hi`` with the four hash streams; ``keyed`` ones shared by ``rows_per_key`` rows."""
    key = "n" if shape.rows_per_key == 1 else d.idiv.format(a="n", b=shape.rows_per_key)
    return _hashed(d, shape.seed, ("popularity", "place", "kind", "amount"), lo, hi, key, keyed)


def _financials_select(d: _Dialect, shape: Shape, lo: int, hi: int) -> str:
    """The SELECT that makes financials rows ``lo..hi`` (row numbers, 1-based)."""
    asin, marketplace, month = _keys(d, shape)
    metric = f"(kind % {len(shape.metrics)})"
    keyed = ("popularity", "place", "kind")  # the key columns; amount (the value) stays per row
    return (
        f"SELECT {asin}, {marketplace}, {d.month.format(k=month)}, {_pick(metric, shape.metrics, 'mt')}, {_value(d)}"
        f" FROM {_rows(d, shape, lo, hi, keyed)}"
    )


def _order_lines_select(d: _Dialect, shape: Shape, lo: int, hi: int) -> str:
    """The SELECT that makes order_lines rows ``lo..hi``: financials' keys and value, a day, two more measures."""
    asin, marketplace, month = _keys(d, shape)
    day = f"({d.idiv.format(a='amount', b=64)} % 28)"
    quantity = f"(1 + {d.idiv.format(a='kind', b=16)} % 5)"
    fee = f"CASE WHEN kind % 10 = 0 THEN NULL ELSE ({d.idiv.format(a='amount', b=4)} % 20000) / 10000.0 END"
    return (
        f"SELECT {d.day.format(k=month, d=day)}, {asin}, {marketplace}, {_value(d)}, {quantity}, {fee}"
        f" FROM {_rows(d, shape, lo, hi, ('popularity', 'place'))}"
    )


def _value(d: _Dialect) -> str:
    """1..1e6 over six orders of magnitude, four decimals; 5 % negative, 1 % zero."""
    bucket = f"({d.idiv.format(a='kind', b=1024)} % 100)"
    mantissa = f"(10000 + {d.idiv.format(a='amount', b=8)} % 90000)"
    units = f"({mantissa} * {_powers_of_ten('(amount % 6)', 6)} + popularity % 10000)"
    # a simple CASE evaluates its operand once: buckets 0-4 negative, 5 zero, the rest positive
    negative = " ".join(f"WHEN {b} THEN -1" for b in range(5))
    sign = f"CASE {bucket} {negative} WHEN 5 THEN 0 ELSE 1 END"
    return f"({sign}) * {units} / 10000.0"


def _products_select(d: _Dialect, shape: Shape) -> str:
    r = d.unit_float.format(x="brand")
    brand = f"(1 + {d.floor_of.format(x=f'{shape.brand_count} * {r} * {r}')})"
    brand_id = (
        f"CASE WHEN n % {NULL_BRAND[0]} = {NULL_BRAND[1]} THEN NULL"
        f" WHEN n % {DANGLING_BRAND[0]} = {DANGLING_BRAND[1]} THEN {shape.brand_count} + 1 + n % 7"
        f" ELSE {brand} END"
    )
    return (
        f"SELECT {d.asin.format(i='n')}, {brand_id} FROM {_hashed(d, shape.seed, ('brand',), 0, shape.asin_count - 1)}"
        f" WHERE n % {NO_PRODUCT[0]} <> {NO_PRODUCT[1]}"
    )


def _brands_select(d: _Dialect, shape: Shape) -> str:
    category_id = (
        f"CASE WHEN n % {NULL_CATEGORY[0]} = {NULL_CATEGORY[1]} THEN NULL"
        f" ELSE 1 + category % {shape.category_count} END"
    )
    name = d.name.format(prefix="'Brand '", i="n")
    return f"SELECT n, {category_id}, {name} FROM {_hashed(d, shape.seed, ('category',), 1, shape.brand_count)}"


def _categories_select(d: _Dialect, shape: Shape) -> str:
    name = d.name.format(prefix="'Category '", i="n")
    return f"SELECT n, {name} FROM {d.row_source(1, shape.category_count)}"


def build_statements(engine: str, shape: Shape) -> list[tuple[str, str]]:
    """The (table, INSERT ... SELECT) statements that fill the source tables, in order; ``engine`` a DIALECTS key."""
    d = DIALECTS[engine]
    statements = [
        ("categories", f"INSERT INTO categories (category_id, name) {_categories_select(d, shape)}"),
        ("brands", f"INSERT INTO brands (brand_id, category_id, name) {_brands_select(d, shape)}"),
        ("products", f"INSERT INTO products (asin, brand_id) {_products_select(d, shape)}"),
    ]
    columns = "asin, marketplace, month, metric, value"
    wide = "order_date, asin, marketplace, net_amount, quantity, fee_amount"
    for lo in range(1, shape.rows + 1, CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS - 1, shape.rows)
        if shape.wide:
            select = _order_lines_select(d, shape, lo, hi)
            statements.append((WIDE_TABLE, f"INSERT INTO {WIDE_TABLE} ({wide}) {select}"))
        else:
            select = _financials_select(d, shape, lo, hi)
            statements.append(("financials", f"INSERT INTO financials ({columns}) {select}"))
    return statements


def _parameters(shape: Shape) -> dict[str, str]:
    params = {f"mp{i}": value for i, value in enumerate(shape.marketplaces)}
    params.update({f"mt{i}": value for i, value in enumerate(shape.metrics)})
    params["first_month"] = shape.first_month.isoformat()
    return params


# --- running them ------------------------------------------------------------------------------


def create_source_tables(conn: Connection, *, drop: bool = False) -> None:
    """Create the source tables where missing, financials and order_lines both (``drop=True``: drop them first);
    commits."""
    d = DIALECTS[dialect_name(conn)]
    if drop:
        for table in (*SOURCE_TABLES, WIDE_TABLE):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    for statement in d.ddl:
        conn.execute(text(statement))
    conn.commit()


def generate(conn: Connection, shape: Shape) -> dict[str, int]:
    """Fill the (empty) source tables with ``shape``; returns rows inserted per table.

    Creates the tables where missing and commits after each statement (about a million rows each),
    so pass a connection from ``engine.connect()``, not one inside ``engine.begin()``.
    """
    name = dialect_name(conn)
    d = DIALECTS[name]
    create_source_tables(conn)
    _require_empty(conn, shape.tables)
    counts = dict.fromkeys(shape.tables, 0)
    with _session(conn, d):
        for table, statement in build_statements(name, shape):
            counts[table] += conn.execute(text(statement), _parameters(shape)).rowcount
            conn.commit()
    _analyze(conn, d, shape.tables)
    return counts


def _require_empty(conn: Connection, tables: Sequence[str]) -> None:
    for table in tables:
        if conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:
            raise SummarizerError(
                f"table {table} already holds rows; synthetic data goes into empty tables only"
                " (create_source_tables(conn, drop=True) starts afresh)"
            )


@contextmanager
def _session(conn: Connection, d: _Dialect) -> Iterator[None]:
    """Apply the dialect's bulk-load session settings (``SET SESSION var = 0``), then restore them."""
    saved: list[str] = []
    for statement in d.setup:
        variable = statement.split()[2]
        old = conn.execute(text(f"SELECT @@SESSION.{variable}")).scalar_one()
        saved.append(f"SET SESSION {variable} = {int(old)}")
        conn.execute(text(statement))
    try:
        yield
    finally:
        for statement in saved:
            conn.execute(text(statement))


def _analyze(conn: Connection, d: _Dialect, tables: Sequence[str]) -> None:
    for table in tables:
        conn.execute(text(d.analyze.format(table=table))).close()
    conn.commit()
