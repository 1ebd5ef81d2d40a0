"""Pure builders of the follower's statements: its state row, the mapping mirror, and the deltas' writes.

Nothing here touches a database (``batch.py`` runs them). Tier rows are found by primary key: tier 1's
and tier 2's keys start with ``month``, so a lookup by ASIN or brand names the months too
(``month IN (...) AND asin IN (...)``): one short range of the primary key per month and ASIN, with no
index of its own to keep up in the full refresh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Delete, Insert, Select, Table, Update, delete, insert, select, update

from ..model import FollowTables, Tiers

STATE_ID = 1
ADDED = ("value", "row_count")


def read_state(state: Table) -> Select[Any]:
    return select(state).where(state.c.id == STATE_ID)


def lock_state(state: Table) -> Select[Any]:
    """The state row, locked for the batch's transaction (a second follower waits here, then sees the new position)."""
    return read_state(state).with_for_update()


def first_state(state: Table, position: str, data_version: int, now: dt.datetime) -> Insert:
    """The state row a full refresh hands over: its snapshot's position, and the data version it swaps in."""
    return insert(state).values(id=STATE_ID, position=position, data_version=data_version, changes=0, batches=0,
                                handover_at=now, applied_at=now)


def advance_state(state: Table, position: str, data_version: int, values: dict[str, Any]) -> Update:
    """Where the tiers are exact now, written in the batch's transaction."""
    return (update(state).where(state.c.id == STATE_ID)
            .values(position=position, data_version=data_version, changes=state.c.changes + values.pop("changes"),
                    batches=state.c.batches + 1, **values))


def report(state: Table, values: dict[str, Any]) -> Update:
    """The follower's report (waiting, rate, host, error...): never its position or data version."""
    assert not {"position", "data_version"} & set(values)
    return update(state).where(state.c.id == STATE_ID).values(**values)


# --- the mapping mirror ------------------------------------------------------------------------------

def mirror_products(follow: FollowTables, asins: Sequence[str]) -> Select[Any]:
    t = follow.products
    return select(t.c.asin, t.c.brand_id).where(t.c.asin.in_(list(asins)))


def mirror_brands(follow: FollowTables, brands: Sequence[int]) -> Select[Any]:
    t = follow.brands
    return select(t.c.brand_id, t.c.category_id).where(t.c.brand_id.in_(list(brands)))


def mirror_brands_in(follow: FollowTables, categories: Sequence[int]) -> Select[Any]:
    """The brands whose category is one of ``categories`` (the brands a category row's insert or delete moves)."""
    t = follow.brands
    return select(t.c.brand_id, t.c.category_id).where(t.c.category_id.in_(list(categories)))


def mirror_categories(follow: FollowTables, categories: Sequence[int]) -> Select[Any]:
    t = follow.categories
    return select(t.c.category_id).where(t.c.category_id.in_(list(categories)))


def mirror_replace(table: Table, key: str, keys: Sequence[Any], rows: list[dict[str, Any]]) -> list[Delete | Insert]:
    """The mirror rows of ``keys`` replaced by ``rows`` (those of them that exist after the batch)."""
    statements: list[Delete | Insert] = [delete(table).where(table.c[key].in_(list(keys)))] if keys else []
    return statements + ([insert(table).values(rows)] if rows else [])


# --- the tiers ---------------------------------------------------------------------------------------

def tier_months(tiers: Tiers) -> Select[Any]:
    """Every month the tiers hold (tier 3 is the smallest tier and has them all)."""
    return select(tiers.category.c.month).distinct()


def old_tier1(tiers: Tiers, months: Sequence[dt.date], asins: Sequence[str]) -> Select[Any]:
    t = tiers.asin
    return (select(t.c.month, t.c.asin, t.c.marketplace, t.c.metric, t.c.value, t.c.row_count)
            .where(t.c.month.in_(list(months)), t.c.asin.in_(list(asins))))


def old_all_rows(tiers: Tiers, months: Sequence[dt.date], brands: Sequence[int], all_marketplace: str) -> Select[Any]:
    t = tiers.brand
    return (select(t.c.month, t.c.brand_id, t.c.metric, t.c.value, t.c.row_count)
            .where(t.c.month.in_(list(months)), t.c.brand_id.in_(list(brands)), t.c.marketplace == all_marketplace))


def recategorise(tiers: Tiers, months: Sequence[dt.date], brands: dict[int, int]) -> list[Update]:
    """Tier-1 and tier-2 rows of brands whose category changed take the new one (grouped by new category)."""
    by_category: dict[int, list[int]] = {}
    for brand, category in sorted(brands.items()):
        by_category.setdefault(category, []).append(brand)
    statements = []
    for category, group in by_category.items():
        t1, t2 = tiers.asin, tiers.brand
        statements += [update(t1).where(t1.c.brand_id.in_(group)).values(category_id=category),  # ix_..._brand
                       update(t2).where(t2.c.month.in_(list(months)), t2.c.brand_id.in_(group))
                       .values(category_id=category)]
    return statements


def delete_emptied(tier: Table, deltas: Table) -> Delete:
    """The rows of ``tier`` a batch touched whose count is 0: their group has no raw row left (a count that
    went down to 0, or a group the batch both created and emptied, whose delta is 0)."""
    keys = [tier.c[c.name] == deltas.c[c.name] for c in tier.primary_key.columns]
    return delete(tier).where(*keys, deltas.c.row_count <= 0, tier.c.row_count == 0)


def clear(table: Table) -> Delete:
    return delete(table)


def delta_insert(table: Table, quote: Callable[[str], str]) -> str:
    """The multi-row INSERT of a deltas table's rows, in its column order, as driver SQL with ``%s`` placeholders
    (PyMySQL and psycopg alike): thousands of rows go through the driver's executemany without SQLAlchemy's
    per-row parameter processing."""
    names = [c.name for c in table.columns]
    return (f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join(['%s'] * len(names))})")


def delta_rows(rows: Iterable[tuple[Any, ...]], stamp: dt.datetime) -> list[tuple[Any, ...]]:
    """The batch's rows for a deltas table (``refreshed_at`` last)."""
    return [(*row, stamp) for row in rows]


def replaced_columns(tier: Table) -> list[str]:
    """What an upsert replaces rather than adds: the attributes (brand, category) and the stamp."""
    keys = {c.name for c in tier.primary_key.columns}
    return [c.name for c in tier.columns if c.name not in keys and c.name not in ADDED]


def in_chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
