"""The benchmark behind the performance targets of ``docs/design.md``: every figure they compare, in one run.

In this order, on one database (``python -m benchmarks.bench`` is the command line over :func:`run_bench`):

1. **floor**: ``SELECT COUNT(*), SUM(value) FROM financials``, one scan of the raw table; warm, best
   of ``repeat``;
2. **full refresh** of the three tiers through the library (:meth:`Summarizer.refresh`), the covering
   index in place; median of ``repeat``; its ratio to the floor (target: at most 4);
3. **baseline**: the hand-written method of docs/design.md's background, on the same data
   (:func:`baseline_statements`): its two raw-table indexes, ``TRUNCATE`` of the three tiers, tier 1
   from the raw table joined to products, brands and categories in one ``INSERT ... SELECT ... GROUP
   BY``, tier 2 from tier 1, tier 3 from tier 2, the server's default settings; run once, with our
   covering index dropped meanwhile so the server reads the raw table as that method did; the ratio of
   ours to it;
4. **one month**: an incremental refresh of the last month; median of ``repeat``; its share of the
   full refresh (target: at most 1/20);
5. **dashboard questions** over 12 months answered from the summaries (the read functions of
   ``read.py``, uncached, in-process) and the same questions asked of the raw tables (with the field
   report's two indexes beside ours, as its dashboards had them): p50, p99 and the ratio of the p50s;
   the answers are compared, too. Typical requests (one brand; one category) have
   targets (at least 100x, summaries under 5 ms); all brands and all categories are shown beside them;
6. **peak memory**: the maximum RSS of a ``python -m summarizer refresh`` child process (target: under
   150 MB).

It ends with ``verify``. The benchmark owns the database it runs on: it replaces the source tables
(unless told to reuse them) and adds and drops indexes on the raw table. Point it at a scratch database.

A wide shape (``Shape(wide=True)``: synth's ``order_lines``, a date and three measures, read with
``synth.WIDE_SETTINGS``) measures 1, 2, 4 and 6; its floor sums every measure column. The hand-written
method and the raw-table questions are about the long ``financials`` table and are left out.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    Index,
    MetaData,
    Select,
    Table,
    bindparam,
    case,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from summarizer import __version__
from summarizer.config import load_config
from summarizer.ddl import ddl, sorted_indexes
from summarizer.errors import RefreshFailed, UsageError
from summarizer.facade import Summarizer
from summarizer.model import OLD_SUFFIX, SHADOW_SUFFIX, Source, Tiers, covering_index_columns
from summarizer.months import add_months, as_date
from summarizer.runs import Run
from summarizer.serve.read import CATEGORIES, DASHBOARD, PROFITABILITY, Reader
from summarizer.synth import WIDE_SETTINGS, Shape, create_source_tables, generate

from .servers import BenchServer, bench_server

FULL_MAX_RATIO = 4.0            # full refresh / floor
MONTH_MAX_SHARE = 1 / 20        # one month / full refresh
RSS_MAX_BYTES = 150 * 10**6     # peak RSS of the refresh process
DASHBOARD_MIN_RATIO = 100.0     # raw p50 / summary p50
DASHBOARD_MAX_P50_MS = 5.0
SETTLE_TIMEOUT = 60.0           # longest wait for the server's background writes before a timed run
FLOOR_SQL = "SELECT COUNT(*), {sums} FROM {financials}"
FIELD_SHAPE = dict(asins=20_000, brands=2_000, categories=200, rows_per_key=40)  # ~40 raw rows per tier-1 row
WRITE_FLOOR_SUFFIX = "__wfloor"  # the write floor's copies of the tiers

Echo = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    url: URL
    shape: Shape = field(default_factory=lambda: Shape(rows=5_000_000, **FIELD_SHAPE))  # type: ignore[arg-type]
    generate: bool = True       # False: reuse the source tables as they are
    replace: bool = False       # allow replacing source tables that already hold rows
    repeat: int = 3
    jobs: int = 1               # months refreshed at once by the full refresh
    summary_queries: int = 200  # per dashboard question
    raw_queries: int = 3
    settle: bool = True         # wait for the server's background writes before each timed run
    baseline: bool = True       # False: skip the hand-written method (slow where the data hardly compresses)

    def check(self) -> None:
        if self.repeat < 1 or self.jobs < 1 or self.summary_queries < 1 or self.raw_queries < 1:
            raise UsageError("--repeat, --jobs, --summary-queries and --raw-queries must be at least 1")


# --- statements: the hand-written method, and the dashboard questions asked of the raw tables ---

def baseline_statements(app: Summarizer) -> list[tuple[str, str]]:
    """The hand-written refresh, written plainly: (step, SQL). ``:all`` is the ALL marketplace."""
    s, q = app.source, app.dialect.quote
    t1, t2, t3 = (q(t.name) for t in app.schema.live())
    f, p, b, c = (q(t.name) for t in (s.financials, s.products, s.brands, s.categories))
    fc = {role: q(getattr(s, role).name) for role in ("asin", "marketplace", "month", "metric", "value")}
    brand, category = f"COALESCE(p.{q(s.product_brand.name)}, 0)", f"COALESCE(b.{q(s.brand_category.name)}, 0)"
    keys = ", ".join(f"f.{fc[k]}" for k in ("month", "asin", "marketplace", "metric"))
    return [
        *((f"truncate {t.name}", bench_server(app.dialect).truncate_sql(t.name)) for t in app.schema.live()),
        ("tier 1", f"INSERT INTO {t1} (month, asin, marketplace, metric, brand_id, category_id, value, row_count, "
                   f"refreshed_at) SELECT {keys}, {brand}, {category}, SUM(f.{fc['value']}), COUNT(*), "
                   f"CURRENT_TIMESTAMP FROM {f} f "
                   f"LEFT JOIN {p} p ON p.{q(s.product_asin.name)} = f.{fc['asin']} "
                   f"LEFT JOIN {b} b ON b.{q(s.brand_id.name)} = p.{q(s.product_brand.name)} "
                   f"LEFT JOIN {c} c ON c.{q(s.category_id.name)} = b.{q(s.brand_category.name)} "
                   f"GROUP BY {keys}, {brand}, {category}"),
        ("tier 2", f"INSERT INTO {t2} (month, brand_id, marketplace, metric, category_id, value, row_count, "
                   "refreshed_at) SELECT month, brand_id, marketplace, metric, category_id, SUM(value), "
                   f"SUM(row_count), CURRENT_TIMESTAMP FROM {t1} "
                   "GROUP BY month, brand_id, marketplace, metric, category_id"),
        ("tier 2 ALL", f"INSERT INTO {t2} (month, brand_id, marketplace, metric, category_id, value, row_count, "
                       "refreshed_at) SELECT month, brand_id, :all, metric, category_id, SUM(value), "
                       f"SUM(row_count), CURRENT_TIMESTAMP FROM {t1} GROUP BY month, brand_id, metric, category_id"),
        ("tier 3", f"INSERT INTO {t3} (month, category_id, metric, value, row_count, refreshed_at) "
                   "SELECT month, category_id, metric, SUM(value), SUM(row_count), CURRENT_TIMESTAMP "
                   f"FROM {t2} WHERE marketplace = :all GROUP BY month, category_id, metric"),
    ]


def baseline_indexes(source: Source) -> list[Index]:
    """The hand-written method's raw-table indexes: (month, metric, marketplace) and (metric, month)."""
    table = _raw_table(source)
    month, metric, marketplace = (table.c[getattr(source, r).name] for r in ("month", "metric", "marketplace"))
    return [Index("idx_month_metric_marketplace", month, metric, marketplace),
            Index("idx_metric_month", metric, month)]


