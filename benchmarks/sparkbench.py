"""Spark on a standalone cluster against the database engine: per-core rates, and whole refreshes, on one machine.

For each size (field-shape raw rows, as ``benchmarks/bench.py --shape field`` makes them) and each database:

1. the **database engine**: the floor (``SELECT COUNT(*), SUM(value)``), the full refresh with 1 and 2 jobs and
   a refresh of the last month, each the best of ``repeat`` (the median is in the JSON too);
2. a **standalone cluster** of 1, then 2 workers of one core each (``tests/sparkcluster.py``: master and workers
   as separate JVMs), with this process as the driver, timing each part of Spark's work apart:

   * **session**: the driver's session up and every executor registered;
   * **JDBC read**: the raw table's five columns read over JDBC as the engine reads them (one partition per
     month, each served by the covering index) into Spark's ``noop`` sink: raw rows per second;
   * **Parquet + tiers**: the raw rows read from Parquet and the three tiers computed with the engine's own
     functions, range-partitioned and sorted as the engine writes them, into the ``noop`` sink: raw rows per
     second (the Parquet files are written once per size, from the first database, over JDBC);
   * **JDBC write**: the three tiers, computed and cached first, appended to empty tables of the tiers' shape
     through ``[spark] write_partitions`` connections, as the engine writes them: tier rows per second;
   * **refresh**: ``summarizer refresh`` through the library with ``engine = spark`` on the cluster, from JDBC and
     from Parquet (the session already up, so without the JVM start), full and one month, then ``verify``.

The timed parts of Spark's work are each the best of ``spark_repeat`` runs (the first in a session also pays
for the JIT compiling Spark's code), the refreshes one run each. Each rate is also given per core (cores =
workers). The report (printed, and ``--json-out``) carries the load
average before and after each part: the machine is shared, and its load says how far to trust a figure.

It replaces the source tables of the databases it is given and writes scratch tables there: point it at scratch
databases (``bench_spark``)::

    mysql -e 'CREATE DATABASE bench_spark'; createdb -U postgres bench_spark
    python -m benchmarks.sparkbench --mysql-url mysql+pymysql://root@127.0.0.1:3306/bench_spark \\
        --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_spark \\
        --rows 1000000 --rows 5000000 --workers 1 --workers 2 --json-out spark.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from summarizer.config import Config, load_config
from summarizer.ddl import ddl
from summarizer.engines import spark as engine
from summarizer.errors import RefreshFailed, SummarizerError, UsageError
from summarizer.facade import Summarizer
from summarizer.model import Tiers, source_from_config
from summarizer.months import as_date
from summarizer.runs import utcnow
from summarizer.synth import Shape, create_source_tables, generate
from tests import sparkcluster
from tests.servers import free_port

from .measure import FIELD_SHAPE, FLOOR_SQL, timed
from .servers import bench_server

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

WORKER_MEMORY = "2g"        # what each one-core worker offers
EXECUTOR_MEMORY = "1536m"   # what each executor takes of it
SCRATCH = "__sparkbench"    # suffix of the tables the JDBC write is timed into
SETTLE_SECONDS = 60.0
Echo = Callable[[str], None]


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextmanager
def _measured(report: dict[str, Any], name: str, echo: Echo, what: str = "") -> Iterator[dict[str, Any]]:
    """Time the block into ``report[name]`` (seconds, load before and after); the block may add figures."""
    entry: dict[str, Any] = {"load_before": _load()}
    start = time.perf_counter()
    yield entry
    entry["seconds"] = time.perf_counter() - start
    _report(report, name, entry, echo, what)


def best_of(report: dict[str, Any], name: str, echo: Echo, repeat: int, work: Callable[[], object],
            prepare: Callable[[], object] | None = None, what: str = "", **figures: Any) -> None:
    """``work`` run ``repeat`` times (``prepare`` before each, untimed); the best into ``report[name]``."""
    entry: dict[str, Any] = {"load_before": _load(), **figures, "all": []}
    for _ in range(repeat):
        if prepare is not None:
            prepare()
        entry["all"].append(timed(work)[0])
    entry["seconds"] = min(entry["all"])
    _report(report, name, entry, echo, what)


def _report(report: dict[str, Any], name: str, entry: dict[str, Any], echo: Echo, what: str) -> None:
    entry["load_after"] = _load()
    report[name] = entry
    every = f" (of {', '.join(f'{s:.1f}' for s in entry['all'])})" if len(entry.get("all", ())) > 1 else ""
    echo(f"  {name}{' ' + what if what else ''}: {entry['seconds']:.2f}s{every} "
         f"{_rates(entry)}(load {entry['load_before'][0]} -> {entry['load_after'][0]})")


def _rates(entry: dict[str, Any]) -> str:
    if "rows" not in entry:
        return ""
    rate = entry["rows"] / entry["seconds"]
    entry["rows_per_second"] = rate
    if "cores" in entry:
        entry["rows_per_second_per_core"] = rate / entry["cores"]
    per_core = f", {entry['rows_per_second_per_core']:,.0f}/s/core" if "cores" in entry else ""
    return f"= {rate:,.0f} rows/s{per_core} "


# --- one database: the data, the floor, the database engine ------------------------------------------------


class Database:
    """A scratch database the benchmark owns: its source tables, its tiers, and a Summarizer on it."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.app = self.summarizer()
        self.dialect = self.app.dialect
        self.name = self.dialect.name

    def config(self, **settings: str) -> Config:
        environ = {"SUMMARIZER_DATABASE_URL": self.url.render_as_string(hide_password=False),
                   **{f"SUMMARIZER_{k.upper()}": v for k, v in settings.items()}}
        return load_config(os.devnull, environ)

    def summarizer(self, **settings: str) -> Summarizer:
        return Summarizer(self.config(**settings))

    def raw_rows(self) -> int:
        try:
            with self.dialect.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(self.app.source.financials)).scalar_one())
        except DBAPIError:  # no such table yet
            return 0

    def prepare(self, shape: Shape, replace: bool, echo: Echo) -> dict[str, Any]:
        """The source tables hold ``shape`` (generated unless they already hold that many rows), indexed."""
        held = self.raw_rows()
        report: dict[str, Any] = {"generated": held != shape.rows}
        if held != shape.rows:
            if held and not replace:
                raise UsageError(f"{self.url.database}: financials holds {held:,} rows, not {shape.rows:,}: "
                                 "pass --replace to generate anew")
            echo(f"  {self.name}: generating {shape.rows:,} raw rows")
            with self.dialect.engine.connect() as conn:
                create_source_tables(conn, drop=True)
                report["generate_seconds"], report["counts"] = timed(lambda: generate(conn, shape))
        self.app.init(source_indexes=True)
        sql, autocommit = bench_server(self.dialect).analyze_sql(self.app.source.financials.name)
        with self.dialect.engine.connect() as conn:
            (conn.execution_options(isolation_level="AUTOCOMMIT") if autocommit else conn).execute(text(sql))
            conn.commit()
        return report

    def settle(self) -> None:
        with self.dialect.engine.connect() as conn:
            bench_server(self.dialect).settle(conn, SETTLE_SECONDS)
            conn.commit()

    def floor(self, repeat: int) -> dict[str, Any]:
        s, q = self.app.source, self.dialect.quote
        sql = FLOOR_SQL.format(value=q(s.value.name), financials=q(s.financials.name))
        self.settle()
        with self.dialect.engine.connect() as conn:
            conn.execute(text(sql)).one()
            runs = [timed(lambda: conn.execute(text(sql)).one())[0] for _ in range(repeat)]
        return {"seconds": min(runs), "all": runs, "load": _load()}

    def database_refresh(self, repeat: int, **request: Any) -> dict[str, Any]:
        """``app.refresh(**request)`` ``repeat`` times, after the server's background writes each time: the best
        (the run the other users of a shared machine disturbed least, as for Spark's parts) and the median."""
        results = []
        for _ in range(repeat):
            self.settle()
            seconds, run = timed(lambda: self.app.refresh(**request))
            results.append(seconds)
        return {"seconds": min(results), "median": statistics.median(results), "all": results, "rows": run.rows,
                "steps": run.steps, "load": _load()}

    def last_month(self) -> dt.date:
        month = self.app.source.financials.c[self.app.source.month.name]
        with self.dialect.engine.connect() as conn:
            return as_date(conn.execute(select(func.max(month))).scalar_one())


