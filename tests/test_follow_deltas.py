"""The follower's delta arithmetic on its own (``summarizer/follow/deltas.py``), with no database.

Random raw rows and a random mapping give tiers before (the oracle); random row changes and dimension
moves give tiers after (the oracle again); the deltas the follower computes, added to the tiers before
as the database's upsert would add them (and the groups whose count reaches 0 dropped), must give the
tiers after exactly.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest

from summarizer import load_config
from summarizer.follow.binlog import changed_source_table
from summarizer.follow.deltas import (
    DimensionColumns,
    Mapping,
    apply_dimensions,
    contributions,
    moved_asins,
    moved_brands,
    sort_out,
    tier_deltas,
)
from summarizer.follow.stream import Op, RowChange, Transaction
from summarizer.model import source_from_config

from .oracle import Dataset, expected_tiers

SOURCE = source_from_config(load_config("/nonexistent.ini", {}))
COLUMNS = DimensionColumns.of(SOURCE)
MONTHS = [dt.date(2024, m, 1) for m in (1, 2, 3)]
ASINS = [f"A{n}" for n in range(12)]
BRANDS = [1, 2, 3, 4, 5]
CATEGORIES = [10, 11, 12]


def test_a_raw_row_contributes_its_month_keys_and_exact_value():
    row = {"id": 1, "asin": "A1", "marketplace": "US", "month": dt.date(2024, 1, 1), "metric": "revenue",
           "value": Decimal("12.3400")}
    assert contributions(row, SOURCE) == [(dt.date(2024, 1, 1), "A1", "US", "revenue", Decimal("12.3400"))]


def test_the_unassigned_rule():
    mapping = Mapping(0, products={"A1": 3, "A2": None, "A3": 9}, brands={3: 10, 4: None, 5: 77}, categories={10})
    assert [mapping.brand(a) for a in ("A1", "A2", "A3", "A4")] == [3, 0, 9, 0]  # a brand without a row is kept
    assert [mapping.category(b) for b in (3, 4, 5, 9, 0)] == [10, 0, 0, 0, 0]


def _row(rng: random.Random) -> dict[str, Any]:
    return {"asin": rng.choice(ASINS), "marketplace": rng.choice(["US", "DE"]), "month": rng.choice(MONTHS),
            "metric": rng.choice(["revenue", "units"]), "value": Decimal(rng.randint(-9999, 99999)) / 100}


def _dataset(rows: list[dict[str, Any]], mapping: Mapping) -> Dataset:
    data = Dataset(MONTHS, categories=sorted(mapping.categories))
    data.rows, data.products, data.brands = rows, dict(mapping.products), dict(mapping.brands)
    return data


def _changes(rng: random.Random, rows: list[dict[str, Any]], mapping: Mapping) -> list[RowChange]:
    """Random raw changes (made to ``rows``) mixed with dimension changes (made to ``mapping``)."""
    changes: list[RowChange] = []
    for _ in range(60):
        kind = rng.random()
        if kind < 0.2:
            rows.append(_row(rng))
            changes.append(RowChange("financials", Op.INSERT, None, dict(rows[-1])))
        elif kind < 0.35 and rows:
            gone = rows.pop(rng.randrange(len(rows)))
            changes.append(RowChange("financials", Op.DELETE, gone, None))
        elif kind < 0.7 and rows:
            i = rng.randrange(len(rows))
            before, after = dict(rows[i]), {**rows[i], **{k: v for k, v in _row(rng).items() if rng.random() < 0.5}}
            rows[i] = after
            changes.append(RowChange("financials", Op.UPDATE, before, dict(after)))
        else:
            changes.append(_dimension_change(rng, mapping))
    return changes


def _dimension_change(rng: random.Random, mapping: Mapping) -> RowChange:
    kind = rng.choice(["product", "product", "brand", "category"])
    if kind == "product":
        asin = rng.choice(ASINS)
        before = {"asin": asin, "brand_id": mapping.products[asin]} if asin in mapping.products else None
        after: dict[str, Any] | None = None if rng.random() < 0.2 else {
            "asin": asin, "brand_id": rng.choice([*BRANDS, 8, None])}
        mapping.products.pop(asin, None)
        if after is not None:
            mapping.products[asin] = after["brand_id"]
        return RowChange("products", Op.UPDATE if before and after else Op.INSERT if after else Op.DELETE,
                         before, after)
    if kind == "brand":
        brand = rng.choice(BRANDS)
        before = {"brand_id": brand, "category_id": mapping.brands[brand], "name": "b"} \
            if brand in mapping.brands else None
        after = None if rng.random() < 0.2 else {"brand_id": brand, "category_id": rng.choice([*CATEGORIES, None, 13]),
                                                 "name": "b"}
        mapping.brands.pop(brand, None)
        if after is not None:
            mapping.brands[brand] = after["category_id"]
        return RowChange("brands", Op.UPDATE if before and after else Op.INSERT if after else Op.DELETE, before, after)
    category = rng.choice([*CATEGORIES, 13])
    if category in mapping.categories:
        mapping.categories.discard(category)
        return RowChange("categories", Op.DELETE, {"category_id": category, "name": "c"}, None)
    mapping.categories.add(category)
    return RowChange("categories", Op.INSERT, None, {"category_id": category, "name": "c"})


def _apply(tiers: dict[str, dict[Any, Any]], deltas: Any) -> dict[str, dict[Any, Any]]:
    """The tiers after the deltas, as the upsert, the recategorising UPDATEs and the DELETEs of emptied groups
    leave them."""
    result = {name: dict(rows) for name, rows in tiers.items()}
    for name, rows, keys in (("asin", deltas.tier1, 4), ("brand", deltas.tier2, 4), ("category", deltas.tier3, 3)):
        for row in rows:
            key, attributes, value, count = row[:keys], row[keys:-2], row[-2], row[-1]
            old = result[name].get(key)
            value, count = (old[-2] + value, old[-1] + count) if old else (value, count)
            result[name][key] = (*attributes, value, count)
    for brand, category in deltas.recategorised.items():
        for name, at in (("asin", 1), ("brand", 0)):
            for key, row in result[name].items():
                if (key[1] if name == "brand" else row[0]) == brand:
                    result[name][key] = (*row[:at], category, *row[at + 1:])
    return {name: {k: v for k, v in rows.items() if v[-1] != 0} for name, rows in result.items()}


@pytest.mark.parametrize("seed", range(40))
def test_the_tiers_before_plus_the_deltas_are_the_tiers_after(seed):
    rng = random.Random(seed)
    mapping = Mapping(0, products={a: rng.choice([*BRANDS, None, 8]) for a in ASINS[:-2]},
                      brands={b: rng.choice([*CATEGORIES, None]) for b in BRANDS}, categories=set(CATEGORIES))
    rows = [_row(rng) for _ in range(80)]
    before_tiers = expected_tiers(_dataset(rows, mapping))
    before = mapping.copy()
    changes = _changes(rng, rows, mapping)
    after_tiers = expected_tiers(_dataset(rows, mapping))

    sorted_out = sort_out([Transaction(changes, "f:1", None)], SOURCE)
    after = apply_dimensions(before, sorted_out.dimensions, COLUMNS)
    assert after == mapping
    asins = set(ASINS)
    moved = moved_asins(asins, before, after)
    recategorised = moved_brands({*BRANDS, 8}, before, after)
    old1 = [(key, row[-2], row[-1]) for key, row in before_tiers["asin"].items() if key[1] in moved]
    old_all = [(m, b, metric, row[-2], row[-1]) for (m, b, market, metric), row in before_tiers["brand"].items()
               if market == "ALL" and b in recategorised]
    deltas = tier_deltas(sorted_out.tier1, before, after, moved, old1, recategorised, old_all, "ALL")
    assert _apply(before_tiers, deltas) == after_tiers


SOURCES = {"financials", "products", "brands", "categories"}


@pytest.mark.parametrize(("query", "changed"), [
    ("ALTER TABLE financials ADD COLUMN note VARCHAR(10)", "financials"),
    ("TRUNCATE TABLE financials", "financials"),
    ("TRUNCATE products", "products"),
    ("RENAME TABLE brands TO brands_old", "brands"),
    ("DROP TABLE IF EXISTS categories", "categories"),
    ("ALTER TABLE `financials` ADD INDEX `ix` (`month`, `asin`), ALGORITHM=INPLACE, LOCK=NONE", None),
    ("CREATE INDEX ix ON financials (month)", None),
    ("RENAME TABLE financials_summary_monthly_brand TO financials_summary_monthly_brand__old", None),
    ("ALTER TABLE other_db.financials ADD COLUMN c INT", None),
    ("ALTER TABLE sales ADD COLUMN products INT", None),
])
def test_which_ddl_stops_following(query, changed):
    """DDL that changes a source table's rows or columns stops the follower; an index, or another table, does not."""
    assert changed_source_table(query, SOURCES, "shop", "shop") == changed