def _raw_table(source: Source) -> Table:
    names = {c.name for c in source.financials.columns}
    return Table(source.financials.name, MetaData(), *(Column(name) for name in sorted(names)))


@dataclass(frozen=True)
class Question:
    """One dashboard question: the read function's parameters, and the same question of the raw tables."""

    name: str
    endpoint: str
    params: dict[str, Any]
    raw: Select[Any]
    keys: tuple[str, ...]  # the answer's key columns, leading the raw rows in this order
    typical: bool  # a typical dashboard request (one brand or category): what docs/design.md's targets are about


@dataclass(frozen=True)
class Ask:
    """What a question filters on and groups by; ``None`` filters nothing."""

    months: list[dt.date]
    keys: tuple[str, ...]
    marketplace: str | None = None
    metrics: list[str] | None = None
    brand_id: int | None = None
    category_id: int | None = None
    profit: tuple[list[str], list[str]] | None = None  # (revenue metrics, cost metrics)


def raw_select(app: Summarizer, ask: Ask) -> Select[Any]:
    """The question asked of the raw tables: financials joined to products and brands, grouped."""
    s, unassigned = app.source, app.schema.unassigned
    f, p, b = s.financials.alias("f"), s.products.alias("p"), s.brands.alias("b")
    col = {role: f.c[getattr(s, role).name] for role in ("month", "marketplace", "metric", "value")}
    brand = func.coalesce(p.c[s.product_brand.name], unassigned)
    category = case((brand == unassigned, unassigned), else_=func.coalesce(b.c[s.brand_category.name], unassigned))
    keys = {"month": col["month"], "brand_id": brand, "category_id": category, "metric": col["metric"]}
    joined = f.outerjoin(p, p.c[s.product_asin.name] == f.c[s.asin.name]).outerjoin(
        b, b.c[s.brand_id.name] == p.c[s.product_brand.name])
    filters = [col["month"].in_(bindparam("months", ask.months, type_=Date, expanding=True))]
    filters += [col["marketplace"] == ask.marketplace] if ask.marketplace is not None else []
    filters += [col["metric"].in_(ask.metrics)] if ask.metrics else []
    filters += [brand == ask.brand_id] if ask.brand_id is not None else []
    filters += [category == ask.category_id] if ask.category_id is not None else []
    if ask.profit:
        revenue, cost = ask.profit
        measures: list[Any] = [func.sum(case((col["metric"].in_(m), col["value"]), else_=Decimal(0)))
                               for m in (revenue, cost)]
    else:
        measures = [func.sum(col["value"]), func.count()]
    grouped = [keys[k] for k in ask.keys]
    return select(*grouped, *measures).select_from(joined).where(*filters).group_by(*grouped)