# --- Spark on the cluster ----------------------------------------------------------------------------------


def start_session(cluster: sparkcluster.Cluster, workers: int) -> SparkSession:
    """The driver's session on ``cluster``, returned once ``workers`` executors have registered."""
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(cluster.master_url).appName("summarizer-sparkbench")
             .config("spark.jars", ",".join(sparkcluster.JARS)).config("spark.executor.memory", EXECUTOR_MEMORY)
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.port", str(free_port())).config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    deadline = time.monotonic() + sparkcluster.START_TIMEOUT
    while len(_executors(spark)) < workers:
        if time.monotonic() > deadline:
            raise RefreshFailed(f"only {len(_executors(spark))} of {workers} executors registered within "
                                f"{sparkcluster.START_TIMEOUT:.0f}s")
        time.sleep(0.2)
    return spark


def _executors(spark: SparkSession) -> list[str]:
    context = spark.sparkContext
    url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/executors"
    with urllib.request.urlopen(url, timeout=10) as response:
        return [e["id"] for e in json.load(response) if e["id"] != "driver" and e["isActive"]]


@dataclass
class Job:
    """Spark's work for one database, with the engine's own settings and DataFrame functions."""

    spark: SparkSession
    database: Database

    @property
    def config(self) -> Config:
        return self.database.app.config

    def rules(self) -> engine.Rules:
        summary = self.config.summary
        return engine.Rules(summary.unassigned_id, summary.all_marketplace,
                            min(engine.MAX_PRECISION, summary.value_precision), summary.value_scale, utcnow())

    def read_jdbc(self, table: str, months: bool = False) -> DataFrame:
        """A source table over JDBC, the raw one with one partition per month (the engine's read)."""
        jdbc = engine.jdbc_for(self.database.dialect.engine.url)
        properties = {**jdbc.properties, "fetchsize": str(self.config.spark.fetch_size)}
        quoted = self.database.dialect.quote(table)
        if not months:
            return self.spark.read.jdbc(jdbc.url, quoted, properties=properties)
        rollup, dialect = self.database.app.rollup, self.database.dialect.engine.dialect
        with self.database.dialect.engine.connect() as conn:
            found = list(conn.execute(rollup.source_months()).scalars())
        predicates = [str(rollup.source_month_predicate(m).compile(dialect=dialect,
                                                                   compile_kwargs={"literal_binds": True}))
                      for m in found]
        return self.spark.read.jdbc(jdbc.url, quoted, predicates=predicates, properties=properties)

    def export_parquet(self, root: Path) -> None:
        """The source tables as Parquet in the layout ``[spark] source = parquet`` reads."""
        s = self.config.source
        columns = [s.asin_column, s.marketplace_column, s.month_column, s.metric_column, s.value_column]
        raw = self.read_jdbc(s.financials_table, months=True).select(*columns)
        raw.write.mode("overwrite").partitionBy(s.month_column).parquet(str(root / s.financials_table))
        for table in (s.products_table, s.brands_table, s.categories_table):
            self.read_jdbc(table).write.mode("overwrite").parquet(str(root / table))

    def tiers_from_parquet(self, root: Path) -> tuple[DataFrame, DataFrame, DataFrame]:
        s, rules = self.config.source, self.rules()
        read = self.spark.read.parquet
        raw = engine.raw_rows(read(str(root / s.financials_table)), source_from_config(self.config), None)
        t1 = engine.tier1(raw, engine.product_rows(read(str(root / s.products_table)), self.config),
                          engine.brand_rows(read(str(root / s.brands_table)), self.config),
                          engine.category_rows(read(str(root / s.categories_table)), self.config), rules)
        t2 = engine.tier2(t1, rules)
        return t1, t2, engine.tier3(t2, rules)

    def ordered(self, frames: Sequence[DataFrame], tables: Tiers) -> list[DataFrame]:
        """Each tier as the engine writes it: range-partitioned by its primary key and sorted within each part."""
        partitions = self.config.spark.write_partitions
        result = []
        for frame, table in zip(frames, tables, strict=True):
            keys = [c.name for c in table.primary_key.columns]
            result.append(frame.repartitionByRange(partitions, *keys).sortWithinPartitions(*keys))
        return result

    def write_jdbc(self, frames: Sequence[DataFrame], tables: Tiers) -> None:
        jdbc = engine.jdbc_for(self.database.dialect.engine.url)
        properties = {**jdbc.properties, "batchsize": str(engine.WRITE_BATCH)}
        for frame, table in zip(frames, tables, strict=True):
            frame.write.jdbc(jdbc.url, self.database.dialect.quote(table.name), mode="append", properties=properties)


