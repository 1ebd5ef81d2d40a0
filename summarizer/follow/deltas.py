"""Committed row changes turned into signed deltas of the three tiers: pure Python, no database.

The counting algorithm of incremental view maintenance: each tier row holds a SUM (``value``) and a
COUNT (``row_count``), both of which take signed deltas, and a group whose count reaches 0 is gone.

* A raw row contributes ``(month, asin, marketplace, metric, value)`` (:func:`contributions`, the one
  place that says so). An insert adds ``(value, 1)`` to its tier-1 group, a delete adds ``(-value, -1)``,
  an update both: the old row out of its old group, the new row into its new one.
* A tier-1 row belongs to the brand and category of its ASIN (:class:`Mapping`, the unassigned rule of
  docs/data-rules.md). A batch ends at a transaction boundary, so the tiers after a batch are the
  final raw rows under the final mapping: for the ASINs whose brand the batch changed, their tier-1
  rows as they were before the batch leave the old brand and enter the new one (with the batch's own
  deltas); for the brands whose category changed, their tier-2 ``ALL`` rows move between categories in
  tier 3 the same way. Everything else adds its deltas where the mapping puts them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as ReadMapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..model import Source
from .stream import Op, RowChange, Transaction

Key1 = tuple[dt.date, str, str, str]      # month, asin, marketplace, metric
Key2 = tuple[dt.date, int, str, str]      # month, brand_id, marketplace, metric
Key3 = tuple[dt.date, int, str]           # month, category_id, metric
Contribution = tuple[dt.date, str, str, str, Decimal]
ZERO = Decimal(0)


def contributions(row: ReadMapping[str, object], source: Source) -> list[Contribution]:
    """What one raw row adds to tier 1: ``(month, asin, marketplace, metric, value)`` for each of its measures.

    The one place that knows how a raw row maps to tier-1 groups (one measure column today)."""
    value = row[source.value.name]
    return [(_month(row[source.month.name]), str(row[source.asin.name]), str(row[source.marketplace.name]),
             str(row[source.metric.name]), value if isinstance(value, Decimal) else Decimal(str(value)))]


def _month(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


@dataclass
class Sums:
    """Signed sums of ``value`` and ``row_count`` per group."""

    rows: dict[Any, list[Any]] = field(default_factory=lambda: defaultdict(lambda: [ZERO, 0]))

    def add(self, key: Any, value: Decimal, count: int) -> None:
        entry = self.rows[key]
        entry[0] += value
        entry[1] += count

    def get(self, key: Any) -> tuple[Decimal, int]:
        entry = self.rows.get(key)
        return (entry[0], entry[1]) if entry is not None else (ZERO, 0)

    def items(self) -> Iterable[tuple[Any, tuple[Decimal, int]]]:
        return ((key, (v, c)) for key, (v, c) in self.rows.items())

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Changes:
    """A batch's changes sorted out: tier-1 deltas of the raw rows, and the dimension rows in stream order."""

    tier1: Sums = field(default_factory=Sums)
    dimensions: list[RowChange] = field(default_factory=list)
    rows: int = 0  # row changes seen

    def of_table(self, table: str) -> list[RowChange]:
        return [change for change in self.dimensions if change.table == table]


def sort_out(transactions: Sequence[Transaction], source: Source) -> Changes:
    """The raw-row deltas of ``transactions`` and their dimension changes, in order."""
    changes = Changes()
    raw = source.financials.name
    for transaction in transactions:
        for change in transaction.changes:
            changes.rows += 1
            if change.table == raw:
                _raw_change(changes.tier1, change, source)
            else:
                changes.dimensions.append(change)
    return changes


def _raw_change(tier1: Sums, change: RowChange, source: Source) -> None:
    if change.op in (Op.UPDATE, Op.DELETE) and change.before is not None:
        for month, asin, market, metric, value in contributions(change.before, source):
            tier1.add((month, asin, market, metric), -value, -1)
    if change.op in (Op.UPDATE, Op.INSERT) and change.after is not None:
        for month, asin, market, metric, value in contributions(change.after, source):
            tier1.add((month, asin, market, metric), value, 1)


@dataclass
class Mapping:
    """Products, brands and categories as far as a batch needs them; the unassigned rule of docs/data-rules.md.

    ``products``: asin -> brand id (None: the product has no brand; absent: no product row);
    ``brands``: brand id -> category id (None: no category); ``categories``: the category ids that exist."""

    unassigned: int
    products: dict[str, int | None] = field(default_factory=dict)
    brands: dict[int, int | None] = field(default_factory=dict)
    categories: set[int] = field(default_factory=set)

    def brand(self, asin: str) -> int:
        brand = self.products.get(asin)
        return self.unassigned if brand is None else brand

    def category(self, brand: int) -> int:
        if brand == self.unassigned:
            return self.unassigned
        category = self.brands.get(brand)
        return category if category is not None and category in self.categories else self.unassigned

    def copy(self) -> Mapping:
        return Mapping(self.unassigned, dict(self.products), dict(self.brands), set(self.categories))