def questions(app: Summarizer, months: list[dt.date], marketplace: str, metric: str, brand_id: int,
              category_id: int) -> list[Question]:
    """The dashboards' questions over 12 months: all brands and all categories, and typical ones for one of each."""
    window = {"from": f"{months[0]:%Y-%m}", "to": f"{months[-1]:%Y-%m}"}
    brand_keys, category_keys = ("month", "brand_id", "category_id", "metric"), ("month", "category_id", "metric")
    profit = (list(app.config.api.revenue_metrics), list(app.config.api.cost_metrics))
    specs = [
        ("dashboard, all brands", DASHBOARD, {"marketplace": marketplace, "metric": metric}, False,
         Ask(months, brand_keys, marketplace=marketplace, metrics=[metric])),
        ("dashboard, one brand", DASHBOARD, {"brand_id": str(brand_id)}, True,
         Ask(months, brand_keys, brand_id=brand_id)),
        ("categories, all", CATEGORIES, {"metric": metric}, False, Ask(months, category_keys, metrics=[metric])),
        ("profitability, one category", PROFITABILITY, {"category_id": str(category_id)}, True,
         Ask(months, ("month", "category_id"), category_id=category_id, metrics=profit[0] + profit[1],
             profit=profit)),
    ]
    return [Question(name, endpoint, {**window, **params}, raw_select(app, ask), ask.keys, typical)
            for name, endpoint, params, typical, ask in specs]


def top_keys(app: Summarizer) -> Select[Any]:
    """The brand and the category with the most raw rows (tier 2's ALL rows), for the one-brand questions."""
    t2 = app.schema.live().brand
    rows = func.sum(t2.c.row_count)
    assigned = (t2.c.marketplace == app.schema.all_marketplace, t2.c.brand_id != app.schema.unassigned)
    brand = select(t2.c.brand_id).where(*assigned).group_by(t2.c.brand_id).order_by(rows.desc()).limit(1)
    category = (select(t2.c.category_id).where(*assigned, t2.c.category_id != app.schema.unassigned)
                .group_by(t2.c.category_id).order_by(rows.desc()).limit(1))
    return select(brand.scalar_subquery(), category.scalar_subquery())


# --- measuring ------------------------------------------------------------------------------------

def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


