"""Pure builders of the refresh and verify statements; nothing here touches a database.

Tier 1 is aggregated from the raw table first and joined to products, brands and categories
afterwards, so the joins look up one row per group rather than one per raw row. Tier 2 is built from tier 1
(its per-marketplace and its ``ALL`` rows in one statement), and tier 3 from tier 2's ``ALL`` rows: the raw
table is read once per refresh.

What a raw row gives the tiers (:meth:`Rollup.raw_groups`, the one rule every read of the raw table
follows): its month is the month column's value, or with ``date_column`` the first day of the date's
month; a long row gives its ``value`` to its ``metric``; a wide row gives each measure column's value to
that measure's metric, and nothing to a metric whose column is NULL. ``row_count`` counts the raw rows
that gave a value. A month chunk of a date column is the half-open range ``[month, next month)``, which
an index leading with the date column serves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Date,
    DateTime,
    Delete,
    Insert,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement
from sqlalchemy.sql.expression import Executable, FromClause

from .dialects import month_after, month_start
from .model import Schema, Source
from .months import add_months

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


Month = dt.date | ColumnElement[dt.date]


def within_month(column: ColumnElement[Any], month: Month) -> ColumnElement[bool]:
    """``column`` (a date or timestamp) in ``[month, next month)``: a range an index on it serves."""
    if isinstance(month, dt.date):
        return and_(column >= literal(month, Date), column < literal(add_months(month, 1), Date))
    return and_(column >= month, column < month_after(month))


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

    # --- the raw rows ---------------------------------------------------------------------------
    def raw_groups(self, *, by_month: bool) -> Select[tuple[object, ...]]:
        """The raw rows summed per (month, asin, marketplace, metric): ``value`` and ``row_count``, one read of
        the raw table; ``by_month`` reads one month (one chunk). The rule of the module docstring.

        A wide table is grouped once by (month, asin, marketplace) with SUM and COUNT of each measure
        column, and the groups are then unpivoted: crossed with the list of metrics, keeping a metric
        whose COUNT is not 0."""
        s = self.source
        f = s.financials.alias("f")
        month, group_month, where = self._raw_month(f.c[s.month.name], by_month)
        keys = [f.c[s.asin.name].label("asin"), f.c[s.marketplace.name].label("marketplace")]
        if not s.wide:
            keys.append(f.c[s.metric.name].label("metric"))
            grouped = select(month.label("month"), *keys, func.sum(f.c[s.value.name]).label("value"),
                             func.count().label("row_count"))
        else:
            grouped = select(month.label("month"), *keys, *self._measure_sums(f))
        grouped = grouped.group_by(*group_month, *(k.element for k in keys))
        grouped = grouped if where is None else grouped.where(where)
        if not s.wide:
            return grouped
        return self._unpivot(grouped.subquery("w"), ("month", "asin", "marketplace"), ("value", "row_count"))

    def _raw_month(self, raw: ColumnElement[Any], by_month: bool) -> tuple[
            ColumnElement[Any], list[ColumnElement[Any]], ColumnElement[bool] | None]:
        """A raw row's month, what to group by for it, and the chunk's WHERE clause (None: every month).

        A chunk of a date column is its month's range, so every row in it has the chunk's month: the
        month is the parameter, and the rows are grouped by the other keys only."""
        if not self.source.dated:
            return raw, [raw], raw == self.month if by_month else None
        if by_month:
            return self.month, [], within_month(raw, self.month)
        start = month_start(raw)
        return start, [start], None

    def _measure_sums(self, f: FromClause, *, absolute: bool = False) -> list[ColumnElement[Any]]:
        """Per measure ``i``: ``v<i>`` = SUM, ``n<i>`` = COUNT (rows where it is not NULL), ``a<i>`` = SUM(ABS)."""
        sums: list[ColumnElement[Any]] = []
        for i, measure in enumerate(self.source.measures):
            value = f.c[measure.column.name]
            sums += [func.sum(value).label(f"v{i}"), func.count(value).label(f"n{i}")]
            sums += [func.sum(func.abs(value)).label(f"a{i}")] if absolute else []
        return sums

    def _unpivot(self, grouped: FromClause, keys: Sequence[str], measures: Sequence[str]) -> Select[Any]:
        """One row per group and metric from ``grouped``'s per-measure columns (``v<i>``, ``n<i>``, ``a<i>``):
        ``measures`` names what each letter becomes (value, row_count, and maybe the absolute sum)."""
        metrics = union_all(*(select(literal_column(str(i)).label("i"), literal(m.metric, String).label("metric"))
                              for i, m in enumerate(self.source.measures))).subquery("m")

        def pick(letter: str) -> ColumnElement[Any]:
            return case({literal_column(str(i)): grouped.c[f"{letter}{i}"]
                         for i in range(len(self.source.measures))}, value=metrics.c.i)
        letters = dict(zip(("value", "row_count", "absolute"), "vna", strict=False))
        return (select(*(grouped.c[k] for k in keys), metrics.c.metric,
                       *(pick(letters[name]).label(name) for name in measures))
                .select_from(grouped.join(metrics, literal_column("1") == literal_column("1")))  # a cross join
                .where(pick("n") > 0))

    # --- tier 1 ---------------------------------------------------------------------------------
    def tier1_select(self, refreshed_at: Stamp, *, by_month: bool) -> Select[tuple[object, ...]]:
        """Tier 1 rows; ``by_month`` reads one month of the raw table (one chunk)."""
        s = self.source
        g = self.raw_groups(by_month=by_month).subquery("g")
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
        """The month's tier 2 in one statement (:meth:`tier2_select`)."""
        return [insert(target).from_select(list(TIER2_COLUMNS), self.tier2_select(tier1, refreshed_at,
                                                                                  by_month=by_month))]

    def tier2_select(self, tier1: Table, refreshed_at: Stamp, *, by_month: bool = True) -> Select[Any]:
        """The month's per-marketplace rows and its ALL rows, both summed from its tier-1 rows while they are
        in memory, in the tier's key order (an insert that appends rather than splits pages)."""
        t1 = tier1.alias("t1")
        stamp, month = _stamp(refreshed_at), self._month(by_month)
        per_market = _month_filter(select(
            t1.c.month, t1.c.brand_id, t1.c.marketplace, t1.c.metric, t1.c.category_id, *self._sums(t1), stamp
        ), t1.c.month, month).group_by(t1.c.month, t1.c.brand_id, t1.c.marketplace, t1.c.metric, t1.c.category_id)
        all_markets = _month_filter(select(
            t1.c.month, t1.c.brand_id, self.all_marketplace.label("marketplace"), t1.c.metric, t1.c.category_id,
            *self._sums(t1), stamp
        ), t1.c.month, month).group_by(t1.c.month, t1.c.brand_id, t1.c.metric, t1.c.category_id)
        both = union_all(per_market, all_markets).subquery("u")
        return select(*(both.c[c] for c in TIER2_COLUMNS)).order_by(
            both.c.month, both.c.brand_id, both.c.marketplace, both.c.metric)

    def tier3_insert(self, target: Table, tier2: Table, refreshed_at: Stamp, *, by_month: bool = True) -> Insert:
        return insert(target).from_select(list(TIER3_COLUMNS), self.tier3_select(tier2, refreshed_at,
                                                                                  by_month=by_month))

    def tier3_select(self, tier2: Table, refreshed_at: Stamp, *, by_month: bool = True) -> Select[Any]:
        """The month's category rows from tier 2's ALL rows."""
        t2 = tier2.alias("t2")
        return _month_filter(select(
            t2.c.month, t2.c.category_id, t2.c.metric, *self._sums(t2), _stamp(refreshed_at)
        ).where(t2.c.marketplace == self.all_marketplace), t2.c.month, self._month(by_month)).group_by(
            t2.c.month, t2.c.category_id, t2.c.metric)

    def tiers_as_select(self, tiers: Sequence[Table], refreshed_at: Stamp) -> list[tuple[str, list[Any]]]:
        """Each tier made anew by ``CREATE TABLE ... AS SELECT`` over every month, then given its NOT NULLs and
        primary key: (step, statements), tier by tier, each tier's from the one before (one transaction each
        where DDL is transactional). The SELECT casts every column to the tier's type, so the table has the
        shape :class:`~summarizer.model.Schema` gives it."""
        t1, t2, _ = tiers
        selects = [self.tier1_select(refreshed_at, by_month=False), self.tier2_select(t1, refreshed_at, by_month=False),
                   self.tier3_select(t2, refreshed_at, by_month=False)]
        return [(f"tier{n}", [DropTableIfExists(table), CreateTableAs(table, _typed(table, rows)),
                              AddNotNullAndKey(table)])
                for n, (table, rows) in enumerate(zip(tiers, selects, strict=True), start=1)]

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

    def source_month_predicate(self, month: dt.date, raw: FromClause | None = None) -> ColumnElement[bool]:
        """The raw rows of one month: the WHERE clause of one partition of a parallel read (of ``raw``, which
        names the raw table's month column, default the raw table)."""
        return self.raw_in_months([month], raw)

    def raw_rows_select(self, month_label: str) -> Select[Any]:
        """The raw table's columns the tiers are computed from, and each row's month as ``month_label`` (the
        rule of :meth:`raw_groups`): what another engine reads to compute the tiers by the same rule."""
        s = self.source
        return select(self.raw_month().label(month_label), *(s.financials.c[c.name] for c in s.read_columns()))

    def raw_in_months(self, months: Sequence[dt.date], raw: FromClause | None = None) -> ColumnElement[bool]:
        """The raw rows of ``months`` (of ``raw``, default the raw table): ``month IN (...)``, or each month's
        range of the date column."""
        column = (raw if raw is not None else self.source.financials).c[self.source.month.name]
        if not self.source.dated:
            return column == literal(months[0], Date) if len(months) == 1 else column.in_(list(months))
        return or_(*(within_month(column, month) for month in months))

    def raw_month(self) -> ColumnElement[Any]:
        """A raw row's month, computed from the row (the month column, or its date's month)."""
        column = self.source.financials.c[self.source.month.name]
        return month_start(column) if self.source.dated else column

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
        if tier1 is not None:
            query = select(tier1.c.marketplace).where(tier1.c.marketplace == self.all_marketplace)
            return (query.where(tier1.c.month.in_(list(months))) if months else query).limit(1)
        raw = self.source.financials.c[self.source.marketplace.name]
        query = select(raw).where(raw == self.all_marketplace)
        return (query.where(self.raw_in_months(months)) if months else query).limit(1)

    # --- months ---------------------------------------------------------------------------------
    def source_months(self) -> Select[Any]:
        """Distinct months of the raw table (a loose index scan where month leads an index; a date column's
        months: one scan, see :meth:`month_spans` for the way through an index)."""
        month = self.raw_month()
        return select(month.label("month")).distinct().order_by(month)

    def months_present(self, months: Sequence[dt.date]) -> Select[Any]:
        """Which of ``months`` the raw table has rows for."""
        month = self.raw_month()
        return select(month.label("month")).distinct().where(self.raw_in_months(months))

    def source_months_by_lookups(self) -> Select[Any]:
        """The same months, one index lookup each (``MIN(month) WHERE month > previous``, recursively).

        For databases without a loose index scan (PostgreSQL), where ``SELECT DISTINCT`` reads the
        whole index; use it only where an index leads with month, or each lookup scans the table.
        Long form only: a date column's months come from :func:`month_spans`.
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
        month = self.raw_month()
        return (select(month.label("month")).distinct()
                .where(s.financials.c[s.updated_at.name] >= bindparam("since", type_=DateTime))
                .order_by(month))

    # --- verify ---------------------------------------------------------------------------------
    def raw_totals(self, months: Sequence[dt.date] | None) -> Select[tuple[object, ...]]:
        """Per month and metric: SUM(value), COUNT(*), and SUM(ABS(value)) (the scale of REAL rounding), computed
        apart from :meth:`raw_groups` (per month and metric, not per key) but by its rule."""
        s = self.source
        f = s.financials
        month = self.raw_month()
        if s.wide:
            query = select(month.label("month"), *self._measure_sums(f, absolute=True))
        else:
            value = f.c[s.value.name]
            query = select(month, f.c[s.metric.name], func.sum(value), func.count(), func.sum(func.abs(value)))
        if months:
            query = query.where(self.raw_in_months(months))
        if not s.wide:
            return query.group_by(month, f.c[s.metric.name])
        return self._unpivot(query.group_by(month).subquery("w"), ("month",), ("value", "row_count", "absolute"))

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


def _typed(table: Table, rows: Select[Any]) -> Select[Any]:
    """``rows`` with each of ``table``'s columns cast to its type (what an INSERT into it would have converted)."""
    got = rows.subquery("r")
    return select(*(cast(got.c[c.name], c.type).label(c.name) for c in table.columns))