def scratch_tiers(database: Database) -> Tiers:
    """Empty tables of the tiers' shape (no secondary indexes, as the engine's shadow tables are filled)."""
    tiers, dialect = database.app.schema.tiers(SCRATCH), database.dialect
    statements = [*(dialect.drop_table_if_exists(t.name) for t in tiers),
                  *(ddl(CreateTable(t), dialect.engine.dialect) for t in tiers)]
    with dialect.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    return tiers


def drop_scratch(database: Database) -> None:
    dialect = database.dialect
    with dialect.engine.begin() as conn:
        for table in database.app.schema.tiers(SCRATCH):
            conn.execute(text(dialect.drop_table_if_exists(table.name)))


# --- one size ---------------------------------------------------------------------------------------------


@dataclass
class Options:
    databases: list[URL]
    sizes: list[int]
    workers: list[int]
    repeat: int
    spark_repeat: int
    replace: bool
    parquet_dir: Path
    keep_parquet: bool
    json_out: Path | None


def bench_size(rows: int, options: Options, echo: Echo) -> dict[str, Any]:
    shape = Shape(rows=rows, **FIELD_SHAPE)  # type: ignore[arg-type]
    report: dict[str, Any] = {"rows": rows, "shape": "field", "databases": {}, "spark": {}}
    databases = [Database(url) for url in options.databases]
    try:
        for db in databases:
            report["databases"][db.name] = database_engine(db, shape, options, echo)
        root = options.parquet_dir / f"rows-{rows}"
        for workers in options.workers:
            echo(f"{rows:,} raw rows, spark on {workers} worker(s) of 1 core")
            with sparkcluster.standalone(workers=workers, cores=1, memory=WORKER_MEMORY) as cluster:
                report["spark"][str(workers)] = on_cluster(cluster, workers, databases, root, options.spark_repeat,
                                                           echo)
        if not options.keep_parquet:
            shutil.rmtree(root, ignore_errors=True)
    finally:
        for db in databases:
            drop_scratch(db)
            db.app.close()
    return report