class Bench:
    """One run of the benchmark on one database; :meth:`run` returns the JSON report."""

    def __init__(self, options: BenchOptions, echo: Echo) -> None:
        options.check()
        self.options, self.echo = options, echo
        environ = {"SUMMARIZER_DATABASE_URL": options.url.render_as_string(hide_password=False),
                   "SUMMARIZER_REFRESH_JOBS": str(options.jobs), **source_environment(options.shape)}
        self.app = Summarizer(load_config(os.devnull, environ), pool_size=max(5, options.jobs + 2))
        self.dialect = self.app.dialect
        self.server = bench_server(self.dialect)
        self.report: dict[str, Any] = {"summarizer_version": __version__, "started_at": dt.datetime.now(dt.UTC)
                                       .replace(microsecond=0).isoformat(), "options": {
                                           "repeat": options.repeat, "jobs": options.jobs,
                                           "summary_queries": options.summary_queries,
                                           "raw_queries": options.raw_queries, "generate": options.generate,
                                           "settle": options.settle}}

    def run(self) -> dict[str, Any]:
        try:
            self.describe_server()
            self.prepare_data()
            self.measure_floor()
            self.measure_full()
            self.measure_write_floor()
            if self.options.baseline and not self.options.shape.wide:  # about the long financials table
                self.measure_baseline()
            self.measure_month()
            if not self.options.shape.wide:
                self.measure_dashboard()
            self.measure_memory()
            self.final_verify()
            self.report["machine"]["load_average_at_end"] = os.getloadavg()
        finally:
            self.app.close()
        self.report["targets"] = targets(self.report)
        return self.report

    # --- setup ------------------------------------------------------------------------------------
    def describe_server(self) -> None:
        with self.dialect.engine.connect() as conn:
            server = self.server.server_settings(conn)
        self.report["database"] = {"engine": self.dialect.name, **server}
        self.report["machine"] = {"cpus": os.cpu_count(), "memory_bytes": _memory_bytes(),
                                  "load_average_at_start": os.getloadavg()}
        self.echo(f"{server['version']}: {server['cache_setting']} {server['cache_bytes'] / 2**20:,.0f} MiB; "
                  f"{os.cpu_count()} CPUs")

    def prepare_data(self) -> None:
        shape = self.options.shape
        if self.options.generate:
            self._require_replaceable()
            self.echo(f"generating {shape.rows:,} raw rows ...")
            with self.dialect.engine.connect() as conn:
                create_source_tables(conn, drop=True)
                seconds, counts = timed(lambda: generate(conn, shape))
            self.report["generate"] = {"seconds": seconds, "rows": counts, "shape": _shape_json(shape)}
            self.echo(f"generated in {seconds:.1f}s: {counts}")
        self._analyze()
        seconds, plan = timed(lambda: self.app.init(source_indexes=True))
        self.report["covering_index"] = {"seconds": seconds, "created": bool(plan.online)}
        explain = self.app.explain()
        self.report["plan"] = {"describe": explain["plan"], "temporary": explain["temporary"],
                               "explain": explain["explain"]}

    def _require_replaceable(self) -> None:
        name = self.app.source.financials.name
        if self.options.replace or name not in inspect(self.dialect.engine).get_table_names():
            return
        with self.dialect.engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(self.app.source.financials)).scalar_one()
        if held:
            raise UsageError(f"{self.app.source.financials.name} already holds {held:,} rows: pass --skip-generate "
                             "to benchmark them, or --replace to drop the source tables and generate new ones")

    def _analyze(self) -> None:
        sql, autocommit = self.server.analyze_sql(self.app.source.financials.name)
        with self.dialect.engine.connect() as conn:
            if autocommit:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text(sql)).close()
            conn.commit()

    # --- 1. floor ----------------------------------------------------------------------------------
    def settle(self) -> None:
        """Before each timed run: let the server finish writing what earlier runs left (see Dialect.settle)."""
        if not self.options.settle:
            return
        with self.dialect.engine.connect() as conn:
            try:
                self.server.settle(conn, SETTLE_TIMEOUT)
                conn.commit()
            except DBAPIError as exc:
                self.report["settle_skipped"] = str(getattr(exc, "orig", exc)).splitlines()[0]

    def measure_floor(self) -> None:
        s, q = self.app.source, self.dialect.quote
        sql = FLOOR_SQL.format(sums=", ".join(f"SUM({q(c.name)})" for c in s.value_columns()),
                               financials=q(s.financials.name))
        self.settle()
        with self.dialect.engine.connect() as conn:
            conn.execute(text(sql)).one()  # warm
            runs = [timed(lambda: conn.execute(text(sql)).one()) for _ in range(self.options.repeat)]
            plan = self.dialect.explain(conn, text(sql))
        self.raw_rows = int(runs[0][1][0])
        best = min(seconds for seconds, _ in runs)
        self.report["floor"] = {"sql": sql, "seconds": best, "all": [seconds for seconds, _ in runs], "explain": plan}
        self.echo(f"floor: {best:.3f}s (best of {len(runs)}) over {self.raw_rows:,} rows")

    # --- 2. full refresh ---------------------------------------------------------------------------
    def measure_full(self) -> None:
        """With ``jobs`` > 1, one-job runs alternate with them, so the lever is measured in the same run."""
        settings = [self.options.jobs] + ([1] if self.options.jobs > 1 else [])
        results: dict[int, list[tuple[float, Run]]] = {jobs: [] for jobs in settings}
        for attempt in range(self.options.repeat):
            for jobs in settings:
                self.settle()
                seconds, run = timed(partial(self.app.refresh, jobs=jobs))
                results[jobs].append((seconds, run))
                self.echo(f"full refresh {attempt + 1}/{self.options.repeat}, jobs {jobs}: {seconds:.2f}s")
        run = results[self.options.jobs][-1][1]
        self.report["rows"] = {"raw": self.raw_rows, **run.rows}
        self.report["compression"] = {"raw_rows_per_tier1_row": _ratio(self.raw_rows, run.rows["asin"] or 0),
                                      "tier1_share_of_raw": _ratio(run.rows["asin"] or 0, self.raw_rows)}
        self.report["full_refresh"] = self._full_json(self.options.jobs, results[self.options.jobs])
        if self.options.jobs > 1:
            self.report["full_refresh_one_job"] = self._full_json(1, results[1])

    def _full_json(self, jobs: int, results: list[tuple[float, Run]]) -> dict[str, Any]:
        median = statistics.median(seconds for seconds, _ in results)
        run = results[-1][1]
        return {"seconds": median, "all": [seconds for seconds, _ in results], "jobs": jobs, "plan": run.plan,
                "steps": run.steps, "ratio_to_floor": _ratio(median, self.report["floor"]["seconds"])}

    # --- 2b. the write floor --------------------------------------------------------------------
    def measure_write_floor(self) -> None:
        """Writing as many rows as the tiers hold into empty tables of their shape, in key order: each tier
        copied (``INSERT INTO copy SELECT ... ORDER BY`` its primary key), then its secondary indexes added
        as the refresh adds them; best of ``repeat``. Also the disk the tiers take."""
        live, copies = self.app.schema.live(), self.app.schema.tiers(WRITE_FLOOR_SUFFIX)
        runs = []
        try:
            for _ in range(self.options.repeat):
                self.settle()
                runs.append(self._write_copies(live, copies))
            with self.dialect.engine.connect() as conn:
                counts = {name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                          for name, t in copies.by_name().items()}
                tiers_disk = self.server.disk_bytes(conn, [t.name for t in live])
        finally:
            self._drop(copies)
        best = min(runs, key=lambda r: r["seconds"])
        floor, full = self.report["floor"]["seconds"], self.report["full_refresh"]
        self.report["write_floor"] = {**best, "all": [r["seconds"] for r in runs], "rows": sum(counts.values()),
                                      "rows_per_tier": counts, "ratio_to_floor": _ratio(best["seconds"], floor)}
        full["ratio_to_floors"] = _ratio(full["seconds"], floor + best["seconds"])
        self.report["disk"] = {"tiers_bytes": tiers_disk}
        self.echo(f"write floor: {best['seconds']:.3f}s for {sum(counts.values()):,} rows (indexes "
                  f"{best['index_seconds']:.3f}s); full refresh = {full['ratio_to_floors']:.2f}x (read + write floor)")

    def _write_copies(self, live: Tiers, copies: Tiers) -> dict[str, float]:
        self._drop(copies)
        sa_dialect = self.dialect.engine.dialect
        with self.dialect.engine.connect() as conn:
            for copy in copies:
                conn.execute(text(ddl(CreateTable(copy), sa_dialect)))
            conn.commit()
            rows_seconds, _ = timed(lambda: _copy_rows(conn, live, copies))
            index_seconds, _ = timed(lambda: _add_indexes(conn, self.server, copies))
        return {"seconds": rows_seconds + index_seconds, "rows_seconds": rows_seconds, "index_seconds": index_seconds}

    def _drop(self, tables: Tiers) -> None:
        with self.dialect.engine.connect() as conn:
            for table in tables:
                conn.execute(text(self.dialect.drop_table_if_exists(table.name)))
            conn.commit()

    # --- 3. the hand-written method --------------------------------------------------------------
    def measure_baseline(self) -> None:
        engine = self.dialect.engine
        for index in self._raw_indexes(covering_index_columns(self.app.source)):
            index.drop(engine)  # the report's table had no such index: the server must not read through ours
        try:
            index_seconds = self.create_baseline_indexes()
            self.settle()
            steps = self._run_baseline()
        finally:
            # Back to our covering index alone: with (metric, month) there, MariaDB reads verify's
            # GROUP BY month, metric through that index and looks up every raw row (minutes at 5M).
            self.drop_baseline_indexes()
            self.app.init(source_indexes=True)
            self._analyze()
        total = sum(steps.values())
        verified = self.app.verify().ok
        self.report["baseline"] = {"seconds": total, "steps": steps, "index_seconds": index_seconds,
                                   "verifies": verified, "runs": 1,
                                   "ratio_ours_to_baseline": _ratio(self.report["full_refresh"]["seconds"], total)}
        self.echo(f"hand-written method: {total:.2f}s (its indexes took {index_seconds:.1f}s to build)")
        self.app.refresh(jobs=self.options.jobs)  # untimed: the tiers as summarizer builds them, for what follows

    def _raw_indexes(self, columns: list[str]) -> list[Index]:
        """The raw table's indexes on exactly ``columns``, whatever their names."""
        table = _raw_table(self.app.source)
        found = inspect(self.dialect.engine).get_indexes(table.name)
        return [Index(str(i["name"]), *(table.c[c] for c in columns)) for i in found if i["column_names"] == columns]

    def create_baseline_indexes(self) -> float:
        """The hand-written method's raw-table indexes, made anew; the seconds they took."""
        self.drop_baseline_indexes()
        engine = self.dialect.engine
        seconds, _ = timed(partial(_create_all, baseline_indexes(self.app.source), engine))
        self._analyze()
        return seconds

    def drop_baseline_indexes(self) -> None:
        for index in baseline_indexes(self.app.source):
            for existing in self._raw_indexes([c.name for c in index.columns]):
                existing.drop(self.dialect.engine)

    def _run_baseline(self) -> dict[str, float]:
        """Each statement on a plain connection (server defaults), committed on its own like a script's."""
        from sqlalchemy import create_engine
        engine = create_engine(self.options.url)
        steps: dict[str, float] = {}
        try:
            with engine.connect() as conn:
                params = {"all": self.app.schema.all_marketplace}
                for name, sql in baseline_statements(self.app):
                    seconds, _ = timed(partial(conn.execute, text(sql), params))
                    conn.commit()
                    steps[name] = seconds
        finally:
            engine.dispose()
        return steps

    # --- 4. one month --------------------------------------------------------------------------------
    def measure_month(self) -> None:
        month = self._last_month()
        results, work = [], []
        for _ in range(self.options.repeat):
            self.settle()
            seconds, run = timed(lambda: self.app.refresh(months=[month]))
            results.append(seconds)
            work.append(run.steps.get("months", 0.0))
        median = statistics.median(results)
        self.report["month"] = {"month": f"{month:%Y-%m}", "seconds": median, "all": results,
                                "share_of_full": _ratio(median, self.report["full_refresh"]["seconds"]),
                                "statements_seconds": statistics.median(work)}  # the month's own transaction
        self.echo(f"one month ({month:%Y-%m}): {median:.3f}s")

    def _last_month(self) -> dt.date:
        month = self.app.source.financials.c[self.app.source.month.name]
        with self.dialect.engine.connect() as conn:
            value = conn.execute(select(func.max(month))).scalar_one()
        return as_date(value).replace(day=1)  # a date column's last day, in its month

    # --- 5. dashboard questions ------------------------------------------------------------------------
    def measure_dashboard(self) -> None:
        reader = Reader(self.app)
        known = reader.known(reader.version())
        marketplace = "US" if "US" in known.marketplaces else sorted(known.marketplaces)[0]
        revenue = self.app.config.api.revenue_metrics[0]
        metric = revenue if revenue in known.metrics else sorted(known.metrics)[0]
        last = self._last_month()
        months = [add_months(last, -k) for k in range(11, -1, -1)]
        with self.dialect.engine.connect() as conn:
            brand_id, category_id = conn.execute(top_keys(self.app)).one()
        asked = questions(self.app, months, marketplace, metric, int(brand_id), int(category_id))
        self.create_baseline_indexes()  # the raw tables as the hand-written method's dashboards read them
        try:
            self.settle()
            self.report["dashboard"] = {q.name: self._question(reader, q) for q in asked}
        finally:
            self.drop_baseline_indexes()

    def _question(self, reader: Reader, question: Question) -> dict[str, Any]:
        query = replace(reader.query(question.endpoint, question.params), limit=None)  # whole, like the raw tables
        handler = reader.handlers[question.endpoint]
        answer = handler(query)  # and warm
        summary = [timed(lambda: handler(query))[0] for _ in range(self.options.summary_queries)]
        with self.dialect.engine.connect() as conn:
            raw_answer = conn.execute(question.raw).all()  # warm, like the summaries
            raw = [timed(lambda: conn.execute(question.raw).all())[0] for _ in range(self.options.raw_queries)]
        latencies = {**_latencies("summary", summary), **_latencies("raw", raw)}
        result: dict[str, Any] = {
            "params": question.params, "typical": question.typical, "rows": len(answer), "summary_n": len(summary),
            "raw_n": len(raw), "answers_match": same_answer(question, answer, raw_answer, self.dialect.EXACT_DECIMAL),
            **latencies, "ratio": _ratio(latencies["raw_p50_ms"], latencies["summary_p50_ms"])}
        self.echo(f"{question.name}: {len(answer)} rows; summaries p50 {result['summary_p50_ms']:.2f} ms, "
                  f"raw tables p50 {result['raw_p50_ms']:.0f} ms")
        return result

    # --- 6. memory -----------------------------------------------------------------------------------
    def measure_memory(self) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")}
        environ["SUMMARIZER_DATABASE_URL"] = self.options.url.render_as_string(hide_password=False)
        environ.update(source_environment(self.options.shape))
        command = [sys.executable, "-m", "summarizer", "--config", os.devnull, "refresh", "--quiet", "--json",
                   "--jobs", str(self.options.jobs)]
        self.settle()
        names = [t.name for suffix in ("", SHADOW_SUFFIX, OLD_SUFFIX) for t in self.app.schema.tiers(suffix)]
        with DiskSampler(self.options.url, self.server, names) as disk:
            seconds, (code, peak, output) = timed(lambda: run_measuring_rss(command, environ))
        if code != 0:
            raise RefreshFailed(f"`{' '.join(command[1:])}` exited {code}: {output[-2000:]}")
        self.report["memory"] = {"peak_rss_bytes": peak, "seconds": seconds, "command": " ".join(command[1:])}
        self.report.setdefault("disk", {}).update(peak_during_refresh_bytes=disk.peak, samples=disk.samples)
        self.echo(f"peak RSS of a refresh process: {peak / 10**6:.0f} MB; peak disk of the tiers during it "
                  f"(live and shadow): {disk.peak / 2**20:,.0f} MiB")

    def final_verify(self) -> None:
        report = self.app.verify()
        self.report["verify"] = {"ok": report.ok, "mismatches": [str(m) for m in report.mismatches][:20]}


