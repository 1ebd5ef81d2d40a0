"""The read API's queries: parameters checked, statements built (pure), then run over the summaries.

Every answer is one statement over the summary tables (never the raw table) with bound parameters
only; ``meta`` is one statement over the tiers plus two tiny reads of the run history. Values come
back as exact decimals written as JSON strings (``"1234.5000"``): DECIMAL on MySQL/MariaDB and
PostgreSQL, so nothing is lost on the way to a finance user; on SQLite the tiers hold REAL and the
strings are the shortest form of those floats.

Answers are cached (``cache.py``) under a key made of the endpoint, the normalised parameters and
the *data version* (``version.py``): a number that changes in the same transaction as every change to
the live tiers (each month an incremental refresh commits, each swap of a full refresh), so no answer
outlives the numbers it was computed from, even when a refresh is killed half way. The version is read
before the answer's statement, so an answer cached under a version never predates it.

Parsing and checking are pure (:func:`parse_query`); :class:`Reader` runs the statements. Module
layout: parameters, the query, statement builders, the reader.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from .. import version
from ..ddl import require_tables
from ..errors import DatabaseUnavailable, UsageError
from ..model import Tiers
from ..months import month_range, parse_month
from ..runs import RUNNING, Run, utcnow
from ..secrets import public
from ..text import first_line
from . import timing
from .answers import CSV_MEDIA_TYPE, NO_NAMES, Names, Position, Shape, csv_body, discover, shaped
from .cache import Cache, make_cache, namespace

if TYPE_CHECKING:
    from ..facade import Summarizer

BIGINT_MAX = 2**63 - 1
MAX_IDS = 1000
DEFAULT_LIMIT, DEFAULT_MAX_LIMIT, MAX_OFFSET = 1000, 10_000, 1_000_000_000
ECHO_MOST = 64  # characters of a client's parameter name or value an error message repeats
# what the server accepts as a month, and what the OpenAPI document says: years 0001..9999, months 01..12
MONTH_PATTERN = r"^(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(?:0[1-9]|1[0-2])$"
DASHBOARD, CATEGORIES, PROFITABILITY, META, HEALTH = (
    "dashboard-data", "categories-dashboard-data", "profitability-data", "meta", "health")


# --- parameters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One query parameter of one endpoint: what it is, and the help the OpenAPI description shows."""

    name: str
    kind: str  # month, text, id, choice, count, cursor
    help: str
    repeatable: bool = False
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None  # count
    maximum: int | None = None  # count; limit's is [api] max_limit, filled in by endpoint_params
    default: str | None = None


FROM = Param("from", "month", "first month, as YYYY-MM", required=True)
TO = Param("to", "month", "last month (included), as YYYY-MM; at most [api] max_months after from", required=True)
MARKETPLACE = Param("marketplace", "text", "one marketplace of the summaries, or ALL (the default): "
                    "the total over every marketplace")
METRIC = Param("metric", "text", "a metric of the summaries; repeat for several; default: every metric",
               repeatable=True)
BRAND_ID = Param("brand_id", "id", f"a brand id (0 = unassigned); repeat for several (at most {MAX_IDS}); "
                 "default: every brand", repeatable=True)
CATEGORY_ID = Param("category_id", "id", f"a category id (0 = unassigned); repeat for several (at most "
                    f"{MAX_IDS}); default: every category", repeatable=True)
BY = Param("by", "choice", "one row per month and brand, or per month and category; default: category when "
           "only category_id is given, else brand", choices=("brand", "category"))

ORDERS = ("month", "value_desc", "value_asc", "name")
GROUPS = ("month", "total")
ORDER = Param("order", "choice", "month (the default): by month, then id; value_desc / value_asc: by value (profit "
              "on profitability-data), largest / smallest first; name: by brand (or category) name. Ties are "
              "broken by month and id, so pages never overlap", choices=ORDERS, default="month")
GROUP = Param("group", "choice", "month (the default): one row per month; total: one row per brand (or category) "
              "and metric, summed over the whole range, without month", choices=GROUPS, default="month")
LIMIT = Param("limit", "count", f"rows per answer (default {DEFAULT_LIMIT}, or [api] max_limit if that is "
              "smaller); meta.next links to the next page", minimum=1)
OFFSET = Param("offset", "count", "rows to skip (default 0); or follow meta.next, whose cursor also notices when "
               "a refresh changed the data between pages", minimum=0, maximum=MAX_OFFSET, default="0")