def database_engine(db: Database, shape: Shape, options: Options, echo: Echo) -> dict[str, Any]:
    echo(f"{shape.rows:,} raw rows, {db.name}")
    result = {"prepare": db.prepare(shape, options.replace, echo), "floor": db.floor(options.repeat)}
    echo(f"  floor: {result['floor']['seconds']:.3f}s")
    for jobs in (1, 2):
        result[f"refresh_jobs_{jobs}"] = db.database_refresh(options.repeat, jobs=jobs)
        echo(f"  database engine, jobs {jobs}: {result[f'refresh_jobs_{jobs}']['seconds']:.2f}s")
    result["refresh_month"] = db.database_refresh(options.repeat, months=[db.last_month()])
    echo(f"  database engine, one month: {result['refresh_month']['seconds']:.2f}s")
    result["tier_rows"] = result["refresh_jobs_1"]["rows"]
    return result


def on_cluster(cluster: sparkcluster.Cluster, workers: int, databases: list[Database], root: Path, repeat: int,
               echo: Echo) -> dict[str, Any]:
    report: dict[str, Any] = {"workers": workers, "cores": workers}
    with _measured(report, "session", echo):
        spark = start_session(cluster, workers)
    try:
        engine.session(databases[0].config(spark_master=cluster.master_url))  # the engine's runtime settings
        report["shuffle_partitions"] = int(spark.conf.get("spark.sql.shuffle.partitions") or 0)
        first = Job(spark, databases[0])
        if not (root / first.config.source.financials_table).is_dir():
            with _measured(report, "parquet_export", echo, f"from {databases[0].name}"):
                first.export_parquet(root)
        best_of(report, "parquet_tiers", echo, repeat, lambda: compute_to_noop(first, root),
                rows=databases[0].raw_rows(), cores=workers)
        for db in databases:
            report[db.name] = per_database(Job(spark, db), workers, root, repeat, echo)
    finally:
        spark.stop()
    return report


