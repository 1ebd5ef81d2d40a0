"""One batch, in one transaction: the mapping as of the batch's start, the deltas, and their writes.

The steps, on the follower's connection, inside the transaction that also moves the stream position
and the data version (``follower.py``):

1. the mapping before the batch, for what the batch touches, from the follower's mirror tables;
2. the mapping after it (the batch's dimension changes, in order) and the ASINs and brands it moved;
3. the tier rows those moves take along, as they are before the batch (found by primary key);
4. the deltas (``deltas.py``) into session-local tables, one upsert per tier that adds them, the
   category of recategorised brands, and the groups whose count reached 0 deleted;
5. the mirror rows the batch changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.schema import CreateIndex, CreateTable

from ..dialects import Dialect
from ..model import Schema, Source
from ..months import as_date
from . import statements as sql
from .deltas import (
    Changes,
    DimensionColumns,
    Mapping,
    TierDeltas,
    apply_dimensions,
    moved_asins,
    moved_brands,
    tier_deltas,
)


@dataclass
class Applied:
    """What a batch changed: rows written per tier, ASINs and brands moved."""

    rows: dict[str, int]
    moved_asins: int
    recategorised: int


class BatchWriter:
    """Applies a batch's changes to the tiers and the mirror, on a connection inside its transaction."""

    def __init__(self, dialect: Dialect, schema: Schema, source: Source) -> None:
        self.dialect, self.schema, self.source = dialect, schema, source
        self.tiers, self.deltas, self.follow = schema.live(), schema.deltas(), schema.follow()
        self.columns = DimensionColumns.of(source)
        self.all_marketplace: str = schema.all_marketplace

    def apply(self, conn: Connection, changes: Changes, stamp: dt.datetime) -> Applied:
        asins = self._asins(changes)
        before = self._mapping(conn, changes, asins)
        after = apply_dimensions(before, changes.dimensions, self.columns)
        moved = moved_asins(asins, before, after)
        recategorised = moved_brands(set(before.brands) | self._brand_ids(changes), before, after)
        months = [as_date(m) for m in conn.execute(sql.tier_months(self.tiers)).scalars()] \
            if moved or recategorised else []
        old1 = self._old_tier1(conn, months, sorted(moved))
        old_all = self._old_all(conn, months, sorted(recategorised))
        deltas = tier_deltas(changes.tier1, before, after, moved, old1, recategorised, old_all, self.all_marketplace)
        rows = self._write(conn, deltas, months, stamp)
        self._mirror(conn, changes, after)
        return Applied(rows, len(moved), len(recategorised))

    # --- the mapping ------------------------------------------------------------------------------
    def _asins(self, changes: Changes) -> set[str]:
        """The ASINs of the batch's raw rows and product rows."""
        c = self.columns
        return {key[1] for key in changes.tier1.rows} | {
            str(row[c.product_asin]) for change in changes.of_table(c.products)
            for row in (change.before, change.after) if row}

    def _mapping(self, conn: Connection, changes: Changes, asins: set[str]) -> Mapping:
        """The mapping before the batch, for everything the batch touches."""
        c = self.columns
        mapping = Mapping(self.schema.unassigned)
        for part in sql.in_chunks(sorted(asins)):
            mapping.products.update({str(a): _id(b) for a, b in conn.execute(sql.mirror_products(self.follow, part))})
        categories = {_int(row[c.category_id]) for change in changes.of_table(c.categories)
                      for row in (change.before, change.after) if row}
        categories.discard(None)
        brands = {b for b in mapping.products.values() if b is not None} | self._brand_ids(changes)
        for part in sql.in_chunks(sorted(categories)):  # the brands a category's insert or delete moves
            for brand, category in conn.execute(sql.mirror_brands_in(self.follow, part)):
                mapping.brands[int(brand)] = _id(category)
        for part in sql.in_chunks(sorted(brands - set(mapping.brands))):
            mapping.brands.update({int(b): _id(cat) for b, cat in conn.execute(sql.mirror_brands(self.follow, part))})
        wanted = {cat for cat in mapping.brands.values() if cat is not None} | {
            cat for change in changes.of_table(c.brands) for row in (change.before, change.after) if row
            if (cat := _int(row[c.brand_category])) is not None} | {cat for cat in categories if cat is not None}
        for part in sql.in_chunks(sorted(wanted)):
            found = conn.execute(sql.mirror_categories(self.follow, part)).scalars()
            mapping.categories.update(int(cat) for cat in found)
        return mapping

    def _brand_ids(self, changes: Changes) -> set[int]:
        """Brand ids the batch's product and brand rows name."""
        c = self.columns
        found = {_int(row[c.product_brand]) for change in changes.of_table(c.products)
                 for row in (change.before, change.after) if row}
        found |= {_int(row[c.brand_id]) for change in changes.of_table(c.brands)
                  for row in (change.before, change.after) if row}
        return {b for b in found if b is not None}

    # --- old tier rows --------------------------------------------------------------------------
    def _old_tier1(self, conn: Connection, months: Sequence[dt.date], asins: Sequence[str]) -> list[Any]:
        found = []
        for part in sql.in_chunks(asins, 200):
            found += [((as_date(m), a, mp, me), v, int(n)) for m, a, mp, me, v, n
                      in conn.execute(sql.old_tier1(self.tiers, months, part))]
        return found

    def _old_all(self, conn: Connection, months: Sequence[dt.date], brands: Sequence[int]) -> list[Any]:
        found = []
        for part in sql.in_chunks(brands, 200):
            found += [(as_date(m), int(b), me, v, int(n)) for m, b, me, v, n
                      in conn.execute(sql.old_all_rows(self.tiers, months, part, self.all_marketplace))]
        return found

    # --- writing ----------------------------------------------------------------------------------
    def _write(self, conn: Connection, deltas: TierDeltas, months: Sequence[dt.date],
               stamp: dt.datetime) -> dict[str, int]:
        self._prepare_deltas(conn)
        written = {}
        for name, tier, table, rows in zip(("asin", "brand", "category"), self.tiers, self.deltas,
                                           (deltas.tier1, deltas.tier2, deltas.tier3), strict=True):
            written[name] = len(rows)
            if not rows:
                continue
            conn.exec_driver_sql(sql.delta_insert(table, self.dialect.quote), sql.delta_rows(rows, stamp))
            conn.execute(self.dialect.upsert_adding(tier, select(*table.c), sql.ADDED, sql.replaced_columns(tier)))
        for statement in sql.recategorise(self.tiers, months, deltas.recategorised):
            conn.execute(statement)
        for tier, table, rows in zip(self.tiers, self.deltas, (deltas.tier1, deltas.tier2, deltas.tier3), strict=True):
            if rows:
                conn.execute(sql.delete_emptied(tier, table))
        return written

    def _prepare_deltas(self, conn: Connection) -> None:
        """The session-local deltas tables, made where this session has none (a new connection, one the
        server restarted under) and emptied for each batch."""
        for table in self.deltas:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))
            conn.execute(sql.clear(table))

    def _mirror(self, conn: Connection, changes: Changes, after: Mapping) -> None:
        c, f = self.columns, self.follow
        asins = sorted({str(row[c.product_asin]) for change in changes.of_table(c.products)
                        for row in (change.before, change.after) if row})
        brands = sorted({b for change in changes.of_table(c.brands) for row in (change.before, change.after) if row
                         if (b := _int(row[c.brand_id])) is not None})
        categories = sorted({cat for change in changes.of_table(c.categories)
                             for row in (change.before, change.after) if row
                             if (cat := _int(row[c.category_id])) is not None})
        writes: list[tuple[Table, str, list[Any], list[dict[str, Any]]]] = [
            (f.products, "asin", asins, [{"asin": a, "brand_id": after.products[a]} for a in asins
                                         if a in after.products]),
            (f.brands, "brand_id", brands, [{"brand_id": b, "category_id": after.brands[b]} for b in brands
                                            if b in after.brands]),
            (f.categories, "category_id", categories, [{"category_id": cat} for cat in categories
                                                       if cat in after.categories]),
        ]
        for table, key, keys, rows in writes:
            for part in sql.in_chunks(keys):
                part_rows = [r for r in rows if r[key] in set(part)]
                for statement in sql.mirror_replace(table, key, part, part_rows):
                    conn.execute(statement)


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _id(value: object) -> int | None:
    return _int(value)
