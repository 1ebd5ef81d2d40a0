"""The read functions: parameters checked, summaries only, numbers equal to an independent computation.

The expected numbers are computed here from the raw rows the test inserted (tests/oracle.py), with
Decimal arithmetic and none of summarizer's code.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy.sql.util import find_tables

from summarizer.serve.answers import Names, name_table
from summarizer.serve.read import (
    CATEGORIES,
    DASHBOARD,
    HEALTH,
    META,
    PROFITABILITY,
    BadParameter,
    Query,
    Reader,
    categories_select,
    dashboard_select,
    decimal_text,
    finished_select,
    known_select,
    meta_select,
    parse_query,
    profitability_select,
    version_select,
)

from .oracle import load, random_dataset

REVENUE, COSTS = ("revenue",), ("cogs", "refunds")
SETTINGS = {"api_revenue_metrics": "revenue", "api_cost_metrics": "cogs,refunds"}
Expected = dict[tuple[Any, ...], tuple[Any, ...]]

# (endpoint, query string, the parameter the 400 must name): bad whatever the data
BAD_SYNTAX = [
    (DASHBOARD, "to=2024-02", "from"),
    (DASHBOARD, "from=2024-01", "to"),
    (DASHBOARD, "from=2024-13&to=2024-12", "from"),
    (DASHBOARD, "from=2024-1&to=2024-12", "from"),
    (DASHBOARD, "from=0000-01&to=2024-12", "from"),
    (DASHBOARD, "from=2024-01&to=banana", "to"),
    (DASHBOARD, "from=2024-01-01&to=2024-02", "from"),
    (DASHBOARD, "from=2024-05&to=2024-01", "from"),
    (DASHBOARD, "from=2000-01&to=2024-12", "to"),
    (DASHBOARD, "from=2024-01&to=2024-02&brand_id=abc", "brand_id"),
    (DASHBOARD, "from=2024-01&to=2024-02&brand_id=-1", "brand_id"),
    (DASHBOARD, "from=2024-01&to=2024-02&brand_id=1.5", "brand_id"),
    (DASHBOARD, "from=2024-01&to=2024-02&brand_id=99999999999999999999", "brand_id"),
    (DASHBOARD, "from=2024-01&to=2024-02&brand_id=", "brand_id"),
    (DASHBOARD, "from=2024-01&to=2024-02&colour=red", "colour"),
    (DASHBOARD, "from=2024-01&to=2024-02&Metric=revenue", "Metric"),
    (DASHBOARD, "from=2024-01&to=2024-02&marketplace=US&marketplace=UK", "marketplace"),
    (DASHBOARD, "from=2024-01&from=2024-02&to=2024-02", "from"),
    (DASHBOARD, "from=2024-01&to=2024-02&metric=", "metric"),
    (CATEGORIES, "from=2024-01&to=2024-02&brand_id=1", "brand_id"),
    (CATEGORIES, "from=2024-01&to=2024-02&marketplace=US", "marketplace"),
    (CATEGORIES, "from=2024-01&to=2024-02&category_id=x", "category_id"),
    (PROFITABILITY, "from=2024-01&to=2024-02&by=asin", "by"),
    (PROFITABILITY, "from=2024-01&to=2024-02&category_id=%C2%B2", "category_id"),
    (META, "x=1", "x"),
    (HEALTH, "verbose=1", "verbose"),
]


def parse(endpoint: str, query_string: str, max_months: int = 120) -> Query:
    items = parse_qsl(query_string, keep_blank_values=True)
    return parse_query(endpoint, items, max_months=max_months, all_marketplace="ALL")


@pytest.mark.parametrize(("endpoint", "query_string", "parameter"), BAD_SYNTAX)
def test_bad_parameters_are_named(endpoint, query_string, parameter):
    with pytest.raises(BadParameter) as caught:
        parse(endpoint, query_string)
    assert caught.value.parameter == parameter
    assert str(caught.value).startswith(f"{parameter}: ")
    assert caught.value.allowed


def test_parameters_are_normalised():
    query = parse(DASHBOARD, "from=2024-01&to=2024-03&metric=units&metric=revenue&metric=units&brand_id=7&brand_id=03")
    assert query == Query(first=dt.date(2024, 1, 1), last=dt.date(2024, 3, 1), marketplace="ALL",
                          metrics=("revenue", "units"), brand_ids=(3, 7), order="month", group="month", limit=1000,
                          format="json")
    assert query.key() == parse(DASHBOARD, "brand_id=3&metric=revenue&to=2024-03&brand_id=7&from=2024-01&"
                                           "metric=units").key()
    assert parse(PROFITABILITY, "from=2024-01&to=2024-01&category_id=5").by == "category"
    assert parse(PROFITABILITY, "from=2024-01&to=2024-01&category_id=5&brand_id=1").by == "brand"
    assert parse(CATEGORIES, "from=2024-01&to=2024-01").marketplace is None
    assert len(parse(DASHBOARD, "from=2015-01&to=2024-12").months()) == 120
    with pytest.raises(BadParameter, match="spans 13 months; at most 12"):
        parse(DASHBOARD, "from=2024-01&to=2025-01", max_months=12)


def test_decimal_text_is_exact():
    assert decimal_text(Decimal("-12.3400")) == "-12.3400"
    assert decimal_text(Decimal("1E+3")) == "1000"
    assert decimal_text(0.1) == "0.1"
    assert decimal_text(1e-05) == "0.00001"


def test_statements_read_only_the_summary_tables(app_factory, tmp_path):
    from sqlalchemy.engine import make_url
    app = app_factory(make_url(f"sqlite:///{tmp_path / 'x.db'}"))
    tiers, runs, source = app.schema.live(), app.schema.runs(), app.source
    data_version = app.schema.data_version()
    query = parse(PROFITABILITY, "from=2024-01&to=2024-02&brand_id=1&category_id=2")
    names = Names(name_table(source.brands, source.brand_id, source.brand_name, "b"),
                  name_table(source.categories, source.category_id, source.category_name, "c"))
    statements = [dashboard_select(tiers.brand, query, names), categories_select(tiers.category, query, names),
                  profitability_select(tiers.brand, query, REVENUE, COSTS, names), meta_select(tiers),
                  known_select(tiers), finished_select(runs), version_select(data_version)]
    allowed = {t.name for t in tiers} | {runs.name, data_version.name} | {"brands", "categories"}  # numbers, names
    for statement in statements:
        found = {t.name for t in find_tables(statement)}
        assert found and found <= allowed, found
        compiled = statement.compile()
        assert "2024" not in str(compiled)  # values travel as bound parameters


# --- the independent computation ---------------------------------------------------------------

def attribution(data: Any, asin: str) -> tuple[int, int]:
    """(brand_id, category_id) of an ASIN as SPEC section 3 defines it, 0 = unassigned."""
    brand = data.products.get(asin) or 0
    category = 0 if brand == 0 else (data.brands.get(brand) or 0)
    return brand, category if category in data.categories else 0


def selected(data: Any, first: dt.date, last: dt.date, marketplace: str | None) -> Iterable[dict[str, Any]]:
    for row in data.rows:
        if first <= row["month"] <= last and marketplace in (None, "ALL", row["marketplace"]):
            yield row


def expected_dashboard(data: Any, first: dt.date, last: dt.date, marketplace: str = "ALL") -> Expected:
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, Decimal(0), 0])
    for row in selected(data, first, last, marketplace):
        brand, category = attribution(data, row["asin"])
        entry = sums[(f"{row['month']:%Y-%m}", brand, row["metric"])]
        entry[0] = category
        entry[1] += row["value"]
        entry[2] += 1
    return {k: tuple(v) for k, v in sums.items()}


def expected_categories(data: Any, first: dt.date, last: dt.date) -> Expected:
    sums: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for row in selected(data, first, last, None):
        entry = sums[(f"{row['month']:%Y-%m}", attribution(data, row["asin"])[1], row["metric"])]
        entry[0] += row["value"]
        entry[1] += 1
    return {k: tuple(v) for k, v in sums.items()}


def expected_profit(data: Any, first: dt.date, last: dt.date, marketplace: str, by: str) -> Expected:
    sums: dict[tuple[Any, ...], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in selected(data, first, last, marketplace):
        if row["metric"] not in REVENUE + COSTS:
            continue
        brand, category = attribution(data, row["asin"])
        key = (f"{row['month']:%Y-%m}", brand, category) if by == "brand" else (f"{row['month']:%Y-%m}", category)
        sums[key][0 if row["metric"] in REVENUE else 1] += row["value"]
    return {k: (rev, cost, rev - cost) for k, (rev, cost) in sums.items()}


def dashboard_found(rows: list[dict[str, Any]]) -> Expected:
    return {(r["month"], r["brand_id"], r["metric"]): (r["category_id"], r["value"], r["row_count"]) for r in rows}


def categories_found(rows: list[dict[str, Any]]) -> Expected:
    return {(r["month"], r["category_id"], r["metric"]): (r["value"], r["row_count"]) for r in rows}


def profit_found(rows: list[dict[str, Any]]) -> Expected:
    return {(r["month"], *([r["brand_id"]] if "brand_id" in r else []), r["category_id"]):
            (r["revenue"], r["cost"], r["profit"]) for r in rows}


def same_number(found: str, want: Decimal, exact: bool) -> bool:
    assert isinstance(found, str), f"numbers travel as strings, got {found!r}"
    if exact:
        return Decimal(found) == want
    return abs(float(found) - float(want)) <= 1e-6 * max(1.0, abs(float(want)))


def assert_matches(found: Expected, want: Expected, exact: bool, what: str) -> None:
    assert want, f"{what}: the test data selects nothing"
    assert set(found) == set(want), f"{what}: missing {set(want) - set(found)}, extra {set(found) - set(want)}"
    for key, want_row in want.items():
        for have, expected in zip(found[key], want_row, strict=True):
            ok = same_number(have, expected, exact) if isinstance(expected, Decimal) else have == expected
            assert ok, f"{what} {key}: {found[key]} != {want_row}"


def only(want: Expected, position: int, values: set[Any]) -> Expected:
    return {k: v for k, v in want.items() if k[position] in values}


def check_every_endpoint(get: Any, data: Any, exact: bool) -> None:
    """``get(endpoint, params) -> data rows``; every endpoint against the independent computation."""
    jan, mar = data.months[0], data.months[2]
    window = {"from": f"{jan:%Y-%m}", "to": f"{mar:%Y-%m}"}
    assert_matches(dashboard_found(get(DASHBOARD, window)), expected_dashboard(data, jan, mar), exact,
                   "dashboard ALL")
    uk = expected_dashboard(data, jan, mar, "UK")
    assert_matches(dashboard_found(get(DASHBOARD, {**window, "marketplace": "UK"})), uk, exact, "dashboard UK")
    brands = {1, 0, 5}
    rows = get(DASHBOARD, {**window, "marketplace": "US", "metric": ["revenue", "cogs"], "brand_id": ["1", "0", "5"]})
    want = only(only(expected_dashboard(data, jan, mar, "US"), 2, {"revenue", "cogs"}), 1, brands)
    assert_matches(dashboard_found(rows), want, exact, "dashboard US, two metrics, three brands")
    assert_matches(categories_found(get(CATEGORIES, window)), expected_categories(data, jan, mar), exact,
                   "categories")
    rows = get(CATEGORIES, {**window, "metric": "units", "category_id": ["100", "0"]})
    want = only(only(expected_categories(data, jan, mar), 2, {"units"}), 1, {100, 0})
    assert_matches(categories_found(rows), want, exact, "categories, one metric, two categories")
    assert_matches(profit_found(get(PROFITABILITY, window)), expected_profit(data, jan, mar, "ALL", "brand"), exact,
                   "profitability by brand")
    rows = get(PROFITABILITY, {**window, "marketplace": "DE", "category_id": ["101", "0"]})
    want = only(expected_profit(data, jan, mar, "DE", "category"), 1, {101, 0})
    assert_matches(profit_found(rows), want, exact, "profitability DE by category")


def check_meta(meta: dict[str, Any], data: Any, counts: dict[str, int]) -> None:
    assert meta["months"] == [f"{m:%Y-%m}" for m in sorted({r["month"] for r in data.rows})]
    assert meta["metrics"] == sorted({r["metric"] for r in data.rows})
    assert meta["marketplaces"] == sorted({r["marketplace"] for r in data.rows} | {"ALL"})
    assert meta["rows"] == counts
    assert meta["last_run"]["status"] == "succeeded" and meta["last_success"]["id"] == meta["last_run"]["id"]


def expected_counts(data: Any) -> dict[str, int]:
    from .oracle import expected_tiers
    return {tier: len(rows) for tier, rows in expected_tiers(data).items()}


# --- the read functions on every engine ------------------------------------------------------------

@pytest.fixture
def loaded(db_url, app_factory):
    app = app_factory(db_url, **SETTINGS)
    data = random_dataset(seed=31, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    return app, data


def test_read_functions_equal_independent_computation(loaded):
    app, data = loaded
    reader = Reader(app)

    def get(endpoint: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return reader.handlers[endpoint](reader.query(endpoint, params))
    check_every_endpoint(get, data, app.dialect.EXACT_DECIMAL)
    check_meta(reader.meta(), data, expected_counts(data))


def test_metrics_and_marketplaces_are_checked_against_the_summaries(loaded):
    app, _data = loaded
    reader = Reader(app)
    known = reader.known(reader.version())
    assert known.metrics == {"revenue", "units", "refunds", "cogs"}
    assert known.marketplaces == {"US", "UK", "DE", "JP", "ALL"}
    with pytest.raises(BadParameter) as caught:
        reader.answer(DASHBOARD, [("from", "2024-01"), ("to", "2024-02"), ("metric", "revnue")])
    assert caught.value.parameter == "metric" and "revenue" in caught.value.allowed
    with pytest.raises(BadParameter) as caught:
        reader.answer(PROFITABILITY, [("from", "2024-01"), ("to", "2024-02"), ("marketplace", "us")])
    assert caught.value.parameter == "marketplace" and "US" in caught.value.allowed


def test_the_data_version_moves_with_every_change_to_the_tiers(loaded):
    """Each month an incremental refresh commits moves it, and so does each swap; reading does not."""
    app, data = loaded
    reader = Reader(app)
    first = reader.version()
    assert first > 0
    app.refresh(months=data.months[1:3])
    assert reader.version() == first + 2
    app.refresh()
    assert reader.version() == first + 3
    assert app.verify().ok and reader.meta()["last_run"]["id"] == app.runs.last_success().id
    assert reader.version() == first + 3


# --- names beside ids ------------------------------------------------------------------------------

def expected_name(data: Any, kind: str, id_: int) -> str | None:
    """What the oracle's dimension tables call an id: 0 is "Unassigned", an id without a row has no name."""
    if id_ == 0:
        return "Unassigned"
    known = data.brands if kind == "brand" else {100, 101, 102}
    return f"{kind if kind == 'brand' else 'cat'} {id_}" if id_ in known else None


