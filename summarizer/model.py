"""The rollup described as data: the source tables it reads and the tables it writes.

Source tables are described with lightweight ``table()``/``column()`` constructs (summarizer does not
own them and never creates them). Summary and bookkeeping tables are full ``Table`` objects, so the
same definition gives the DDL, the shadow tables of a full refresh, and the shape check of ``init``.

Summary tiers (column names are fixed; table names come from the config):

* tier 1, ``asin``: one row per (month, asin, marketplace, metric), with brand_id and category_id;
* tier 2, ``brand``: one row per (month, brand_id, marketplace, metric), plus the ``ALL`` rows;
* tier 3, ``category``: one row per (month, category_id, metric).

Primary keys start with ``month``: the refresh writes and replaces whole months, and rows arrive in
key order, so InnoDB appends to its clustered index instead of splitting pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    column,
    table,
)
from sqlalchemy.dialects.mysql import DATETIME as MYSQL_DATETIME
from sqlalchemy.sql.expression import ColumnClause, TableClause
from sqlalchemy.types import REAL, TypeEngine

from .config import Config

TIERS = ("asin", "brand", "category")
SHADOW_SUFFIX = "__new"
OLD_SUFFIX = "__old"
STAGE_SUFFIX = "__stage"  # the spark engine's staging tables of an incremental refresh
DELTA_SUFFIX = "__delta"  # the follower's session-local tables of one batch's deltas, one per tier
FOLLOW_ROLES = ("state", "products", "brands", "categories")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class Measure:
    """One measure column of a wide raw table and the metric its values are summed under."""

    metric: str
    column: ColumnClause[object]


@dataclass(frozen=True)
class Source:
    """The raw table and its dimension tables, by role.

    The raw table has one of two forms. *Long*: one ``(metric, value)`` pair per row. *Wide*
    (``measures``): one column per metric, each raw row giving one value to each metric whose column is
    not NULL. ``month`` is the column a row's month comes from: a DATE holding first days, or with
    ``dated`` any DATE, DATETIME or TIMESTAMP, whose month's first day is the row's month.
    """

    financials: TableClause
    asin: ColumnClause[str]
    marketplace: ColumnClause[str]
    month: ColumnClause[object]
    metric: ColumnClause[str]
    value: ColumnClause[object]
    updated_at: ColumnClause[object] | None
    products: TableClause
    product_asin: ColumnClause[str]
    product_brand: ColumnClause[int]
    brands: TableClause
    brand_id: ColumnClause[int]
    brand_category: ColumnClause[int]
    brand_name: ColumnClause[str]
    categories: TableClause
    category_id: ColumnClause[int]
    category_name: ColumnClause[str]
    dated: bool = False  # month is any date or timestamp (date_column), not a month's first day
    measures: tuple[Measure, ...] = ()  # wide: one metric per column; empty: long (metric, value)
    origin: str = ""  # where the [source] settings came from, for messages

    @property
    def wide(self) -> bool:
        return bool(self.measures)

    def value_columns(self) -> list[ColumnClause[object]]:
        """The raw columns whose values are summed: the measure columns, or the value column."""
        return [m.column for m in self.measures] if self.wide else [self.value]

    def read_columns(self) -> list[ColumnClause[Any]]:
        """The raw table's columns the tiers are computed from (not updated_at)."""
        keys: list[ColumnClause[Any]] = [self.month, self.asin, self.marketplace]
        values = [] if self.wide else [self.metric]
        return _distinct([*keys, *values, *self.value_columns()])

    def required_columns(self) -> dict[str, list[str]]:
        """Table name -> the columns the rollup reads from it."""
        fin = [c.name for c in self.read_columns()]
        if self.updated_at is not None:
            fin.append(self.updated_at.name)
        return {
            self.financials.name: fin,
            self.products.name: [self.product_asin.name, self.product_brand.name],
            self.brands.name: [self.brand_id.name, self.brand_category.name],
            self.categories.name: [self.category_id.name],
        }