def compute_to_noop(job: Job, root: Path) -> None:
    """The tiers from Parquet, each ordered as the engine writes it, into the noop sink (tiers 1 and 2 cached, as
    the engine does: each is read again for the next tier)."""
    t1, t2, t3 = job.tiers_from_parquet(root)
    t1, t2 = t1.persist(), t2.persist()
    try:
        for frame in job.ordered([t1, t2, t3], job.database.app.schema.live()):
            frame.write.format("noop").mode("overwrite").save()
    finally:
        t1.unpersist()
        t2.unpersist()


def per_database(job: Job, workers: int, root: Path, repeat: int, echo: Echo) -> dict[str, Any]:
    db, report = job.database, dict[str, Any]()
    echo(f"  {db.name}:")
    raw = engine.raw_rows(job.read_jdbc(db.app.source.financials.name, months=True), db.app.source, None)
    best_of(report, "jdbc_read", echo, repeat, lambda: raw.write.format("noop").mode("overwrite").save(),
            rows=db.raw_rows(), cores=workers)
    write_rate(job, workers, root, repeat, report, echo)
    for source in ("jdbc", "parquet"):
        refresh(job, source, root, report, echo)
    return report


def write_rate(job: Job, workers: int, root: Path, repeat: int, report: dict[str, Any], echo: Echo) -> None:
    """The tiers computed and cached first, then only their JDBC append timed, into empty tables each time."""
    tables = scratch_tiers(job.database)
    frames = [f.persist() for f in job.ordered(job.tiers_from_parquet(root), tables)]
    try:
        rows = sum(f.count() for f in frames)
        connections = job.config.spark.write_partitions
        best_of(report, "jdbc_write", echo, repeat, lambda: job.write_jdbc(frames, tables),
                prepare=lambda: scratch_tiers(job.database), what=f"({connections} connections)", rows=rows,
                cores=workers, connections=connections)
        with job.database.dialect.engine.connect() as conn:
            written = sum(int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables)
        assert written == rows, f"wrote {written} rows of {rows}"
    finally:
        for frame in frames:
            frame.unpersist()
        drop_scratch(job.database)


def refresh(job: Job, source: str, root: Path, report: dict[str, Any], echo: Echo) -> None:
    """``summarizer refresh`` with the spark engine on the cluster: full, then the last month; then verify."""
    settings = {"refresh_engine": "spark", "spark_master": str(job.spark.sparkContext.master), "spark_source": source,
                "spark_parquet_path": str(root)}
    app = job.database.summarizer(**settings)
    try:
        for name, months in ((f"refresh_{source}", ()), (f"refresh_{source}_month", (job.database.last_month(),))):
            job.database.settle()
            with _measured(report, name, echo) as entry:
                run = app.refresh(months=months)
                entry.update(steps=run.steps, tier_rows=run.rows)
        report[f"refresh_{source}"]["verified"] = app.verify().ok
    finally:
        app.close()