CURSOR = Param("cursor", "cursor", "opaque: the next page, as given in meta.next; not with offset")
FORMATS = ("json", "csv")
FORMAT = Param("format", "choice", "json (the default), or csv: the same rows and columns as CSV with a header "
               "line (Accept: text/csv does the same); a CSV page links to the next one in its Link header",
               choices=FORMATS, default="json")
PAGING = (ORDER, GROUP, LIMIT, OFFSET, CURSOR, FORMAT)

PARAMS: dict[str, tuple[Param, ...]] = {
    DASHBOARD: (FROM, TO, MARKETPLACE, METRIC, BRAND_ID, *PAGING),
    CATEGORIES: (FROM, TO, METRIC, CATEGORY_ID, *PAGING),
    PROFITABILITY: (FROM, TO, MARKETPLACE, BRAND_ID, CATEGORY_ID, BY, *PAGING),
    META: (),
    HEALTH: (),
}


def endpoint_params(endpoint: str, max_limit: int = DEFAULT_MAX_LIMIT) -> tuple[Param, ...]:
    """The endpoint's parameters as the server checks them: ``limit``'s maximum is ``[api] max_limit``."""
    default = str(min(DEFAULT_LIMIT, max_limit))
    return tuple(replace(p, maximum=max_limit, default=default) if p is LIMIT else p for p in PARAMS[endpoint])


class BadParameter(UsageError):
    """A query parameter that cannot be used; names it and what is allowed (HTTP 400)."""

    def __init__(self, parameter: str, message: str, allowed: Sequence[str] | str = "") -> None:
        parameter = parameter if len(parameter) <= ECHO_MOST else parameter[:ECHO_MOST] + "…"  # a client's name
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.allowed = parameter, allowed


@dataclass(frozen=True)
class Query:
    """A request's parameters, parsed and normalised (sorted, without repeats)."""

    first: dt.date | None = None
    last: dt.date | None = None
    marketplace: str | None = None
    metrics: tuple[str, ...] = ()
    brand_ids: tuple[int, ...] = ()
    category_ids: tuple[int, ...] = ()
    by: str | None = None
    order: str | None = None
    group: str | None = None
    limit: int | None = None
    offset: int = 0
    cursor_version: int | None = None  # the data version a cursor was made at (None: no cursor)
    format: str | None = None

    def months(self) -> list[dt.date]:
        assert self.first is not None and self.last is not None
        return month_range(self.first, self.last)

    def as_json(self) -> dict[str, Any]:
        values = {"from": self.first and f"{self.first:%Y-%m}", "to": self.last and f"{self.last:%Y-%m}",
                  "marketplace": self.marketplace, "metric": list(self.metrics), "brand_id": list(self.brand_ids),
                  "category_id": list(self.category_ids), "by": self.by, "order": self.order, "group": self.group,
                  "limit": self.limit, "offset": self.offset or None,
                  "format": self.format if self.format == "csv" else None}
        return {k: v for k, v in values.items() if v not in (None, [])}

    def fingerprint(self) -> str:
        """What a cursor must be used with: every parameter but the position."""
        return hashlib.sha256(replace(self, offset=0, cursor_version=None).key().encode()).hexdigest()[:16]

    def key(self) -> str:
        """The canonical text of the parameters, for cache keys."""
        return json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))


def parse_query(endpoint: str, items: Iterable[tuple[str, str]], *, max_months: int,
                all_marketplace: str, max_limit: int = DEFAULT_MAX_LIMIT) -> Query:
    """Check the syntax of ``items`` (name, value pairs) for ``endpoint``; raise BadParameter."""
    spec = {p.name: p for p in endpoint_params(endpoint, max_limit)}
    values = _collect(items, spec)
    for param in spec.values():
        if param.required and param.name not in values:
            raise BadParameter(param.name, f"required: {param.help}", _allowed(param))
    first, last = _month_bounds(values, max_months)
    ids: dict[str, tuple[int, ...]] = {name: _ids(spec[name], values.get(name, []))
                                       for name in ("brand_id", "category_id") if name in spec}
    default_market = all_marketplace if "marketplace" in spec else None
    query = Query(first=first, last=last, marketplace=_single(values, "marketplace") or default_market,
                  metrics=tuple(sorted(set(values.get("metric", [])))),
                  brand_ids=ids.get("brand_id", ()), category_ids=ids.get("category_id", ()),
                  by=_by(endpoint, values, ids))
    return _paged(query, spec, values) if "limit" in spec else query