def _distinct(columns: list[ColumnClause[Any]]) -> list[ColumnClause[Any]]:
    """The columns without repeats (two measures may read one column), in order."""
    return list({c.name: c for c in reversed(columns)}.values())[::-1]


def source_from_config(config: Config) -> Source:
    s = config.source
    value_type = Numeric(65, 30)
    month = column(s.date_column, DateTime) if s.date_column else column(s.month_column, Date)
    fin_cols: dict[str, ColumnClause[Any]] = {
        "asin": column(s.asin_column, String), "marketplace": column(s.marketplace_column, String),
        "month": month, "metric": column(s.metric_column, String),
        "value": column(s.value_column, value_type),
    }
    measured: dict[str, ColumnClause[Any]] = {name: column(name, value_type) for _, name in s.measures}
    measures = tuple(Measure(metric, measured[name]) for metric, name in s.measures)
    updated_at = column(s.updated_at_column, DateTime) if s.updated_at_column else None
    read = [c for c in fin_cols.values() if not measures or c.key not in (s.metric_column, s.value_column)]
    financials = table(s.financials_table, *_distinct([*read, *measured.values()]),
                       *([updated_at] if updated_at is not None and updated_at.name not in measured else []))
    product_asin, product_brand = column(s.product_asin_column, String), column(s.product_brand_column, BigInteger)
    brand_id, brand_category = column(s.brand_id_column, BigInteger), column(s.brand_category_column, BigInteger)
    brand_name = column(s.brand_name_column, String)
    category_id, category_name = column(s.category_id_column, BigInteger), column(s.category_name_column, String)
    return Source(
        financials=financials, updated_at=updated_at, **fin_cols,  # type: ignore[arg-type]
        products=table(s.products_table, product_asin, product_brand),
        product_asin=product_asin, product_brand=product_brand,
        brands=table(s.brands_table, brand_id, brand_category, brand_name),
        brand_id=brand_id, brand_category=brand_category, brand_name=brand_name,
        categories=table(s.categories_table, category_id, category_name),
        category_id=category_id, category_name=category_name,
        dated=bool(s.date_column), measures=measures, origin=config.path,
    )


@dataclass(frozen=True)
class Tiers:
    """The three summary tables of one generation (live, or a refresh's shadow set)."""

    asin: Table
    brand: Table
    category: Table

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.asin, self.brand, self.category))

    def by_name(self) -> dict[str, Table]:
        return dict(zip(TIERS, self, strict=True))

    def read_by_dashboards(self) -> list[Table]:
        """The tiers the read API queries; tier 1 is read a month at a time through its primary key."""
        return [self.brand, self.category]


@dataclass(frozen=True)
class FollowTables:
    """The follower's tables: its stream position, and the brand/category mapping as of that position.

    The mapping is a mirror of products, brands and categories that the follower keeps in the transaction of
    each batch, so a restarted follower never consults dimension tables that are already ahead of it."""

    state: Table
    products: Table
    brands: Table
    categories: Table

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.state, self.products, self.brands, self.categories))