def source_environment(shape: Shape) -> dict[str, str]:
    """The ``[source]`` settings that read the shape's raw table (none for the long financials)."""
    return {f"SUMMARIZER_SOURCE_{key.upper()}": value for key, value in WIDE_SETTINGS.items()} if shape.wide else {}


def _copy_rows(conn: Connection, live: Tiers, copies: Tiers) -> None:
    for tier, copy in zip(live, copies, strict=True):
        columns = [c.name for c in tier.columns]
        rows = select(*(tier.c[c] for c in columns)).order_by(*tier.primary_key.columns)
        conn.execute(insert(copy).from_select(columns, rows))
        conn.commit()


def _add_indexes(conn: Connection, server: BenchServer, tables: Tiers) -> None:
    for table in tables:
        for statement in server.add_indexes(table, sorted_indexes(table)):
            conn.execute(text(statement))
    conn.commit()


class DiskSampler:
    """The most disk ``tables`` took at once, sampled from a connection of its own while the block runs."""

    def __init__(self, url: URL, server: BenchServer, tables: list[str], interval: float = 0.25) -> None:
        self.url, self.server, self.tables, self.interval = url, server, tables, interval
        self.peak, self.samples = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="disk", daemon=True)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        from sqlalchemy import create_engine
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                while True:
                    self.peak = max(self.peak, self.server.disk_bytes(conn, self.tables))
                    self.samples += 1
                    if self._stop.wait(self.interval):
                        break
        finally:
            engine.dispose()