# --- the printed table ------------------------------------------------------------------------------------


def render(sizes: list[dict[str, Any]]) -> str:
    lines = []
    for size in sizes:
        lines.append(f"\n{size['rows']:,} raw rows (field shape)")
        for name, db in size["databases"].items():
            tiers = db["tier_rows"]
            lines.append(f"  {name}: floor {db['floor']['seconds']:.2f}s; database engine jobs 1 "
                         f"{db['refresh_jobs_1']['seconds']:.2f}s, jobs 2 {db['refresh_jobs_2']['seconds']:.2f}s, "
                         f"one month {db['refresh_month']['seconds']:.2f}s; tier rows {sum(tiers.values()):,}")
        for workers, spark in size["spark"].items():
            lines.append(f"  spark, {workers} worker(s): session {spark['session']['seconds']:.1f}s; Parquet + tiers "
                         f"{spark['parquet_tiers']['rows_per_second_per_core']:,.0f} raw rows/s/core")
            for name in size["databases"]:
                lines.extend(_spark_lines(name, spark[name]))
    return "\n".join(lines)


def _spark_lines(name: str, part: dict[str, Any]) -> list[str]:
    verified = part["refresh_jdbc"]["verified"] and part["refresh_parquet"]["verified"]
    return [f"    {name}: JDBC read {part['jdbc_read']['rows_per_second_per_core']:,.0f} raw rows/s/core; JDBC write "
            f"{part['jdbc_write']['rows_per_second']:,.0f} tier rows/s",
            f"      refresh from JDBC {part['refresh_jdbc']['seconds']:.1f}s (one month "
            f"{part['refresh_jdbc_month']['seconds']:.1f}s), from Parquet {part['refresh_parquet']['seconds']:.1f}s "
            f"(one month {part['refresh_parquet_month']['seconds']:.1f}s); verified: {verified}"]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mysql-url", help="SQLAlchemy URL of a scratch MariaDB/MySQL database")
    parser.add_argument("--postgres-url", help="SQLAlchemy URL of a scratch PostgreSQL database")
    parser.add_argument("--rows", type=int, action="append", help="raw rows (repeatable; default 1M and 5M)")
    parser.add_argument("--workers", type=int, action="append", help="workers of one core (repeatable; default 1, 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floor and each database-engine refresh")
    parser.add_argument("--spark-repeat", type=int, default=2, help="runs of each timed part of Spark's work (best)")
    parser.add_argument("--replace", action="store_true", help="replace source tables that hold another size")
    parser.add_argument("--parquet-dir", type=Path, default=None, help="where the Parquet copies go (default: temp)")
    parser.add_argument("--keep-parquet", action="store_true", help="leave the Parquet copies there afterwards")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    urls = [make_url(u) for u in (args.mysql_url, args.postgres_url) if u]
    if not urls:
        parser.error("give --mysql-url, --postgres-url or both")
    parquet = args.parquet_dir or Path(tempfile.mkdtemp(prefix="sparkbench-"))
    return Options(urls, args.rows or [1_000_000, 5_000_000], args.workers or [1, 2], args.repeat, args.spark_repeat,
                   args.replace,
                   parquet, args.keep_parquet, args.json_out)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    reason = sparkcluster.missing()
    if reason:
        print(f"Error: {reason}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_at_start": _load(), "sizes": []}
    try:
        for rows in options.sizes:
            report["sizes"].append(bench_size(rows, options, _echo))
            _write(report, options.json_out)  # each size as soon as it is done
    except SummarizerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    report["load_at_end"] = _load()
    _write(report, options.json_out)
    print(render(report["sizes"]))
    return 0


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _write(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