def _paged(query: Query, spec: Mapping[str, Param], values: Mapping[str, list[str]]) -> Query:
    """``query`` with its order, grouping and page; a cursor must come from the same query."""
    limit, offset = spec["limit"], spec["offset"]
    query = replace(query, order=_choice(spec["order"], values), group=_choice(spec["group"], values),
                    format=_choice(spec["format"], values),
                    limit=_count(limit, _single(values, "limit") or str(limit.default)),
                    offset=_count(offset, _single(values, "offset") or "0"))
    text = _single(values, "cursor")
    if text is None:
        return query
    if "offset" in values:
        raise BadParameter("cursor", "give either cursor or offset, not both", CURSOR.help)
    try:
        position = Position.decode(text)
    except ValueError:
        raise BadParameter("cursor", f"not a cursor this server made: {echo(text)}", CURSOR.help) from None
    if position.fingerprint != query.fingerprint() or position.offset > MAX_OFFSET:
        raise BadParameter("cursor", "this cursor belongs to another query: keep the other parameters as they "
                           "were on the page that gave it, or drop cursor", CURSOR.help)
    return replace(query, offset=position.offset, cursor_version=position.version)


def _choice(param: Param, values: Mapping[str, list[str]]) -> str:
    given = _single(values, param.name)
    if given is not None and given not in param.choices:
        raise BadParameter(param.name, f"expected one of {', '.join(param.choices)}, got {echo(given)}",
                           list(param.choices))
    return given or str(param.default)


def _count(param: Param, text: str) -> int:
    low, high = param.minimum or 0, param.maximum if param.maximum is not None else BIGINT_MAX
    number = whole_number(text, low, high)
    if number is None:
        raise BadParameter(param.name, f"expected a whole number from {low} to {high}, got {echo(text)}",
                           f"{low}..{high}")
    return number


def echo(text: str, most: int = ECHO_MOST) -> str:
    """A client's text quoted in a message, cut to ``most`` characters: a 70 KB name is not sent back."""
    return repr(text) if len(text) <= most else repr(text[:most]) + f"… ({len(text)} characters)"


