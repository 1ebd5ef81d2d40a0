"""Bounded answers: every order and grouping, paged by ``meta.next``, gives exactly the rows of one answer.

On all three engines; the totals of ``group=total`` and the top-N answer are checked against the
independent computation of tests/test_read_api.py (plain Python over the inserted rows).
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from summarizer.serve.read import CATEGORIES, DASHBOARD, GROUPS, ORDERS, PROFITABILITY, BadParameter, Reader

from .oracle import load, random_dataset
from .test_read_api import SETTINGS, expected_categories, expected_dashboard, expected_profit, same_number

WINDOW = [("from", "2024-01"), ("to", "2024-04")]
KEYS = {DASHBOARD: ("brand_id", "metric"), CATEGORIES: ("category_id", "metric"),
        PROFITABILITY: ("brand_id", "category_id")}
VALUE = {DASHBOARD: "value", CATEGORIES: "value", PROFITABILITY: "profit"}


@pytest.fixture
def loaded(db_url, app_factory):
    app = app_factory(db_url, **SETTINGS)
    data = random_dataset(seed=31, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    return app, data


def answer(reader: Reader, endpoint: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(reader.answer(endpoint, items).body)
    return body


def every_page(reader: Reader, endpoint: str, items: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], int]:
    """The rows of the first page and of every page its ``meta.next`` chain leads to; and how many pages."""
    body = answer(reader, endpoint, items)
    rows, pages = list(body["data"]), 1
    while body["meta"]["next"]:
        link = urlsplit(body["meta"]["next"])
        assert link.path == f"/api/{endpoint}" and not link.netloc
        body = answer(reader, endpoint, parse_qsl(link.query, keep_blank_values=True))
        rows += body["data"]
        pages += 1
    return rows, pages


def sort_key(endpoint: str, order: str, row: dict[str, Any]) -> tuple[Any, ...]:
    key = (row.get("month", ""), *(row[k] for k in KEYS[endpoint]))
    value = Decimal(row[VALUE[endpoint]])
    return {"value_desc": (-value, *key), "value_asc": (value, *key), "month": key}[order]


@pytest.mark.parametrize("endpoint", [DASHBOARD, CATEGORIES, PROFITABILITY])
def test_pages_in_every_order_and_grouping_give_exactly_the_unpaged_rows(loaded, endpoint):
    app, _data = loaded
    reader = Reader(app)
    for order in ORDERS:
        for group in GROUPS:
            items = [*WINDOW, ("order", order), ("group", group)]
            whole = answer(reader, endpoint, [*items, ("limit", "10000")])
            assert whole["meta"]["next"] is None and whole["meta"]["params"]["order"] == order
            rows = whole["data"]
            assert len(rows) > 7, (order, group)
            paged, pages = every_page(reader, endpoint, [*items, ("limit", "7")])
            assert paged == rows, (order, group)
            assert pages == math.ceil(len(rows) / 7)
            assert all(("month" in r) == (group == "month") for r in rows)
            if order != "name":
                assert rows == sorted(rows, key=functools.partial(sort_key, endpoint, order)), (order, group)
            else:
                name = "brand_name" if "brand_id" in KEYS[endpoint] else "category_name"
                nulls = [r[name] is None for r in rows]
                assert nulls == sorted(nulls) and not all(nulls)  # ids without a name last
                assert any(nulls) == (name == "brand_name")  # brand 999 has no row; every category has one


def totals(monthly: dict[tuple[Any, ...], tuple[Any, ...]]) -> dict[tuple[Any, ...], list[Any]]:
    """(month, id, metric) -> (category, value, count) summed over the months: (id, metric) -> [...]."""
    summed: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, Decimal(0), 0])
    for (_month, *key), row in monthly.items():
        entry = summed[tuple(key)]
        if len(row) == 3:
            entry[0] = max(entry[0], row[0])
        entry[1] += row[-2]
        entry[2] += row[-1]
    return summed


def test_group_total_sums_each_brand_and_category_over_the_range(loaded):
    app, data = loaded
    reader = Reader(app)
    first, last = data.months[0], data.months[3]
    exact = app.dialect.EXACT_DECIMAL
    rows = answer(reader, DASHBOARD, [*WINDOW, ("group", "total")])["data"]
    want = totals(expected_dashboard(data, first, last))
    assert {(r["brand_id"], r["metric"]) for r in rows} == set(want)
    for r in rows:
        category, value, count = want[(r["brand_id"], r["metric"])]
        assert (r["category_id"], r["row_count"]) == (category, count) and same_number(r["value"], value, exact)
    rows = answer(reader, CATEGORIES, [*WINDOW, ("group", "total")])["data"]
    want = totals({k: (0, *v) for k, v in expected_categories(data, first, last).items()})
    assert {(r["category_id"], r["metric"]) for r in rows} == set(want)
    assert all(same_number(r["value"], want[(r["category_id"], r["metric"])][1], exact) for r in rows)
    rows = answer(reader, PROFITABILITY, [*WINDOW, ("group", "total"), ("by", "category")])["data"]
    profit: dict[int, Decimal] = defaultdict(Decimal)
    for (_month, category), (_revenue, _cost, value) in expected_profit(data, first, last, "ALL", "category").items():
        profit[category] += value
    assert {r["category_id"] for r in rows} == set(profit)
    assert all(same_number(r["profit"], profit[r["category_id"]], exact) for r in rows)


def test_top_brands_by_revenue_last_month_is_one_request(loaded):
    app, data = loaded
    month = data.months[3]
    items = [("from", f"{month:%Y-%m}"), ("to", f"{month:%Y-%m}"), ("metric", "revenue"), ("order", "value_desc"),
             ("limit", "3")]
    body = answer(Reader(app), DASHBOARD, items)
    revenue = {brand: value for (_m, brand, metric), (_c, value, _n) in expected_dashboard(data, month, month).items()
               if metric == "revenue"}
    top = sorted(revenue, key=lambda brand: (-revenue[brand], brand))[:3]
    assert [r["brand_id"] for r in body["data"]] == top
    assert body["meta"]["count"] == 3 and body["meta"]["next"]


def test_a_cursor_is_refused_for_another_query_or_after_the_data_changed(loaded):
    app, data = loaded
    reader = Reader(app)
    first = answer(reader, DASHBOARD, [*WINDOW, ("limit", "5")])
    follow = parse_qsl(urlsplit(first["meta"]["next"]).query)
    cursor = dict(follow)["cursor"]
    assert answer(reader, DASHBOARD, follow)["data"]  # the cursor works as given
    refusals = [
        ([*WINDOW, ("limit", "5"), ("metric", "revenue"), ("cursor", cursor)], "another query"),
        ([*WINDOW, ("limit", "6"), ("cursor", cursor)], "another query"),
        ([*WINDOW, ("limit", "5"), ("cursor", cursor), ("offset", "5")], "not both"),
        ([*WINDOW, ("cursor", "bm90IGEgY3Vyc29y")], "not a cursor"),
    ]
    for items, reason in refusals:
        with pytest.raises(BadParameter, match=reason) as caught:
            reader.answer(DASHBOARD, items)
        assert caught.value.parameter == "cursor"
    app.refresh(months=[data.months[0]])
    with pytest.raises(BadParameter, match="changed since this cursor") as caught:
        reader.answer(DASHBOARD, follow)
    assert caught.value.parameter == "cursor"


def test_limit_and_offset_are_bounded(loaded):
    app, _data = loaded
    reader = Reader(app)
    whole = answer(reader, DASHBOARD, [*WINDOW, ("limit", "10000")])["data"]
    assert answer(reader, DASHBOARD, [*WINDOW, ("limit", "4"), ("offset", "10")])["data"] == whole[10:14]
    assert len(answer(reader, DASHBOARD, WINDOW)["data"]) == min(1000, len(whole))
    for name, value in (("limit", "0"), ("limit", "10001"), ("offset", "-1"), ("limit", "1e3")):
        with pytest.raises(BadParameter) as caught:
            reader.answer(DASHBOARD, [*WINDOW, (name, value)])
        assert caught.value.parameter == name
