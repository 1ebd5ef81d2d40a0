"""Pure builders of the refresh and verify statements; nothing here touches a database.

Tier 1 is aggregated from the raw table first and joined to products, brands and categories
afterwards, so the joins look up one row per group rather than one per raw row. Tier 2 is built from tier 1, its
``ALL`` rows from its own per-marketplace rows, and tier 3 from tier 2's ``ALL`` rows: the raw table
is read once per refresh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Delete,
    Insert,
    Select,
    String,
    Table,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause

from .model import Schema, Source

TIER1_COLUMNS = ("month", "asin", "marketplace", "metric", "brand_id", "category_id",
                 "value", "row_count", "refreshed_at")
TIER2_COLUMNS = ("month", "brand_id", "marketplace", "metric", "category_id",
                 "value", "row_count", "refreshed_at")
TIER3_COLUMNS = ("month", "category_id", "metric", "value", "row_count", "refreshed_at")


Stamp = dt.datetime | ColumnElement[dt.datetime]


def _stamp(refreshed_at: Stamp) -> ColumnElement[dt.datetime]:
    value = literal(refreshed_at, DateTime) if isinstance(refreshed_at, dt.datetime) else refreshed_at
    return value.label("refreshed_at")


def _month_filter(query: Select[Any], column: ColumnElement[Any], month: ColumnElement[Any] | None) -> Select[Any]:
    return query if month is None else query.where(column == month)


class Rollup:
    """The statements of one configured rollup.

    ``month`` is what a month chunk compares with: the ``:month`` parameter by default (the
    ``sql/`` files use a session variable instead). ``by_month=False`` drops the filter: all months.
    """

    def __init__(self, source: Source, schema: Schema, month: ColumnElement[dt.date] | None = None) -> None:
        self.source = source
        self.schema = schema
        self.month = month if month is not None else bindparam("month", type_=Date)
        self.unassigned = literal(schema.unassigned, BigInteger)
        self.all_marketplace = literal(schema.all_marketplace, String)

    def _month(self, by_month: bool) -> ColumnElement[dt.date] | None:
        return self.month if by_month else None

    # --- tier 1 ---------------------------------------------------------------------------------
    def tier1_select(self, refreshed_at: Stamp, *, by_month: bool) -> Select[tuple[object, ...]]:
        """Tier 1 rows; ``by_month`` reads one month of the raw table (one chunk)."""
        s = self.source
        f = s.financials.alias("f")
        keys = [f.c[col.name].label(role) for role, col in
                (("month", s.month), ("asin", s.asin), ("marketplace", s.marketplace), ("metric", s.metric))]
        grouped = select(*keys, func.sum(f.c[s.value.name]).label("value"), func.count().label("row_count"))
        grouped = _month_filter(grouped, f.c[s.month.name], self._month(by_month))
        g = grouped.group_by(*(f.c[k.element.name] for k in keys)).subquery("g")
        p, b, c = s.products.alias("p"), s.brands.alias("b"), s.categories.alias("c")
        product_brand = p.c[s.product_brand.name]
        brand = func.coalesce(product_brand, self.unassigned)
        # a category id with no categories row is unassigned, as a brand id with no brands row is
        category = case((brand == self.unassigned, self.unassigned),
                        else_=func.coalesce(c.c[s.category_id.name], self.unassigned))
        joined = g.outerjoin(p, p.c[s.product_asin.name] == g.c.asin).outerjoin(
            b, b.c[s.brand_id.name] == product_brand).outerjoin(
            c, c.c[s.category_id.name] == b.c[s.brand_category.name])
        return select(g.c.month, g.c.asin, g.c.marketplace, g.c.metric, brand.label("brand_id"),
                      category.label("category_id"), g.c.value, g.c.row_count,
                      _stamp(refreshed_at)).select_from(joined)

    def tier1_insert(self, target: Table, refreshed_at: Stamp, *, by_month: bool) -> Insert:
        return insert(target).from_select(list(TIER1_COLUMNS), self.tier1_select(refreshed_at, by_month=by_month))

    # --- tiers 2 and 3 --------------------------------------------------------------------------
    def tier2_inserts(self, target: Table, tier1: Table, refreshed_at: Stamp, *, by_month: bool = True) -> list[Insert]:
        """The month's per-marketplace rows from tier 1, then its ALL rows from those."""
        t1, t2 = tier1.alias("t1"), target.alias("t2")
        stamp, month = _stamp(refreshed_at), self._month(by_month)
        per_market = _month_filter(select(
            t1.c.month, t1.c.brand_id, t1.c.marketplace, t1.c.metric, t1.c.category_id, *self._sums(t1), stamp
        ), t1.c.month, month).group_by(t1.c.month, t1.c.brand_id, t1.c.marketplace, t1.c.metric, t1.c.category_id)
        all_markets = _month_filter(select(
            t2.c.month, t2.c.brand_id, self.all_marketplace, t2.c.metric, t2.c.category_id, *self._sums(t2), stamp
        ).where(t2.c.marketplace != self.all_marketplace), t2.c.month, month).group_by(
            t2.c.month, t2.c.brand_id, t2.c.metric, t2.c.category_id)
        return [insert(target).from_select(list(TIER2_COLUMNS), per_market),
                insert(target).from_select(list(TIER2_COLUMNS), all_markets)]

    def tier3_insert(self, target: Table, tier2: Table, refreshed_at: Stamp, *, by_month: bool = True) -> Insert:
        """The month's category rows from tier 2's ALL rows."""
        t2 = tier2.alias("t2")
        rows = _month_filter(select(
            t2.c.month, t2.c.category_id, t2.c.metric, *self._sums(t2), _stamp(refreshed_at)
        ).where(t2.c.marketplace == self.all_marketplace), t2.c.month, self._month(by_month)).group_by(
            t2.c.month, t2.c.category_id, t2.c.metric)
        return insert(target).from_select(list(TIER3_COLUMNS), rows)

    @staticmethod
    def _sums(table: FromClause) -> tuple[ColumnElement[object], ColumnElement[object]]:
        return func.sum(table.c.value).label("value"), func.sum(table.c.row_count).label("row_count")

    def month_statements(self, tiers: Sequence[Table], refreshed_at: Stamp,
                         *, with_tier1: bool = True) -> list[Delete | Insert]:
        """Replace one month (``:month``) in every tier: delete, then insert, tier by tier."""
        t1, t2, t3 = tiers
        statements: list[Delete | Insert] = []
        if with_tier1:
            statements += [self.delete_month(t1), self.tier1_insert(t1, refreshed_at, by_month=True)]
        statements += [self.delete_month(t2), *self.tier2_inserts(t2, t1, refreshed_at)]
        statements += [self.delete_month(t3), self.tier3_insert(t3, t2, refreshed_at)]
        return statements

    def delete_month(self, table: Table) -> Delete:
        return delete(table).where(table.c.month == self.month)

    def staged_month_statements(self, tiers: Sequence[Table], staged: Sequence[Table]) -> list[Delete | Insert]:
        """Replace one month (``:month``) in every tier with its rows from ``staged`` (computed elsewhere)."""
        statements: list[Delete | Insert] = []
        for target, stage in zip(tiers, staged, strict=True):
            columns = [c.name for c in target.columns]
            rows = select(*(stage.c[c] for c in columns)).where(stage.c.month == self.month)
            statements += [self.delete_month(target), insert(target).from_select(columns, rows)]
        return statements

    def source_month_predicate(self, month: dt.date) -> ColumnElement[bool]:
        """The raw rows of one month: the WHERE clause of one partition of a parallel read."""
        return self.source.financials.c[self.source.month.name] == literal(month, Date)

    @staticmethod
    def delete_all(table: Table) -> Delete:
        return delete(table)

    @staticmethod
    def probe(table: Table) -> Select[Any]:
        """Reads at most one row; queues behind a rename of ``table`` that is waiting for readers."""
        return select(literal(1)).select_from(table).limit(1)

    def reserved_marketplace(self, months: Sequence[dt.date] = (), *, tier1: Table | None = None) -> Select[Any]:
        """At most one marketplace equal to the label of tier 2's all-marketplaces rows, which it collides with.

        Read from ``tier1`` when given (a full refresh's shadow), else from the raw table; ``months``
        limits it to those months. The database compares, so a value its collation equates is found too.
        """
        marketplace: ColumnElement[Any]
        month: ColumnElement[Any]
        if tier1 is not None:
            marketplace, month = tier1.c.marketplace, tier1.c.month
        else:
            f = self.source.financials
            marketplace, month = f.c[self.source.marketplace.name], f.c[self.source.month.name]
        query = select(marketplace).where(marketplace == self.all_marketplace)
        if months:
            query = query.where(month.in_(list(months)))
        return query.limit(1)

    # --- months ---------------------------------------------------------------------------------
    def source_months(self) -> Select[Any]:
        """Distinct months of the raw table (a loose index scan where month leads an index)."""
        month = self.source.financials.c[self.source.month.name]
        return select(month).distinct().order_by(month)

    def months_present(self, months: Sequence[dt.date]) -> Select[Any]:
        """Which of ``months`` the raw table has rows for."""
        month = self.source.financials.c[self.source.month.name]
        return select(month).distinct().where(month.in_(list(months)))

    def source_months_by_lookups(self) -> Select[Any]:
        """The same months, one index lookup each (``MIN(month) WHERE month > previous``, recursively).

        For databases without a loose index scan (PostgreSQL), where ``SELECT DISTINCT`` reads the
        whole index; use it only where an index leads with month, or each lookup scans the table.
        """
        month = self.source.financials.c[self.source.month.name]
        first = select(func.min(month).label("month")).cte("months", recursive=True)
        previous = first.alias("previous")
        following = select(func.min(month)).where(month > previous.c.month).scalar_subquery()
        months = first.union_all(select(following).where(previous.c.month.is_not(None)))
        return select(months.c.month).where(months.c.month.is_not(None)).order_by(months.c.month)

    @staticmethod
    def table_months(table: Table) -> Select[Any]:
        return select(table.c.month).distinct().order_by(table.c.month)

    def changed_months(self) -> Select[Any]:
        """Months with raw rows changed at or after ``:since`` (needs the updated_at column)."""
        s = self.source
        assert s.updated_at is not None
        f = s.financials
        return (select(f.c[s.month.name]).distinct()
                .where(f.c[s.updated_at.name] >= bindparam("since", type_=DateTime))
                .order_by(f.c[s.month.name]))

    # --- verify ---------------------------------------------------------------------------------
    def raw_totals(self, months: Sequence[dt.date] | None) -> Select[tuple[object, ...]]:
        """Per month and metric: SUM(value), COUNT(*), and SUM(ABS(value)) (the scale of REAL rounding)."""
        s = self.source
        f = s.financials
        month, metric, value = f.c[s.month.name], f.c[s.metric.name], f.c[s.value.name]
        query = select(month, metric, func.sum(value), func.count(), func.sum(func.abs(value)))
        if months:
            query = query.where(month.in_(months))
        return query.group_by(month, metric)

    def tier_totals(self, table: Table, months: Sequence[dt.date] | None,
                    *, all_rows: bool | None = None) -> Select[tuple[object, ...]]:
        """Totals per month and metric; ``all_rows`` picks tier 2's ALL rows (True) or the others."""
        query = select(table.c.month, table.c.metric, func.sum(table.c.value), func.sum(table.c.row_count))
        if months:
            query = query.where(table.c.month.in_(months))
        if all_rows is not None:
            marketplace = table.c.marketplace
            query = query.where(marketplace == self.all_marketplace if all_rows
                                else marketplace != self.all_marketplace)
        return query.group_by(table.c.month, table.c.metric)

    def unassigned_share(self, tier2: Table) -> Select[tuple[object, ...]]:
        """Raw rows and absolute value without a brand / without a category, against the totals."""
        t2 = tier2
        no_brand = t2.c.brand_id == self.unassigned
        no_category = t2.c.category_id == self.unassigned
        absolute = func.abs(t2.c.value)
        return select(
            func.sum(t2.c.row_count), func.sum(case((no_brand, t2.c.row_count), else_=0)),
            func.sum(case((no_category, t2.c.row_count), else_=0)), func.sum(absolute),
            func.sum(case((no_brand, absolute), else_=0)), func.sum(case((no_category, absolute), else_=0)),
        ).where(t2.c.marketplace == self.all_marketplace)
