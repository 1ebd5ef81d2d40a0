"""The read API's queries: parameters checked, statements built (pure), then run over the summaries.

Every answer is one statement over the summary tables (never the raw table) with bound parameters
only; ``meta`` is one statement over the tiers plus two tiny reads of the run history. Values come
back as exact decimals written as JSON strings (``"1234.5000"``): DECIMAL on MySQL/MariaDB and
PostgreSQL, so nothing is lost on the way to a finance user; on SQLite the tiers hold REAL and the
strings are the shortest form of those floats.

Answers are cached (``cache.py``) under a key made of the endpoint, the normalised parameters and
the *data version*: the id of the newest finished refresh run. Any run that ends changes it, so a
refresh of any mode invalidates the cache. Finished, not only successful: an incremental run that
failed may already have replaced some of its months, each in its own transaction.

Parsing and checking are pure (:func:`parse_query`); :class:`Reader` runs the statements. Module
layout: parameters, the query, statement builders, the reader.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, String, Table, case, cast, func, literal_column, select, union_all
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from .cache import Cache, make_cache, namespace
from .ddl import require_tables
from .errors import DatabaseUnavailable, UsageError
from .model import Tiers
from .months import month_range, parse_month
from .runs import RUNNING, Run, utcnow

if TYPE_CHECKING:
    from .app import Summarizer

BIGINT_MAX = 2**63 - 1
MAX_IDS = 1000
DASHBOARD, CATEGORIES, PROFITABILITY, META, HEALTH = (
    "dashboard-data", "categories-dashboard-data", "profitability-data", "meta", "health")


# --- parameters ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One query parameter of one endpoint: what it is, and the help the OpenAPI description shows."""

    name: str
    kind: str  # month, text, id, choice
    help: str
    repeatable: bool = False
    required: bool = False
    choices: tuple[str, ...] = ()


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

PARAMS: dict[str, tuple[Param, ...]] = {
    DASHBOARD: (FROM, TO, MARKETPLACE, METRIC, BRAND_ID),
    CATEGORIES: (FROM, TO, METRIC, CATEGORY_ID),
    PROFITABILITY: (FROM, TO, MARKETPLACE, BRAND_ID, CATEGORY_ID, BY),
    META: (),
    HEALTH: (),
}


class BadParameter(UsageError):
    """A query parameter that cannot be used; names it and what is allowed (HTTP 400)."""

    def __init__(self, parameter: str, message: str, allowed: Sequence[str] | str = "") -> None:
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

    def months(self) -> list[dt.date]:
        assert self.first is not None and self.last is not None
        return month_range(self.first, self.last)

    def as_json(self) -> dict[str, Any]:
        values = {"from": self.first and f"{self.first:%Y-%m}", "to": self.last and f"{self.last:%Y-%m}",
                  "marketplace": self.marketplace, "metric": list(self.metrics), "brand_id": list(self.brand_ids),
                  "category_id": list(self.category_ids), "by": self.by}
        return {k: v for k, v in values.items() if v not in (None, [])}

    def key(self) -> str:
        """The canonical text of the parameters, for cache keys."""
        return json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))


def parse_query(endpoint: str, items: Iterable[tuple[str, str]], *, max_months: int,
                all_marketplace: str) -> Query:
    """Check the syntax of ``items`` (name, value pairs) for ``endpoint``; raise BadParameter."""
    spec = {p.name: p for p in PARAMS[endpoint]}
    values = _collect(items, spec)
    for param in spec.values():
        if param.required and param.name not in values:
            raise BadParameter(param.name, f"required: {param.help}", _allowed(param))
    first, last = _month_bounds(values, max_months)
    ids: dict[str, tuple[int, ...]] = {name: _ids(spec[name], values.get(name, []))
                                       for name in ("brand_id", "category_id") if name in spec}
    default_market = all_marketplace if "marketplace" in spec else None
    return Query(first=first, last=last, marketplace=_single(values, "marketplace") or default_market,
                 metrics=tuple(sorted(set(values.get("metric", [])))),
                 brand_ids=ids.get("brand_id", ()), category_ids=ids.get("category_id", ()),
                 by=_by(endpoint, values, ids))