def _create_all(indexes: list[Index], engine: Engine) -> None:
    for index in indexes:
        index.create(engine)


def run_measuring_rss(command: list[str], environ: dict[str, str], interval: float = 0.01) -> tuple[int, int, str]:
    """Run ``command``: its exit code, its peak RSS in bytes, and its output.

    The peak is the child's VmHWM, read from /proc while it runs. Not ``wait4``'s ``ru_maxrss``:
    Linux carries the parent's RSS at fork over an exec into it, so it reports at least the parent's size.
    """
    peak = 0
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            peak = max(peak, _vm_hwm(status))
            time.sleep(interval)
        out.seek(0)
        output = out.read().decode(errors="replace")
    return process.returncode, peak, output


def _vm_hwm(status: Path) -> int:
    """VmHWM (peak RSS) of a running process in bytes; 0 once it is gone."""
    try:
        text_ = status.read_text()
    except OSError:
        return 0
    for line in text_.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return 0


def _latencies(prefix: str, seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {f"{prefix}_p50_ms": statistics.median(ms), f"{prefix}_p99_ms": percentile(ms, 99)}


def same_answer(question: Question, summary: list[dict[str, Any]], raw: Sequence[Any], exact: bool) -> bool:
    """The summaries' answer and the raw tables' answer hold the same numbers (REAL: to 1e-9 relative)."""
    measures = ("revenue", "cost") if question.endpoint == PROFITABILITY else ("value", "row_count")
    count = len(question.keys)
    want = {_key(r[:count]): tuple(Decimal(str(v)) for v in r[count:]) for r in raw}
    have = {_key([r[k] for k in question.keys]): tuple(Decimal(str(r[m])) for m in measures) for r in summary}
    if set(want) != set(have):
        return False
    tolerance = Decimal(0) if exact else Decimal("1e-9")
    return all(abs(a - b) <= tolerance * max(abs(a), Decimal(1))
               for key, values in want.items() for a, b in zip(values, have[key], strict=True))


def _key(values: Sequence[Any]) -> tuple[Any, ...]:
    month, *rest = values
    return (str(month)[:7], *(v if isinstance(v, str) else int(v) for v in rest))


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each performance target of docs/design.md: the measured figure, the limit, and whether it was met."""
    found = {
        "full_refresh_ratio_to_floor": (report["full_refresh"]["ratio_to_floor"], FULL_MAX_RATIO, "max"),
        "month_share_of_full": (report["month"]["share_of_full"], MONTH_MAX_SHARE, "max"),
        "peak_rss_bytes": (report["memory"]["peak_rss_bytes"], RSS_MAX_BYTES, "max"),
    }
    if "dashboard" in report:
        typical = [q for q in report["dashboard"].values() if q["typical"]]
        found["dashboard_typical_min_ratio"] = (min(q["ratio"] for q in typical), DASHBOARD_MIN_RATIO, "min")
        found["dashboard_typical_summary_p50_ms"] = (max(q["summary_p50_ms"] for q in typical), DASHBOARD_MAX_P50_MS,
                                                     "max")
    return {name: {"measured": value, "limit": limit, "met": value <= limit if kind == "max" else value >= limit}
            for name, (value, limit, kind) in found.items()}


def _shape_json(shape: Shape) -> dict[str, Any]:
    data = asdict(shape)
    data["first_month"] = shape.first_month.isoformat()
    data.update(asins=shape.asin_count, brands=shape.brand_count, categories=shape.category_count)
    return data


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# --- the printed table ------------------------------------------------------------------------------

YES = {True: "yes", False: "NO"}


def _row(measure: str, figure: str, ratio: str = "", target: str = "", met: bool | None = None) -> str:
    return f"{measure:<42}{figure:>11}  {ratio:<30}{target:<10}{'' if met is None else YES[met]}".rstrip()


def _measures(report: dict[str, Any]) -> list[str]:
    t, floor, full, month = (report[k] for k in ("targets", "floor", "full_refresh", "month"))
    one, base = report.get("full_refresh_one_job"), report.get("baseline")
    return [
        _row("measure", "seconds", "ratio", "target", None).ljust(95) + "met",
        _row(f"floor: {floor['sql'].split(' FROM ')[0].removeprefix('SELECT ')}, best of {len(floor['all'])}",
             f"{floor['seconds']:.3f}"),
        _row(f"full refresh, median of {len(full['all'])}, jobs {full['jobs']}", f"{full['seconds']:.2f}",
             f"{full['ratio_to_floor']:.2f}x floor", "<= 4x", t["full_refresh_ratio_to_floor"]["met"]),
        *([_row(f"full refresh, median of {len(one['all'])}, jobs 1", f"{one['seconds']:.2f}",
                f"{one['ratio_to_floor']:.2f}x floor")] if one else []),
        *([_row(f"write floor: {wf['rows']:,} tier rows in key order", f"{wf['seconds']:.3f}",
                f"full {full['ratio_to_floors']:.2f}x (read + write)")] if (wf := report.get("write_floor")) else []),
        *([_row("  of which the secondary indexes", f"{wf['index_seconds']:.3f}")] if wf else []),
        *([_row("hand-written method, once", f"{base['seconds']:.2f}", _versus(base["ratio_ours_to_baseline"]))]
          if base else []),
        _row(f"one month ({month['month']}), median of {len(month['all'])}", f"{month['seconds']:.3f}",
             f"1/{_ratio(1, month['share_of_full']):.1f} of the full refresh", "<= 1/20",
             t["month_share_of_full"]["met"]),
        *([_row("  of which the month's own transaction", f"{work:.3f}",
                f"1/{_ratio(full['seconds'], work):.1f} of the full refresh")]
          if (work := month.get("statements_seconds")) else []),
        _row("peak RSS of `summarizer refresh`", f"{report['memory']['peak_rss_bytes'] / 10**6:.0f} MB", "",
             "< 150 MB", t["peak_rss_bytes"]["met"]),
        *([_row("disk: tiers / peak during a refresh", f"{disk['tiers_bytes'] / 2**20:,.0f} MiB",
                f"peak {disk['peak_during_refresh_bytes'] / 2**20:,.0f} MiB (live + shadow)")]
          if (disk := report.get("disk", {})).keys() >= {"tiers_bytes", "peak_during_refresh_bytes"} else []),
    ]


def _questions(report: dict[str, Any]) -> list[str]:
    t = report["targets"]
    if "dashboard" not in report:
        return [f"dashboard questions: not asked of a wide raw table. verify: {YES[report['verify']['ok']]}"]
    lines = [f"{'dashboard question, 12 months':<30}{'rows':>7}{'summaries p50/p99 ms':>23}"
             f"{'raw tables p50/p99 ms':>24}{'ratio':>9}  same answer"]
    for name, q in report["dashboard"].items():
        lines.append(f"{name + (' *' if q['typical'] else ''):<30}{q['rows']:>7,}{q['summary_p50_ms']:>12.2f} /"
                     f"{q['summary_p99_ms']:>8.2f}{q['raw_p50_ms']:>14,.0f} /{q['raw_p99_ms']:>7,.0f}"
                     f"{q['ratio']:>8,.0f}x  {YES[q['answers_match']]}")
    lines.append(f"typical requests (*): ratio >= 100x: {YES[t['dashboard_typical_min_ratio']['met']]}; p50 < 5 ms: "
                 f"{YES[t['dashboard_typical_summary_p50_ms']['met']]}. verify: {YES[report['verify']['ok']]}")
    return lines


def render(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    db, rows, machine = report["database"], report["rows"], report["machine"]
    head = [f"{db['version']}, {db['cache_setting']} {db['cache_bytes'] / 2**20:,.0f} MiB; {machine['cpus']} CPUs, "
            f"{(machine['memory_bytes'] or 0) / 2**30:.0f} GiB",
            f"rows: raw {rows['raw']:,}; tier 1 {rows['asin']:,} ({report['compression']['raw_rows_per_tier1_row']:.1f}"
            f" raw rows each), tier 2 {rows['brand']:,}, tier 3 {rows['category']:,}"]
    return "\n".join([*head, "", *_measures(report), "", *_questions(report)])


def _versus(ours_to_theirs: float) -> str:
    if ours_to_theirs <= 1:
        return f"ours {_ratio(1, ours_to_theirs):.1f}x faster"
    return f"ours {ours_to_theirs:.1f}x slower"


def run_bench(options: BenchOptions, echo: Echo = print) -> dict[str, Any]:
    """Run the benchmark; the JSON-ready report (see the module docstring for what is in it)."""
    return Bench(options, echo).run()


def write_json(report: dict[str, Any], path: Path) -> None:
    import json
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