class Schema:
    """Builds the summary and bookkeeping ``Table`` objects for one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.names = {tier: config.get("summary", f"{tier}_table") for tier in TIERS}
        self.all_marketplace: str = config.summary.all_marketplace
        self.unassigned: int = config.summary.unassigned_id

    def value_type(self) -> TypeEngine[object]:
        precision, scale = self.config.summary.value_precision, self.config.summary.value_scale
        return Numeric(precision, scale).with_variant(REAL(), "sqlite")  # type: ignore[return-value]

    def tiers(self, suffix: str = "") -> Tiers:
        """The three tier tables; ``suffix`` names a shadow generation (``__new``)."""
        metadata = MetaData()
        return Tiers(*(getattr(self, f"_{tier}_table")(metadata, self.names[tier] + suffix) for tier in TIERS))

    def live(self) -> Tiers:
        return self.tiers()

    def runs(self) -> Table:
        return runs_table(MetaData(), self.config.summary.runs_table)

    def data_version(self, suffix: str = "") -> Table:
        """The data version table; ``suffix`` names the copy a full refresh swaps in with its shadow tiers."""
        return data_version_table(MetaData(), self.config.summary.data_version_table + suffix)

    def bookkeeping(self) -> list[Table]:
        """The tables summarizer keeps besides the tiers: the run history and the data version."""
        return [self.runs(), self.data_version()]

    def follow(self, suffix: str = "") -> FollowTables:
        """The follower's tables; ``suffix`` names the copies a full refresh swaps in with its shadow tiers."""
        prefix, metadata = self.config.summary.follow_table_prefix, MetaData()
        name = {role: f"{prefix}_{role}{suffix}" for role in FOLLOW_ROLES}
        return FollowTables(
            follow_state_table(metadata, name["state"]),
            Table(name["products"], metadata, self._key("asin"), Column("brand_id", BigInteger, nullable=True),
                  PrimaryKeyConstraint("asin", name=f"pk_{name['products']}")),
            Table(name["brands"], metadata, Column("brand_id", BigInteger, nullable=False, autoincrement=False),
                  Column("category_id", BigInteger, nullable=True),
                  PrimaryKeyConstraint("brand_id", name=f"pk_{name['brands']}"),
                  Index(f"ix_{name['brands']}_category", "category_id")),
            Table(name["categories"], metadata, Column("category_id", BigInteger, nullable=False, autoincrement=False),
                  PrimaryKeyConstraint("category_id", name=f"pk_{name['categories']}")))

    def deltas(self) -> Tiers:
        """Session-local tables of one batch's signed deltas, with the tiers' columns.

        Their key is an index, not a primary key: two keys the database's collation equates ('us', 'US')
        are two delta rows that the upsert into the tier adds up, as a refresh's GROUP BY would."""
        metadata = MetaData()
        tables = []
        for tier in self.live():
            name = tier.name + DELTA_SUFFIX
            columns = [Column(c.name, c.type, nullable=c.nullable) for c in tier.columns]
            key = [c.name for c in tier.primary_key.columns]
            tables.append(Table(name, metadata, *columns, Index(f"ix_{name}", *key), prefixes=["TEMPORARY"],
                                mysql_engine="MEMORY"))  # MySQL/MariaDB: a batch's deltas need no disk
        return Tiers(*tables)

    def _key(self, name: str) -> Column[str]:
        length = self.config.get("summary", f"{name}_length")
        return Column(name, String(length), nullable=False)

    def _measures(self) -> list[Column[object]]:
        return [Column("value", self.value_type(), nullable=False),
                Column("row_count", BigInteger, nullable=False),
                Column("refreshed_at", DateTime, nullable=False)]

    def _asin_table(self, metadata: MetaData, name: str) -> Table:
        return Table(
            name, metadata,
            Column("month", Date, nullable=False), self._key("asin"), self._key("marketplace"),
            self._key("metric"), Column("brand_id", BigInteger, nullable=False),
            Column("category_id", BigInteger, nullable=False), *self._measures(),
            PrimaryKeyConstraint("month", "asin", "marketplace", "metric", name=f"pk_{name}"),
            Index(f"ix_{name}_brand", "brand_id", "month"),
        )

    def _brand_table(self, metadata: MetaData, name: str) -> Table:
        return Table(
            name, metadata,
            Column("month", Date, nullable=False), Column("brand_id", BigInteger, nullable=False),
            self._key("marketplace"), self._key("metric"),
            Column("category_id", BigInteger, nullable=False), *self._measures(),
            PrimaryKeyConstraint("month", "brand_id", "marketplace", "metric", name=f"pk_{name}"),
            Index(f"ix_{name}_market", "marketplace", "month", "metric"),
            Index(f"ix_{name}_category", "category_id", "month"),
        )

    def _category_table(self, metadata: MetaData, name: str) -> Table:
        return Table(
            name, metadata,
            Column("month", Date, nullable=False), Column("category_id", BigInteger, nullable=False),
            self._key("metric"), *self._measures(),
            PrimaryKeyConstraint("month", "category_id", "metric", name=f"pk_{name}"),
            Index(f"ix_{name}_category", "category_id", "month"),
        )