def _collect(items: Iterable[tuple[str, str]], spec: Mapping[str, Param]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in items:
        if name not in spec:
            raise BadParameter(name, "unknown parameter", sorted(spec) or "none: this endpoint takes no parameters")
        param = spec[name]
        if not value:  # taken as given, not stripped: the OpenAPI document's patterns are the whole check
            raise BadParameter(name, f"empty; expected {param.help}", _allowed(param))
        values.setdefault(name, []).append(value)
        if len(values[name]) > 1 and not param.repeatable:
            raise BadParameter(name, "given more than once; give it once", _allowed(param))
    return values


def _allowed(param: Param) -> Sequence[str] | str:
    return list(param.choices) if param.choices else param.help


def _single(values: Mapping[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[0] if found else None


def _month(name: str, text: str | None) -> dt.date | None:
    if text is None:
        return None
    if not re.match(MONTH_PATTERN, text):
        raise BadParameter(name, f"expected a month as YYYY-MM (for example 2024-03; years 0001 to 9999), got "
                           f"{echo(text)}", "YYYY-MM")
    return parse_month(text)


def _month_bounds(values: Mapping[str, list[str]], max_months: int) -> tuple[dt.date | None, dt.date | None]:
    first, last = _month("from", _single(values, "from")), _month("to", _single(values, "to"))
    if first is None or last is None:
        return first, last
    if first > last:
        raise BadParameter("from", f"{first:%Y-%m} is after to={last:%Y-%m}", "a month not after to")
    count = (last.year - first.year) * 12 + last.month - first.month + 1
    if count > max_months:
        raise BadParameter("to", f"the range {first:%Y-%m}..{last:%Y-%m} spans {count} months; at most "
                           f"{max_months} are allowed ([api] max_months)", f"a month at most {max_months - 1} "
                           "months after from")
    return first, last


def _ids(param: Param, texts: Sequence[str]) -> tuple[int, ...]:
    if len(texts) > MAX_IDS:  # counted as given, repeats too: the OpenAPI document's maxItems
        raise BadParameter(param.name, f"{len(texts)} ids given; at most {MAX_IDS} per request", f"<= {MAX_IDS} ids")
    found = set()
    for text in texts:
        number = whole_number(text, 0, BIGINT_MAX)
        if number is None:
            raise BadParameter(param.name, f"expected a whole number from 0 to {BIGINT_MAX}, got {echo(text)}",
                               f"0..{BIGINT_MAX}")
        found.add(number)
    return tuple(sorted(found))


def whole_number(text: str, low: int, high: int) -> int | None:
    """``text`` as a whole number from ``low`` to ``high`` (ASCII digits only), else None."""
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > len(str(high)):
        return None  # also keeps int() away from texts longer than Python converts
    number = int(text.lstrip("0") or "0")
    return number if low <= number <= high else None


def _by(endpoint: str, values: Mapping[str, list[str]], ids: Mapping[str, tuple[int, ...]]) -> str | None:
    if endpoint != PROFITABILITY:
        return None
    given = _single(values, "by")
    if given is not None and given not in BY.choices:
        raise BadParameter("by", f"expected one of {', '.join(BY.choices)}, got {echo(given)}", list(BY.choices))
    only_categories = ids.get("category_id") and not ids.get("brand_id")
    return given or ("category" if only_categories else "brand")


@dataclass(frozen=True)
class Known:
    """The metrics (category tier) and marketplaces (brand tier) the summaries hold, at one data version."""

    metrics: frozenset[str] = frozenset()
    marketplaces: frozenset[str] = frozenset()

    def check(self, query: Query, all_marketplace: str) -> None:
        for metric in query.metrics:
            if metric not in self.metrics:
                raise BadParameter("metric", f"unknown metric {echo(metric)}", sorted(self.metrics) or _EMPTY)
        markets = self.marketplaces | {all_marketplace}
        if query.marketplace is not None and query.marketplace not in markets:
            raise BadParameter("marketplace", f"unknown marketplace {echo(query.marketplace)}", sorted(markets))


_EMPTY = "none yet: the summaries are empty (run `summarizer refresh`)"


# --- statements (pure) --------------------------------------------------------------------------

DASHBOARD_SHAPE = Shape(keys=("brand_id", "metric"), name_of="brand_id")
CATEGORIES_SHAPE = Shape(keys=("category_id", "metric"), name_of="category_id")
TOTAL = "total"


def _shaped(inner: Select[Any], shape: Shape, query: Query, names: Names) -> Select[Any]:
    limit = _bound(query, "limit") if query.limit is not None else None
    offset = _bound(query, "offset") if query.offset else None
    return shaped(inner, shape, names, order=query.order or "month", limit=limit, offset=offset)


def bound_values(query: Query) -> dict[str, Any]:
    """The values of a query's bound parameters, by name: what changes between requests of one form."""
    values: dict[str, Any] = {"months": query.months() if query.first and query.last else [],
                              "marketplace": query.marketplace, "metrics": list(query.metrics),
                              "brand_ids": list(query.brand_ids), "category_ids": list(query.category_ids),
                              "offset": query.offset}
    values["limit"] = query.limit + 1 if query.limit is not None else None  # one row past the page: is there more?
    return values


def form(endpoint: str, query: Query) -> tuple[Any, ...]:
    """What a statement's text depends on (the values aside): requests of one form share one statement."""
    return (endpoint, query.by, query.order, query.group, bool(query.metrics), bool(query.brand_ids),
            bool(query.category_ids), query.limit is None, bool(query.offset), query.marketplace is None)


def _bound(query: Query, name: str) -> Any:
    """A bound parameter holding the query's value: run as built, or again with another request's values."""
    return bindparam(name, bound_values(query)[name], expanding=name in EXPANDING, type_=Integer if name in (
        "limit", "offset") else None)


EXPANDING = frozenset({"months", "metrics", "brand_ids", "category_ids"})


def _measures(t: Table, query: Query) -> list[ColumnElement[Any]]:
    """value and row_count as stored, or summed over the months with group=total."""
    if query.group == TOTAL:
        return [func.sum(t.c.value).label("value"), func.sum(t.c.row_count).label("row_count")]
    return [t.c.value, t.c.row_count]


def _months(t: Table, query: Query) -> list[ColumnElement[Any]]:
    return [] if query.group == TOTAL else [t.c.month]


def _brand_category(t: Table, query: Query) -> ColumnElement[Any]:
    """A brand's category; summed over months, the largest id if the brand moved within the range."""
    return func.max(t.c.category_id).label("category_id") if query.group == TOTAL else t.c.category_id


def dashboard_select(brand: Table, query: Query, names: Names = NO_NAMES) -> Select[Any]:
    """Brand-tier rows of one marketplace (or ALL) for the months, metrics and brands asked for."""
    return _shaped(_dashboard_rows(brand, query), DASHBOARD_SHAPE, query, names)


def _dashboard_rows(brand: Table, query: Query) -> Select[Any]:
    t = brand
    statement = select(*_months(t, query), t.c.brand_id, _brand_category(t, query), t.c.metric,
                       *_measures(t, query)).where(
        t.c.marketplace == _bound(query, "marketplace"), t.c.month.in_(_bound(query, "months")))  # point ranges
    if query.metrics:
        statement = statement.where(t.c.metric.in_(_bound(query, "metrics")))
    if query.brand_ids:
        statement = statement.where(t.c.brand_id.in_(_bound(query, "brand_ids")))
    return statement.group_by(t.c.brand_id, t.c.metric) if query.group == TOTAL else statement


def categories_select(category: Table, query: Query, names: Names = NO_NAMES) -> Select[Any]:
    return _shaped(_categories_rows(category, query), CATEGORIES_SHAPE, query, names)


def _categories_rows(category: Table, query: Query) -> Select[Any]:
    t = category
    statement = select(*_months(t, query), t.c.category_id, t.c.metric, *_measures(t, query)).where(
        t.c.month.in_(_bound(query, "months")))
    if query.metrics:
        statement = statement.where(t.c.metric.in_(_bound(query, "metrics")))
    if query.category_ids:
        statement = statement.where(t.c.category_id.in_(_bound(query, "category_ids")))
    return statement.group_by(t.c.category_id, t.c.metric) if query.group == TOTAL else statement


def profitability_select(brand: Table, query: Query, revenue: Sequence[str], cost: Sequence[str],
                         names: Names = NO_NAMES) -> Select[Any]:
    """Per month (or the range) and brand (or category): revenue metrics summed, cost metrics summed, profit."""
    by_brand = query.by == "brand"
    shape = Shape(keys=("brand_id", "category_id") if by_brand else ("category_id",), value="profit",
                  name_of="brand_id" if by_brand else "category_id")
    return _shaped(_profit_rows(brand, query, revenue, cost), shape, query, names)


def _profit_rows(brand: Table, query: Query, revenue: Sequence[str], cost: Sequence[str]) -> Select[Any]:
    t = brand
    zero: ColumnElement[Any] = literal_column("0")
    revenue_sum = func.sum(case((t.c.metric.in_(revenue), t.c.value), else_=zero))
    cost_sum = func.sum(case((t.c.metric.in_(cost), t.c.value), else_=zero))
    keys = [t.c.brand_id, _brand_category(t, query)] if query.by == "brand" else [t.c.category_id]
    statement = select(*_months(t, query), *keys, revenue_sum.label("revenue"), cost_sum.label("cost"),
                       (revenue_sum - cost_sum).label("profit")).where(
        t.c.marketplace == _bound(query, "marketplace"), t.c.month.in_(_bound(query, "months")),
        t.c.metric.in_([*revenue, *cost]))
    if query.brand_ids:
        statement = statement.where(t.c.brand_id.in_(_bound(query, "brand_ids")))
    if query.category_ids:
        statement = statement.where(t.c.category_id.in_(_bound(query, "category_ids")))
    group = [t.c.brand_id] if query.by == "brand" else [t.c.category_id]
    return statement.group_by(*group) if query.group == TOTAL else statement.group_by(t.c.month, *keys)


def _tagged(kind: str, value: Any) -> tuple[Any, Any]:
    return literal_column(f"'{kind}'").label("kind"), cast(value, String).label("value")


def _known_parts(tiers: Tiers) -> list[Select[Any]]:
    c, b = tiers.category, tiers.brand
    return [select(*_tagged("metric", c.c.metric)).group_by(c.c.metric),
            select(*_tagged("marketplace", b.c.marketplace)).group_by(b.c.marketplace)]


def known_select(tiers: Tiers) -> Select[Any]:
    """The metrics and the marketplaces the tiers hold, as (kind, value) rows."""
    return union_all(*_known_parts(tiers))  # type: ignore[return-value]


def meta_select(tiers: Tiers) -> Select[Any]:
    """Months, metrics, marketplaces and rows per tier, as (kind, value) rows: one statement."""
    c = tiers.category
    counts = [select(*_tagged(f"rows_{name}", func.count())).select_from(t) for name, t in tiers.by_name().items()]
    return union_all(select(*_tagged("month", c.c.month)).group_by(c.c.month),  # type: ignore[return-value]
                     *_known_parts(tiers), *counts)


def version_select(data_version: Table) -> Select[Any]:
    """The data version (``version.py``): one row read through its primary key."""
    return version.current(data_version)


def finished_select(runs: Table) -> Select[Any]:
    """The id of the newest finished run: walks the primary key backwards past running ones."""
    return select(runs.c.id).where(runs.c.status != RUNNING).order_by(runs.c.id.desc()).limit(1)


def run_select(runs: Table, run_id: int) -> Select[Any]:
    return select(runs).where(runs.c.id == run_id)


# --- values -------------------------------------------------------------------------------------

def decimal_text(value: Any) -> str:
    """An exact decimal as text: Decimal as it is, a float (SQLite REAL) in its shortest form."""
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format(Decimal(value), "f") if not isinstance(value, str) else value


def month_text(value: Any) -> str:
    return f"{value:%Y-%m}" if isinstance(value, dt.date) else str(value)[:7]


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "month": month_text, "brand_id": int, "category_id": int, "row_count": int, "value": decimal_text,
    "revenue": decimal_text, "cost": decimal_text, "profit": decimal_text}


def row_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """One answer row as JSON values, its columns in the statement's order; names stay text or null."""
    return {key: value if value is None else CONVERTERS.get(key, str)(value) for key, value in row.items()}


# --- the reader -----------------------------------------------------------------------------------

@dataclass
class Answer:
    """A response body ready to send, how the cache served it, and the data version it reflects."""

    body: bytes
    cache: str
    version: int
    media_type: str = "application/json"
    next: str | None = None  # a CSV answer's next page (a JSON answer has it in meta.next)

    @classmethod
    def of(cls, entry: bytes, how: str, version: int, query: Query) -> Answer:
        """From a cache entry: a JSON body, or a CSV one after the line holding its next link."""
        if query.format != "csv":
            return cls(entry, how, version)
        link, _, body = entry.partition(b"\n")
        return cls(body, how, version, CSV_MEDIA_TYPE, link.decode() or None)


@dataclass
class Health:
    ok: bool
    code: str  # ok, stale, never_refreshed
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class Reader:
    """The read functions over one Summarizer's live tiers, and the cached answers the API sends."""

    def __init__(self, summarizer: Summarizer, cache: Cache | None = None) -> None:
        self.summarizer = summarizer
        self.api = summarizer.config.api
        self.all_marketplace: str = summarizer.schema.all_marketplace
        self.tiers = summarizer.schema.live()
        self.runs = summarizer.schema.runs()
        self.data_version = summarizer.schema.data_version()
        self.cache = cache if cache is not None else self._default_cache()
        self._known: tuple[int, Known] | None = None
        self._names_at: tuple[int, Names] | None = None
        self._forms: tuple[Names | None, dict[tuple[Any, ...], Select[Any]]] = (None, {})
        self._local = threading.local()
        self.handlers: dict[str, Callable[[Query], Any]] = {
            DASHBOARD: self.dashboard, CATEGORIES: self.categories, PROFITABILITY: self.profitability,
            META: lambda _query: self.meta()}

    def _default_cache(self) -> Cache:
        url = self.summarizer.config.database_url().render_as_string(hide_password=True)
        prefix = namespace(url, *(t.name for t in self.tiers))
        return make_cache(self.api.redis_url, self.api.cache_bytes, prefix, int(self.api.max_age))

    # --- the read functions (one statement each) ----------------------------------------------
    def query(self, endpoint: str, params: Mapping[str, str | Sequence[str]]) -> Query:
        """``{"from": "2024-01", "metric": ["revenue", "units"]}`` -> a checked Query."""
        return self.parse(endpoint, [(k, v) for k, vs in params.items() for v in ([vs] if isinstance(vs, str) else vs)])

    def parse(self, endpoint: str, items: Iterable[tuple[str, str]]) -> Query:
        """(name, value) pairs, as in a query string -> a checked Query; BadParameter otherwise."""
        return parse_query(endpoint, items, max_months=self.api.max_months, all_marketplace=self.all_marketplace,
                           max_limit=self.api.max_limit)

    def dashboard(self, query: Query) -> list[dict[str, Any]]:
        return self.page(DASHBOARD, query)[0]

    def categories(self, query: Query) -> list[dict[str, Any]]:
        return self.page(CATEGORIES, query)[0]

    def profitability(self, query: Query) -> list[dict[str, Any]]:
        return self.page(PROFITABILITY, query)[0]

    def statement(self, endpoint: str, query: Query) -> Select[Any]:
        """The one statement that answers ``query`` on a data endpoint."""
        names = self._names()
        if endpoint == DASHBOARD:
            return dashboard_select(self.tiers.brand, query, names)
        if endpoint == CATEGORIES:
            return categories_select(self.tiers.category, query, names)
        return profitability_select(self.tiers.brand, query, self.api.revenue_metrics, self.api.cost_metrics, names)

    def page(self, endpoint: str, query: Query) -> tuple[list[dict[str, Any]], bool]:
        """The rows of one page, and whether more follow (the statement reads one row past the page)."""
        rows = self._answer_rows(self._statement_of_form(endpoint, query), bound_values(query))
        if query.limit is None:
            return rows, False
        return rows[:query.limit], len(rows) > query.limit

    def _statement_of_form(self, endpoint: str, query: Query) -> Select[Any]:
        """The statement for requests of ``query``'s form, built once (per name tables: per data version at most)."""
        names = self._names()
        if self._forms[0] is not names:
            self._forms = (names, {})
        statements, key = self._forms[1], form(endpoint, query)
        statement = statements.get(key)
        if statement is None:
            statement = statements[key] = self.statement(endpoint, query)
        return statement

    def meta(self) -> dict[str, Any]:
        found: dict[str, list[str]] = {}
        for kind, value in self._rows(meta_select(self.tiers)):
            found.setdefault(kind, []).append(value)
        finished = self._scalar(finished_select(self.runs))
        return {"months": sorted({month_text(m) for m in found.get("month", [])}),  # a month once, whatever its day
                "metrics": sorted(found.get("metric", [])), "marketplaces": sorted(found.get("marketplace", [])),
                "all_marketplace": self.all_marketplace,
                "rows": {tier: int(found.get(f"rows_{tier}", ["0"])[0]) for tier in self.tiers.by_name()},
                "revenue_metrics": list(self.api.revenue_metrics), "cost_metrics": list(self.api.cost_metrics),
                "last_run": _run_json(self._run(finished)), "last_success": _run_json(self._last_success()),
                "notes": list(self.names(self.version()).notes)}

    def health(self) -> Health:
        """Fresh when the last successful refresh finished at most ``[api] max_age`` ago."""
        last, max_age = self._last_success(), float(self.api.max_age)
        if last is None or last.finished_at is None:
            return Health(False, "never_refreshed", "no refresh has succeeded yet: run `summarizer refresh`",
                          {"last_success": None, "age_seconds": None, "max_age_seconds": max_age,
                           "follow": self.follow()})
        age = (utcnow() - last.finished_at).total_seconds()
        data = {"last_success": _run_json(last), "age_seconds": age, "max_age_seconds": max_age,
                "follow": self.follow()}
        if age > max_age:
            return Health(False, "stale", f"the last successful refresh (run {last.id}) finished {age / 3600:.1f}h "
                          f"ago, more than the allowed {max_age / 3600:.1f}h ([api] max_age)", data)
        return Health(True, "ok", f"the last successful refresh (run {last.id}) finished {age:.0f}s ago", data)

    def follow(self) -> dict[str, Any] | None:
        """The follower's state (``[follow] enabled``), for the operations page; None without one."""
        state = self.summarizer.follow_status()
        return state.as_json() if state is not None else None

    def version(self) -> int:
        """The data version (``version.py``; 0 if its row is missing)."""
        return int(self._scalar(version_select(self.data_version)) or 0)

    def known(self, version: int) -> Known:
        """Metrics and marketplaces at ``version``, read once per version."""
        cached = self._known
        if cached is not None and cached[0] == version:
            return cached[1]
        found: dict[str, set[str]] = {"metric": set(), "marketplace": set()}
        for kind, value in self._rows(known_select(self.tiers)):
            found[kind].add(value)
        known = Known(frozenset(found["metric"]), frozenset(found["marketplace"]))
        self._known = (version, known)
        return known

    def names(self, version: int) -> Names:
        """The name tables the answers join, looked up once per data version."""
        cached = self._names_at
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._connection() as conn:
            names = discover(conn, self.summarizer.source, self.summarizer.schema.unassigned)
        self._names_at = (version, names)
        return names

    def _names(self) -> Names:
        cached = self._names_at
        return cached[1] if cached is not None else self.names(self.version())

    # --- the cached answers the HTTP layer sends ----------------------------------------------
    def answer(self, endpoint: str, items: Iterable[tuple[str, str]]) -> Answer:
        """The response body for ``endpoint``: checked, then from the cache or one statement.

        Asked again once when the pooled connection was found dead (the database restarted since it was
        last used): the read engine does not ping each connection before use, which would cost a round trip."""
        query = self.parse(endpoint, items)
        try:
            return self._answer(endpoint, query)
        except DatabaseUnavailable as exc:
            if not (isinstance(exc.__cause__, DBAPIError) and exc.__cause__.connection_invalidated):
                raise
            return self._answer(endpoint, query)

    def _answer(self, endpoint: str, query: Query) -> Answer:
        with self._connection():
            version = self.version()
            _check_cursor(query, version)
            key = f"{endpoint}?{query.key()}@{version}"
            body, how = self.cache.get(key)
            if body is not None:
                return Answer.of(body, how, version, query)
            self.known(version).check(query, self.all_marketplace)
            self.names(version)
            meta: dict[str, Any] = {"endpoint": endpoint, "params": query.as_json(), "data_version": version}
            if endpoint == META:
                data: Any = self.meta()
            else:
                data, more = self.page(endpoint, query)
                meta["next"] = next_link(endpoint, query, version) if more else None
            if query.format == "csv":
                columns = list(self.statement(endpoint, query).selected_columns.keys())
                body = (meta["next"] or "").encode() + b"\n" + csv_body(columns, data)
            else:
                body = envelope(data, meta)
        self.cache.put(key, body)
        return Answer.of(body, how, version, query)

    # --- running statements -------------------------------------------------------------------
    def _rows(self, statement: Select[Any]) -> list[Any]:
        with self._connection() as conn:
            return list(conn.execute(statement))

    def _answer_rows(self, statement: Select[Any], values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._connection() as conn:
            return [row_json(row) for row in conn.execute(statement, values).mappings()]

    def _scalar(self, statement: Select[Any]) -> Any:
        with self._connection() as conn:
            return conn.execute(statement).scalar()

    def _run(self, run_id: int | None) -> Run | None:
        if run_id is None:
            return None
        with self._connection() as conn:
            row = conn.execute(run_select(self.runs, run_id)).first()
        return Run.from_row(row) if row else None

    def _last_success(self) -> Run | None:
        with self._translated():
            return self.summarizer.runs.last_success()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The thread's connection while :meth:`answer` holds one (one pool checkout per request), else a new one.

        Each statement is its own transaction (``Summarizer.read_dialect``): holding one connection across a
        request's statements holds no lock between them, so a full refresh's swap never waits for a reader
        that is itself about to wait for the swap (tests/test_reads_during_swap.py)."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self._translated(), self._engine().connect() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def _engine(self) -> Engine:
        engine = self.summarizer.read_dialect.engine
        timing.watch(engine)
        return engine

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors as the API reports them: tables missing, or the database unavailable."""
        try:
            yield
        except DBAPIError as exc:
            self._explain(exc)
            raise

    def _explain(self, exc: DBAPIError) -> None:
        """Raise SchemaError when tables are missing, DatabaseUnavailable when the server is; else return."""
        try:
            require_tables(self.summarizer.dialect, self.summarizer.schema)
        except DBAPIError as again:
            raise DatabaseUnavailable(f"the database is not answering: {first_line(again)}") from exc
        if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
            raise DatabaseUnavailable(f"the database could not answer: {first_line(exc)}") from exc


def _check_cursor(query: Query, version: int) -> None:
    """A cursor pages through one data version: after a refresh, rows may have moved between pages."""
    if query.cursor_version is not None and query.cursor_version != version:
        raise BadParameter("cursor", f"the summaries changed since this cursor was made (data version "
                           f"{query.cursor_version} then, {version} now): start again from the first page",
                           CURSOR.help)


def next_link(endpoint: str, query: Query, version: int) -> str:
    """The next page's URL (path and query): the same parameters and a cursor where this page ends."""
    assert query.limit is not None
    position = Position(query.offset + query.limit, version, query.fingerprint())
    params = {k: v for k, v in query.as_json().items() if k != "offset"} | {"cursor": position.encode()}
    return f"/api/{endpoint}?{urlencode(params, doseq=True)}"


def envelope(data: Any, meta: dict[str, Any]) -> bytes:
    """The one success shape: ``{"data": ..., "meta": {...}}``, as compact JSON."""
    if isinstance(data, list):
        meta = {**meta, "count": len(data)}
    return json.dumps({"data": data, "meta": meta}, separators=(",", ":")).encode()


def _run_json(run: Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    keys = ("id", "mode", "months", "status", "started_at", "finished_at", "data_as_of", "error")
    full = run.as_json()
    full["error"] = public(full["error"]) if full["error"] else None  # no connection details for clients
    return {k: full[k] for k in (*keys, "duration_seconds")}