class DropTableIfExists(Executable, ClauseElement):
    inherit_cache = False

    def __init__(self, table: Table) -> None:
        self.table = table


class CreateTableAs(Executable, ClauseElement):
    """``CREATE TABLE <table> AS <rows>``: a table made and filled by one statement."""

    inherit_cache = False

    def __init__(self, table: Table, rows: Select[Any]) -> None:
        self.table, self.rows = table, rows


class AddNotNullAndKey(Executable, ClauseElement):
    """One ``ALTER TABLE``: every NOT NULL column of ``table`` set NOT NULL, and its primary key added."""

    inherit_cache = False

    def __init__(self, table: Table) -> None:
        self.table = table


@compiles(DropTableIfExists)
def _drop(element: DropTableIfExists, compiler: SQLCompiler, **kw: Any) -> str:
    return f"DROP TABLE IF EXISTS {compiler.preparer.format_table(element.table)}"


@compiles(CreateTableAs)
def _create_as(element: CreateTableAs, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CREATE TABLE {compiler.preparer.format_table(element.table)} AS {compiler.process(element.rows, **kw)}"


@compiles(AddNotNullAndKey)
def _not_null_and_key(element: AddNotNullAndKey, compiler: SQLCompiler, **kw: Any) -> str:
    table, quote = element.table, compiler.preparer.quote
    changes = [f"ALTER COLUMN {quote(c.name)} SET NOT NULL" for c in table.columns
               if not c.nullable and not c.primary_key]
    key = ", ".join(quote(c.name) for c in table.primary_key.columns)
    changes.append(f"ADD CONSTRAINT {quote(str(table.primary_key.name))} PRIMARY KEY ({key})")
    return f"ALTER TABLE {compiler.preparer.format_table(table)} {', '.join(changes)}"


def date_bounds(source: Source) -> Select[Any]:
    """The first and the last value of a date column (two index lookups where it leads an index)."""
    column = source.financials.c[source.month.name]
    return select(func.min(column), func.max(column))


def month_spans(source: Source, months: Sequence[dt.date]) -> Select[Any] | CompoundSelect[Any]:
    """For each of ``months``: the month, and the first and the last value of a date column in its range (NULL
    where it has none): two index lookups per month where the column leads an index, in one statement.

    Not a recursive ``MIN(date) WHERE date >= next month`` as :meth:`Rollup.source_months_by_lookups`:
    MariaDB 10.11 scans the index from its start for each step of that (15 s for 36 months of 2M rows)."""
    column = source.financials.c[source.month.name]

    def span(month: dt.date) -> Select[Any]:
        within = within_month(column, month)
        first, last = (select(edge(column)).where(within).scalar_subquery() for edge in (func.min, func.max))
        return select(literal(month, Date).label("month"), first.label("first"), last.label("last"))
    return union_all(*(span(m) for m in months)) if len(months) > 1 else span(months[0])