@dataclass(frozen=True)
class DimensionColumns:
    """The configured column names of the dimension tables, by role, and the table names."""

    products: str
    product_asin: str
    product_brand: str
    brands: str
    brand_id: str
    brand_category: str
    categories: str
    category_id: str

    @classmethod
    def of(cls, source: Source) -> DimensionColumns:
        return cls(source.products.name, source.product_asin.name, source.product_brand.name, source.brands.name,
                   source.brand_id.name, source.brand_category.name, source.categories.name, source.category_id.name)


def apply_dimensions(before: Mapping, changes: Iterable[RowChange], columns: DimensionColumns) -> Mapping:
    """The mapping after ``changes`` (dimension rows, in stream order) were made to ``before``."""
    after = before.copy()
    for change in changes:
        old, new = change.before, change.after
        if change.table == columns.products:
            if old is not None:
                after.products.pop(str(old[columns.product_asin]), None)
            if new is not None:
                after.products[str(new[columns.product_asin])] = _id(new[columns.product_brand])
        elif change.table == columns.brands:
            if old is not None and old[columns.brand_id] is not None:
                after.brands.pop(int(str(old[columns.brand_id])), None)
            if new is not None and new[columns.brand_id] is not None:
                after.brands[int(str(new[columns.brand_id]))] = _id(new[columns.brand_category])
        elif change.table == columns.categories:
            if old is not None and old[columns.category_id] is not None:
                after.categories.discard(int(str(old[columns.category_id])))
            if new is not None and new[columns.category_id] is not None:
                after.categories.add(int(str(new[columns.category_id])))
    return after


def _id(value: object) -> int | None:
    return None if value is None else int(str(value))


@dataclass
class TierDeltas:
    """What a batch does to the tiers: rows to add (key, attributes, value, row_count), and the brands whose
    category changed (their other rows take the new category)."""

    tier1: list[tuple[Any, ...]]
    tier2: list[tuple[Any, ...]]
    tier3: list[tuple[Any, ...]]
    recategorised: dict[int, int]  # brand id -> its new category id


def moved_asins(asins: Iterable[str], before: Mapping, after: Mapping) -> set[str]:
    return {asin for asin in asins if before.brand(asin) != after.brand(asin)}


def moved_brands(brands: Iterable[int], before: Mapping, after: Mapping) -> set[int]:
    return {brand for brand in brands if before.category(brand) != after.category(brand)}


def tier_deltas(tier1: Sums, before: Mapping, after: Mapping, moved: set[str],
                old_tier1: Iterable[tuple[Key1, Decimal, int]], recategorised: set[int],
                old_all: Iterable[tuple[dt.date, int, str, Decimal, int]], all_marketplace: str) -> TierDeltas:
    """The rows a batch adds to each tier (a group whose deltas cancel out is left alone).

    ``old_tier1``: the tier-1 rows of the ``moved`` ASINs before the batch; ``old_all``: the tier-2 rows of
    marketplace ``ALL`` of the ``recategorised`` brands before the batch, as (month, brand, metric, value, count).
    """
    rows1: dict[Key1, tuple[Decimal, int]] = {key: delta for key, delta in tier1.items() if delta != (ZERO, 0)}
    tier2 = Sums()
    for (month, asin, market, metric), (value, count) in tier1.items():
        brand = after.brand(asin)
        for m in (market, all_marketplace):
            tier2.add((month, brand, m, metric), value, count)
    for (month, asin, market, metric), value, count in old_tier1:  # a moved ASIN's rows change brand
        rows1.setdefault((month, asin, market, metric), (ZERO, 0))
        old, new = before.brand(asin), after.brand(asin)
        for m in (market, all_marketplace):
            tier2.add((month, old, m, metric), -value, -count)
            tier2.add((month, new, m, metric), value, count)
    tier3 = Sums()
    for (month, brand, market, metric), (value, count) in tier2.items():
        if market == all_marketplace:
            tier3.add((month, after.category(brand), metric), value, count)
    for month, brand, metric, value, count in old_all:  # a recategorised brand's rows change category
        tier3.add((month, before.category(brand), metric), -value, -count)
        tier3.add((month, after.category(brand), metric), value, count)
    return TierDeltas(
        tier1=[(*key, after.brand(key[1]), after.category(after.brand(key[1])), v, c) for key, (v, c) in rows1.items()],
        tier2=[(month, brand, market, metric, after.category(brand), v, c)
               for (month, brand, market, metric), (v, c) in tier2.items() if (v, c) != (ZERO, 0)],
        tier3=[(*key, v, c) for key, (v, c) in tier3.items() if (v, c) != (ZERO, 0)],
        recategorised={brand: after.category(brand) for brand in recategorised})


def brands_of(mapping: Mapping, asins: Iterable[str]) -> set[int]:
    return {mapping.brand(asin) for asin in asins}