def _collect(items: Iterable[tuple[str, str]], spec: Mapping[str, Param]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in items:
        if name not in spec:
            raise BadParameter(name, "unknown parameter", sorted(spec) or "none: this endpoint takes no parameters")
        param = spec[name]
        if not value.strip():
            raise BadParameter(name, f"empty; expected {param.help}", _allowed(param))
        values.setdefault(name, []).append(value.strip())
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
    try:
        return parse_month(text)
    except ValueError:  # also year 0000, which the pattern lets through
        raise BadParameter(name, f"expected a month as YYYY-MM (for example 2024-03), got {text!r}",
                           "YYYY-MM") from None


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
    found = set()
    for text in texts:
        if not (text.isascii() and text.isdigit()) or int(text) > BIGINT_MAX:
            raise BadParameter(param.name, f"expected a whole number from 0 to {BIGINT_MAX}, got {text!r}",
                               f"0..{BIGINT_MAX}")
        found.add(int(text))
    if len(found) > MAX_IDS:
        raise BadParameter(param.name, f"{len(found)} ids given; at most {MAX_IDS} per request", f"<= {MAX_IDS} ids")
    return tuple(sorted(found))


def _by(endpoint: str, values: Mapping[str, list[str]], ids: Mapping[str, tuple[int, ...]]) -> str | None:
    if endpoint != PROFITABILITY:
        return None
    given = _single(values, "by")
    if given is not None and given not in BY.choices:
        raise BadParameter("by", f"expected one of {', '.join(BY.choices)}, got {given!r}", list(BY.choices))
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
                raise BadParameter("metric", f"unknown metric {metric!r}", sorted(self.metrics) or _EMPTY)
        markets = self.marketplaces | {all_marketplace}
        if query.marketplace is not None and query.marketplace not in markets:
            raise BadParameter("marketplace", f"unknown marketplace {query.marketplace!r}", sorted(markets))


_EMPTY = "none yet: the summaries are empty (run `summarizer refresh`)"


# --- statements (pure) --------------------------------------------------------------------------

def dashboard_select(brand: Table, query: Query) -> Select[Any]:
    """Brand-tier rows of one marketplace (or ALL) for the months, metrics and brands asked for."""
    t = brand
    statement = select(t.c.month, t.c.brand_id, t.c.category_id, t.c.metric, t.c.value, t.c.row_count).where(
        t.c.marketplace == query.marketplace, t.c.month.in_(query.months()))  # a list: point ranges on the key
    if query.metrics:
        statement = statement.where(t.c.metric.in_(query.metrics))
    if query.brand_ids:
        statement = statement.where(t.c.brand_id.in_(query.brand_ids))
    return statement.order_by(t.c.month, t.c.brand_id, t.c.metric)


def categories_select(category: Table, query: Query) -> Select[Any]:
    t = category
    statement = select(t.c.month, t.c.category_id, t.c.metric, t.c.value, t.c.row_count).where(
        t.c.month.in_(query.months()))
    if query.metrics:
        statement = statement.where(t.c.metric.in_(query.metrics))
    if query.category_ids:
        statement = statement.where(t.c.category_id.in_(query.category_ids))
    return statement.order_by(t.c.month, t.c.category_id, t.c.metric)


def profitability_select(brand: Table, query: Query, revenue: Sequence[str], cost: Sequence[str]) -> Select[Any]:
    """Per month and brand (or category): revenue metrics summed, cost metrics summed, their difference."""
    t = brand
    zero: ColumnElement[Any] = literal_column("0")
    revenue_sum = func.sum(case((t.c.metric.in_(revenue), t.c.value), else_=zero))
    cost_sum = func.sum(case((t.c.metric.in_(cost), t.c.value), else_=zero))
    keys = [t.c.brand_id, t.c.category_id] if query.by == "brand" else [t.c.category_id]
    statement = select(t.c.month, *keys, revenue_sum.label("revenue"), cost_sum.label("cost"),
                       (revenue_sum - cost_sum).label("profit")).where(
        t.c.marketplace == query.marketplace, t.c.month.in_(query.months()), t.c.metric.in_([*revenue, *cost]))
    if query.brand_ids:
        statement = statement.where(t.c.brand_id.in_(query.brand_ids))
    if query.category_ids:
        statement = statement.where(t.c.category_id.in_(query.category_ids))
    return statement.group_by(t.c.month, *keys).order_by(t.c.month, *keys)


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


def version_select(runs: Table) -> Select[Any]:
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


def _dashboard_row(row: Any) -> dict[str, Any]:
    month, brand_id, category_id, metric, value, row_count = row
    return {"month": month_text(month), "brand_id": int(brand_id), "category_id": int(category_id),
            "metric": metric, "value": decimal_text(value), "row_count": int(row_count)}


def _category_row(row: Any) -> dict[str, Any]:
    month, category_id, metric, value, row_count = row
    return {"month": month_text(month), "category_id": int(category_id), "metric": metric,
            "value": decimal_text(value), "row_count": int(row_count)}


def _profit_row(row: Any) -> dict[str, Any]:
    month, *ids, revenue, cost, profit = row
    keys = ("brand_id", "category_id") if len(ids) == 2 else ("category_id",)
    return {"month": month_text(month), **{k: int(v) for k, v in zip(keys, ids, strict=True)},
            "revenue": decimal_text(revenue), "cost": decimal_text(cost), "profit": decimal_text(profit)}


# --- the reader -----------------------------------------------------------------------------------

@dataclass
class Answer:
    """A response body ready to send, how the cache served it, and the data version it reflects."""

    body: bytes
    cache: str
    version: int


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
        self.cache = cache if cache is not None else self._default_cache()
        self._known: tuple[int, Known] | None = None
        self._local = threading.local()
        self.handlers: dict[str, Callable[[Query], Any]] = {
            DASHBOARD: self.dashboard, CATEGORIES: self.categories, PROFITABILITY: self.profitability,
            META: lambda _query: self.meta()}

    def _default_cache(self) -> Cache:
        url = self.summarizer.config.database_url().render_as_string(hide_password=True)
        prefix = namespace(url, *(t.name for t in self.tiers))
        return make_cache(self.api.redis_url, self.api.cache_size, prefix, int(self.api.max_age))

    # --- the read functions (one statement each) ----------------------------------------------
    def query(self, endpoint: str, params: Mapping[str, str | Sequence[str]]) -> Query:
        """``{"from": "2024-01", "metric": ["revenue", "units"]}`` -> a checked Query."""
        return self.parse(endpoint, [(k, v) for k, vs in params.items() for v in ([vs] if isinstance(vs, str) else vs)])

    def parse(self, endpoint: str, items: Iterable[tuple[str, str]]) -> Query:
        """(name, value) pairs, as in a query string -> a checked Query; BadParameter otherwise."""
        return parse_query(endpoint, items, max_months=self.api.max_months, all_marketplace=self.all_marketplace)

    def dashboard(self, query: Query) -> list[dict[str, Any]]:
        return [_dashboard_row(r) for r in self._rows(dashboard_select(self.tiers.brand, query))]

    def categories(self, query: Query) -> list[dict[str, Any]]:
        return [_category_row(r) for r in self._rows(categories_select(self.tiers.category, query))]

    def profitability(self, query: Query) -> list[dict[str, Any]]:
        statement = profitability_select(self.tiers.brand, query, self.api.revenue_metrics, self.api.cost_metrics)
        return [_profit_row(r) for r in self._rows(statement)]

    def meta(self) -> dict[str, Any]:
        found: dict[str, list[str]] = {}
        for kind, value in self._rows(meta_select(self.tiers)):
            found.setdefault(kind, []).append(value)
        version = self.version()
        return {"months": sorted({month_text(m) for m in found.get("month", [])}),  # a month once, whatever its day
                "metrics": sorted(found.get("metric", [])), "marketplaces": sorted(found.get("marketplace", [])),
                "all_marketplace": self.all_marketplace,
                "rows": {tier: int(found.get(f"rows_{tier}", ["0"])[0]) for tier in self.tiers.by_name()},
                "revenue_metrics": list(self.api.revenue_metrics), "cost_metrics": list(self.api.cost_metrics),
                "last_run": _run_json(self._run(version)), "last_success": _run_json(self._last_success())}

    def health(self) -> Health:
        """Fresh when the last successful refresh finished at most ``[api] max_age`` ago."""
        last, max_age = self._last_success(), float(self.api.max_age)
        if last is None or last.finished_at is None:
            return Health(False, "never_refreshed", "no refresh has succeeded yet: run `summarizer refresh`",
                          {"last_success": None, "age_seconds": None, "max_age_seconds": max_age})
        age = (utcnow() - last.finished_at).total_seconds()
        data = {"last_success": _run_json(last), "age_seconds": age, "max_age_seconds": max_age}
        if age > max_age:
            return Health(False, "stale", f"the last successful refresh (run {last.id}) finished {age / 3600:.1f}h "
                          f"ago, more than the allowed {max_age / 3600:.1f}h ([api] max_age)", data)
        return Health(True, "ok", f"the last successful refresh (run {last.id}) finished {age:.0f}s ago", data)

    def version(self) -> int:
        """The data version: the id of the newest finished run (0 before any)."""
        return int(self._scalar(version_select(self.runs)) or 0)

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

    # --- the cached answers the HTTP layer sends ----------------------------------------------
    def answer(self, endpoint: str, items: Iterable[tuple[str, str]]) -> Answer:
        """The response body for ``endpoint``: checked, then from the cache or one statement."""
        query = self.parse(endpoint, items)
        with self._connection():
            version = self.version()
            key = f"{endpoint}?{query.key()}@{version}"
            body, how = self.cache.get(key)
            if body is not None:
                return Answer(body, how, version)
            self.known(version).check(query, self.all_marketplace)
            data = self.handlers[endpoint](query)
        body = envelope(data, {"endpoint": endpoint, "params": query.as_json(), "data_version": version})
        self.cache.put(key, body)
        return Answer(body, how, version)

    # --- running statements -------------------------------------------------------------------
    def _rows(self, statement: Select[Any]) -> list[Any]:
        with self._connection() as conn:
            return list(conn.execute(statement))

    def _scalar(self, statement: Select[Any]) -> Any:
        with self._connection() as conn:
            return conn.execute(statement).scalar()

    def _run(self, run_id: int) -> Run | None:
        with self._connection() as conn:
            row = conn.execute(run_select(self.runs, run_id)).first()
        return Run.from_row(row) if row else None

    def _last_success(self) -> Run | None:
        with self._translated():
            return self.summarizer.runs.last_success()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The thread's connection while :meth:`answer` holds one (one pool checkout per request), else a new one."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self._translated(), self.summarizer.dialect.engine.connect() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

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
            raise DatabaseUnavailable(f"the database is not answering: {_first_line(again)}") from exc
        if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
            raise DatabaseUnavailable(f"the database could not answer: {_first_line(exc)}") from exc


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
    return {k: full[k] for k in (*keys, "duration_seconds")}


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