def check_names(rows: list[dict[str, Any]], data: Any, kinds: tuple[str, ...]) -> set[str | None]:
    """Each id is followed by its name; returns the names seen."""
    seen: set[str | None] = set()
    for row in rows:
        keys = list(row)
        for kind in kinds:
            position = keys.index(f"{kind}_id")
            assert keys[position + 1] == f"{kind}_name", keys
            assert row[f"{kind}_name"] == expected_name(data, kind, row[f"{kind}_id"]), row
            seen.add(row[f"{kind}_name"])
    return seen


def test_rows_carry_brand_and_category_names(loaded):
    app, data = loaded
    reader = Reader(app)

    def get(endpoint: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return reader.handlers[endpoint](reader.query(endpoint, {**params, "limit": "10000"}))  # every row, one page
    window = {"from": "2024-01", "to": "2024-04"}
    seen = check_names(get(DASHBOARD, window), data, ("brand", "category"))
    assert {"Unassigned", None, "brand 1", "cat 101"} <= seen  # 0, a dangling brand id (999), real names
    assert "Unassigned" in check_names(get(CATEGORIES, window), data, ("category",))
    assert None in check_names(get(PROFITABILITY, window), data, ("brand", "category"))
    check_names(get(PROFITABILITY, {**window, "by": "category"}), data, ("category",))
    assert reader.meta()["notes"] == []


def test_a_missing_name_column_is_left_out_with_a_note(db_url, app_factory):
    app = app_factory(db_url, source_category_name_column="title", **SETTINGS)
    data = random_dataset(seed=5, rows=200, huge=False)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    reader = Reader(app)
    rows = reader.handlers[DASHBOARD](reader.query(DASHBOARD, {"from": "2024-01", "to": "2024-02"}))
    assert rows and all("category_name" not in r and "brand_name" in r for r in rows)
    rows = reader.handlers[CATEGORIES](reader.query(CATEGORIES, {"from": "2024-01", "to": "2024-02"}))
    assert rows and list(rows[0]) == ["month", "category_id", "metric", "value", "row_count"]
    notes = reader.meta()["notes"]
    assert len(notes) == 1 and "category_name" in notes[0] and "title" in notes[0] and "categories" in notes[0]