# The run history keeps microseconds, so a run's duration is exact (MySQL's DATETIME keeps whole seconds)
RUN_TIME = DateTime().with_variant(MYSQL_DATETIME(fsp=6), "mysql", "mariadb")


def runs_table(metadata: MetaData, name: str) -> Table:
    """The run history: one row per refresh, written as it goes."""
    return Table(
        name, metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("mode", String(16), nullable=False),
        Column("months", Text, nullable=True),
        Column("status", String(16), nullable=False),
        Column("started_at", RUN_TIME, nullable=False),
        Column("finished_at", RUN_TIME, nullable=True),
        Column("data_as_of", RUN_TIME, nullable=True),
        Column("rows_asin", BigInteger, nullable=True),
        Column("rows_brand", BigInteger, nullable=True),
        Column("rows_category", BigInteger, nullable=True),
        Column("plan", Text, nullable=True),
        Column("steps", Text, nullable=True),
        Column("error", Text, nullable=True),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("version", String(32), nullable=False),
        Index(f"ix_{name}_status", "status", "started_at"),
    )


def data_version_table(metadata: MetaData, name: str) -> Table:
    """One row (``id`` 1): a number that changes in the same transaction as every change to the live tiers."""
    return Table(
        name, metadata,
        Column("id", Integer, nullable=False, autoincrement=False),
        Column("version", BigInteger, nullable=False),
        PrimaryKeyConstraint("id", name=f"pk_{name}"),
    )


def follow_state_table(metadata: MetaData, name: str) -> Table:
    """One row (``id`` 1): the stream position the tiers are exact at, and how the follower is doing.

    ``position`` and ``data_version`` change only in the transaction of a batch (or in a full refresh's swap,
    which hands a new position over); the other columns are the follower's report for ``status``."""
    return Table(
        name, metadata,
        Column("id", Integer, nullable=False, autoincrement=False),
        Column("position", String(255), nullable=False),
        Column("data_version", BigInteger, nullable=False),  # the data version the tiers had at position
        Column("committed_at", RUN_TIME, nullable=True),      # the source commit time of the last applied change
        Column("applied_at", RUN_TIME, nullable=True),
        Column("lag_seconds", Numeric(12, 3), nullable=True),  # applied_at - committed_at of the last batch
        Column("changes", BigInteger, nullable=False),        # row changes applied since the handover
        Column("batches", BigInteger, nullable=False),
        Column("rate", Numeric(12, 1), nullable=True),        # row changes per second over the last minute
        Column("waiting", BigInteger, nullable=True),         # what the stream had waiting at checked_at
        Column("checked_at", RUN_TIME, nullable=True),        # when the follower last looked at the stream
        Column("handover_at", RUN_TIME, nullable=True),       # when a full refresh handed this position over
        Column("host", String(255), nullable=True),
        Column("pid", Integer, nullable=True),
        Column("error", Text, nullable=True),
        Column("error_at", RUN_TIME, nullable=True),
        PrimaryKeyConstraint("id", name=f"pk_{name}"),
    )


def covering_index_columns(source: Source) -> list[str]:
    """The raw-table index the refresh reads through: month (or the date) first, then the group keys, then the
    value columns (long form: value; wide: every measure column)."""
    return [c.name for c in source.read_columns()]


def covering_index_name(source: Source) -> str:
    return f"ix_{source.financials.name}_summarizer"[:63]


def changed_index_columns(source: Source) -> list[str]:
    assert source.updated_at is not None
    return [source.updated_at.name, source.month.name]


def changed_index_name(source: Source) -> str:
    return f"ix_{source.financials.name}_summarizer_changed"[:63]
