"""The spark engine: the three tiers computed on Apache Spark and written into the serving database.

Spark only computes. The summarizer process keeps the rest, exactly as with the database engine: it
takes the run lock, records the run, creates the tables Spark writes into, and afterwards indexes,
counts and swaps them in (full refresh) or replaces each month of the live tiers in one transaction
(incremental refresh, from staging tables ``<tier>__stage``). Spark fails, if it fails, before any
of that touches a live tier; its message (first line) becomes the run's error.

Sources (``[spark] source``):

* ``jdbc``: the raw table read over JDBC with one partition per month (one ``WHERE month = ...``
  predicate each, served by the covering index; a date column's month is its range, and the database
  computes each row's month, as the database engine does), ``products``, ``brands`` and ``categories``
  read whole;
* ``parquet``: ``<parquet_path>/<financials_table>/<month_column>=YYYY-MM-01/*.parquet`` and
  ``<parquet_path>/<products_table>/``, ``<parquet_path>/<brands_table>/``,
  ``<parquet_path>/<categories_table>/``, same column names (a date column's month: Spark's, in its
  session time zone).

The DataFrame code mirrors rollup.py's SQL, which is the specification: the raw rows grouped per key and
metric (:func:`raw_groups`: a wide table's measure columns summed and counted, then unpivoted), then
joined to products, brands and categories (unassigned id for a missing product, a NULL
brand, a missing brand, a NULL category or one with no categories row; category unassigned whenever
the brand is); tier 2 from tier 1 per
marketplace plus the ``ALL`` rows from those; tier 3 from tier 2's ``ALL`` rows. Sums stay DECIMAL
(at most 38 digits in Spark; ANSI mode turns an overflow into an error, never a NULL) and
``refreshed_at`` is the run's start time.

pyspark is optional (``summarizer-tiers[spark]``): it is imported only when the engine runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import Table, column, table
from sqlalchemy.engine import URL
from sqlalchemy.schema import CreateTable

from ..config import Config
from ..ddl import check_source, ddl
from ..errors import ConfigError, RefreshFailed
from ..model import STAGE_SUFFIX, Source, Tiers
from ..plan import RefreshPlan, choose_plan, index_advice
from ..rawmonths import read_months
from ..rollup import TIER1_COLUMNS, TIER2_COLUMNS, TIER3_COLUMNS
from ..runs import CHANGED, SINCE, Mode
from .base import Context, MonthWork

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

SPARK = "spark"
EXTRA = "summarizer-tiers[spark]"
MAX_PRECISION = 38  # Spark's widest DECIMAL
# What Spark's launcher accepts (anything else only makes it exit before pyspark can say why), and Connect.
MASTER_PREFIXES = ("local", "spark://", "yarn", "k8s://", "sc://")
WRITE_BATCH = 10_000
RAW_ALIAS, RAW_MONTH = "summarizer_raw", "summarizer_month"  # a date column's raw rows as read, with their month
PROBE_SECONDS = 5.0  # how long a standalone master has to accept a connection before the run fails
COLUMNS = {"asin": TIER1_COLUMNS, "brand": TIER2_COLUMNS, "category": TIER3_COLUMNS}


# --- the JDBC side ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavour:
    """How Spark reaches one kind of serving database over JDBC."""

    scheme: str
    port: int
    driver: str
    options: str


# The MariaDB driver under a jdbc:mysql: URL: Spark picks its MySQL dialect (backtick quoting) only for
# that scheme; Connector/J 3.x accepts it only with permitMysqlScheme (2.x accepts it anyway).
FLAVOURS = {
    "mysql": Flavour("jdbc:mysql", 3306, "org.mariadb.jdbc.Driver", "permitMysqlScheme&rewriteBatchedStatements=true"),
    "postgresql": Flavour("jdbc:postgresql", 5432, "org.postgresql.Driver", "reWriteBatchedInserts=true"),
}


@dataclass(frozen=True)
class Jdbc:
    """A JDBC URL without credentials, and the properties that carry them (never logged)."""

    url: str
    properties: dict[str, str]

    def describe(self) -> str:
        return self.url.split("?", 1)[0]


def jdbc_for(url: URL) -> Jdbc:
    """The JDBC form of a SQLAlchemy URL (mysql/mariadb or postgresql)."""
    backend = "mysql" if url.get_backend_name() in ("mysql", "mariadb") else url.get_backend_name()
    flavour = FLAVOURS.get(backend)
    if flavour is None:
        raise ConfigError(f"the spark engine writes into MySQL/MariaDB or PostgreSQL, not {backend}",
                          section="database", key="url")
    address = f"{url.host or 'localhost'}:{url.port or flavour.port}"
    properties = {"driver": flavour.driver}
    properties.update({k: v for k, v in (("user", url.username), ("password", url.password)) if v})
    return Jdbc(f"{flavour.scheme}://{address}/{url.database or ''}?{flavour.options}", properties)


# --- the engine -------------------------------------------------------------------------------------


class SparkEngine:
    """The tiers computed on Spark and written over JDBC into tables the refresh made."""

    VALUE_PRECISION_CAP = MAX_PRECISION
    REPORTS_DUPLICATES_AS_FAILURE = True  # Spark's JDBC writes report a duplicate key as a Spark error

    def __init__(self, context: Context) -> None:
        self.context = context
        self.config = context.config

    def preflight(self, mode: Mode) -> None:
        """Everything that can be wrong before Spark starts; raises before any run is recorded."""
        config = self.config
        jdbc_for(self.context.dialect.engine.url)
        if not config.spark.master.startswith(MASTER_PREFIXES):
            raise ConfigError(f"{config.spark.master!r} is not a Spark master URL: expected local[*], "
                              "spark://host:7077, yarn, k8s://... or a Spark Connect sc://host:15002",
                              section="spark", key="master")
        _require_pyspark()
        remote = config.spark.master.startswith("sc://")
        if not remote and not shutil.which("java"):
            raise ConfigError("the spark engine needs Java 17 or later on the PATH (Debian: default-jre-headless)")
        if not remote:
            _check_jars(config)
        if config.spark.source == "jdbc":  # checks the source the config names (maybe not this database)
            check_source(self.context.dialect, self.context.source)
            return
        if mode in (SINCE, CHANGED):
            raise ConfigError("--since and --changed read the raw table's updated_at in the database; with "
                              "source = parquet use --months", source=config.path, section="spark", key="source")
        _check_parquet(config)

    def reads_source_here(self) -> bool:
        return bool(self.config.spark.source == "jdbc")

    def plan(self) -> RefreshPlan:
        """What the run record and the log say about how the tiers are computed."""
        config = self.config
        where = f"spark ({config.spark.master.split(';', 1)[0]})"  # a Connect URL's ;token=... stays out
        if config.spark.source == "parquet":
            return RefreshPlan(True, f"{where} reads Parquet under {config.spark.parquet_path}", engine=SPARK)
        database = choose_plan(self.context.dialect, self.context.source)
        read = "one JDBC partition per month" if database.chunked else \
            "one JDBC partition per month, each scanning the whole raw table (no covering index. " \
            f"{index_advice(self.context.dialect, self.context.source)})"
        return RefreshPlan(database.chunked, f"{where} reads the raw table in {read}", engine=SPARK)

    def fill_shadows(self, shadow: Tiers, plan: RefreshPlan, stamp: dt.datetime, check: Callable[[], None],
                     jobs: int) -> dict[str, int] | None:
        """A full refresh's compute step: every month of every tier, written into the (empty) shadow tables."""
        job = TierJob(self.context)
        months = None if self.config.spark.source == "parquet" else job.source_months()
        job.write_tiers(shadow, stamp, months, check)
        return None  # JDBC writes report no row counts: the refresh counts the tiers

    @contextmanager
    def months(self, months: Sequence[dt.date], stamp: dt.datetime,
               check: Callable[[], None]) -> Iterator[MonthWork]:
        """Spark computes ``months`` into staging tables; yields the per-month step that moves one month
        into the live tiers (one transaction: delete, insert from staging). Staging is dropped afterwards."""
        context, steps = self.context, self.context.steps
        live, stage = context.schema.live(), context.schema.tiers(STAGE_SUFFIX)
        statements = context.rollup.staged_month_statements(list(live), list(stage))
        data_version = context.schema.data_version()

        def move(month: dt.date) -> Counter[str]:
            return steps.replace_month(month, statements, data_version)
        if not months:
            yield move
            return
        drops = [context.dialect.drop_table_if_exists(t.name) for t in stage]
        creates = [ddl(CreateTable(t), context.dialect.engine.dialect) for t in stage]
        steps.execute("staging tables", [*drops, *creates])
        try:
            TierJob(context).write_tiers(stage, stamp, list(months), check)
            yield move
        finally:
            try:
                steps.execute("drop staging tables", drops)
            except Exception as exc:  # the next run drops them; do not hide the error that got us here
                log.warning("could not drop the staging tables: %s", exc)


# --- checks before the run starts -------------------------------------------------------------------


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError(f"the spark engine needs pyspark, which is not installed: pip install '{EXTRA}'") from None


def _check_jars(config: Config) -> None:
    missing = [jar for jar in config.spark.jars if "://" not in jar and not Path(jar).is_file()]
    if missing:
        raise ConfigError(f"no such file: {', '.join(missing)} (Debian: apt-get install libmariadb-java "
                          "libpostgresql-jdbc-java)", source=config.path, section="spark", key="jars")


def _check_parquet(config: Config) -> None:
    root, s = config.spark.parquet_path, config.source
    if not root:
        raise ConfigError("source = parquet needs parquet_path", source=config.path, section="spark",
                          key="parquet_path")
    if "://" in root:
        return  # a remote file system (s3a://, hdfs://): Spark itself says what is missing
    tables = (s.financials_table, s.products_table, s.brands_table, s.categories_table)
    missing = [name for name in tables if not (Path(root) / name).is_dir()]
    if missing:
        raise ConfigError(f"{root} holds no folder {', '.join(missing)} (one per source table)",
                          source=config.path, section="spark", key="parquet_path")


# --- the job ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """The values the tiers' semantics depend on."""

    unassigned: int
    all_marketplace: str
    precision: int
    scale: int
    stamp: dt.datetime
    metrics: tuple[str, ...] = ()  # a wide raw table's metrics, one per measure column m0, m1, ...; empty: long


class TierJob:
    """One Spark computation of the three tiers, from the configured source into three tables."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.config = context.config
        self.jdbc = jdbc_for(context.dialect.engine.url)
        self.quote = context.dialect.quote

    def source_months(self) -> list[dt.date]:
        context = self.context
        return context.steps.read("months", lambda conn: read_months(conn, context.dialect, context.rollup))

    def write_tiers(self, targets: Tiers, stamp: dt.datetime, months: Sequence[dt.date] | None,
                    check: Callable[[], None]) -> None:
        """Compute the tiers of ``months`` (None: all of them) and append them to ``targets``."""
        summary = self.config.summary
        rules = Rules(summary.unassigned_id, summary.all_marketplace, min(MAX_PRECISION, summary.value_precision),
                      summary.value_scale, stamp, tuple(m.metric for m in self.context.source.measures))
        timed = self.context.steps.timed
        with spark_errors():
            with timed("spark session"):
                spark = session(self.config)
            raw, products, brands, categories = self._sources(spark, months)
            # tier 1 is read once: written, and the source of tier 2
            t1 = tier1(raw, products, brands, categories, rules).persist()
            t2 = tier2(t1, rules).persist()
            try:
                for name, frame in (("asin", t1), ("brand", t2), ("category", tier3(t2, rules))):
                    check()
                    with timed(f"spark {name}"):
                        self._write(frame, targets.by_name()[name])
            finally:
                t1.unpersist()
                t2.unpersist()

    # --- reading ----------------------------------------------------------------------------------
    def _sources(self, spark: SparkSession,
                 months: Sequence[dt.date] | None) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
        s = self.config.source
        if self.config.spark.source == "parquet":
            root = self.config.spark.parquet_path.rstrip("/")
            raw = spark.read.parquet(f"{root}/{s.financials_table}")
            products = spark.read.parquet(f"{root}/{s.products_table}")
            brands = spark.read.parquet(f"{root}/{s.brands_table}")
            categories = spark.read.parquet(f"{root}/{s.categories_table}")
        else:
            rollup, source = self.context.rollup, self.context.source
            everything = months if months is not None else self.source_months()
            if source.dated:  # the database gives each row's month, as its own refresh would
                within = table(RAW_ALIAS, column(source.month.name))
                predicates = [self._literal_sql(rollup.source_month_predicate(m, within)) for m in everything]
                query = self._literal_sql(rollup.raw_rows_select(RAW_MONTH))
                raw = self._jdbc(spark, f"({query}) {self.quote(RAW_ALIAS)}", predicates, quoted=True)
            else:
                predicates = [self._literal_sql(rollup.source_month_predicate(m)) for m in everything]
                raw = self._jdbc(spark, s.financials_table, predicates)
            products, brands = self._jdbc(spark, s.products_table), self._jdbc(spark, s.brands_table)
            categories = self._jdbc(spark, s.categories_table)
        source_from_database = self.config.spark.source == "jdbc"
        return (raw_rows(raw, self.context.source, months, month_computed=source_from_database),
                product_rows(products, self.config), brand_rows(brands, self.config),
                category_rows(categories, self.config))

    def _literal_sql(self, clause: Any) -> str:
        dialect = self.context.dialect.engine.dialect
        return str(clause.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    def _jdbc(self, spark: SparkSession, table: str, predicates: list[str] | None = None,
              *, quoted: bool = False) -> DataFrame:
        """A table (or, ``quoted``, a parenthesised query with its alias) read over JDBC."""
        properties = {**self.jdbc.properties, "fetchsize": str(self.config.spark.fetch_size)}
        name = table if quoted else self.quote(table)
        if predicates is None:
            return spark.read.jdbc(self.jdbc.url, name, properties=properties)
        return spark.read.jdbc(self.jdbc.url, name, predicates=predicates, properties=properties)

    # --- writing ----------------------------------------------------------------------------------
    def _write(self, frame: DataFrame, table: Table) -> None:
        """Append ``frame`` to ``table``, each writer in primary-key order (InnoDB appends, no page splits)."""
        keys = [c.name for c in table.primary_key.columns]
        partitions = self.config.spark.write_partitions
        ordered = frame.repartitionByRange(partitions, *keys).sortWithinPartitions(*keys)
        properties = {**self.jdbc.properties, "batchsize": str(WRITE_BATCH)}
        log.info("spark: writing %s through %d JDBC connection(s) to %s", table.name, partitions,
                 self.jdbc.describe())
        ordered.write.jdbc(self.jdbc.url, self.quote(table.name), mode="append", properties=properties)


# --- the tiers as DataFrames ---------------------------------------------------------------------------


def raw_rows(frame: DataFrame, source: Source, months: Sequence[dt.date] | None, *,
             month_computed: bool = False) -> DataFrame:
    """The raw table's columns under their role names (a wide table's measures as m0, m1, ...); ``months``
    keeps only those (Parquet: pruned). A date column's month: ``month_computed`` (the database computed it
    as :data:`RAW_MONTH`), else Spark's first day of the date's month."""
    from pyspark.sql import functions as F

    if not source.dated:
        month = F.col(source.month.name).cast("date")
    elif month_computed:
        month = F.col(RAW_MONTH).cast("date")
    else:
        month = F.trunc(F.to_date(F.col(source.month.name)), "month")
    keys = [month.alias("month"), F.col(source.asin.name).alias("asin"),
            F.col(source.marketplace.name).alias("marketplace")]
    if source.wide:
        values = [F.col(m.column.name).alias(f"m{i}") for i, m in enumerate(source.measures)]
    else:
        values = [F.col(source.metric.name).alias("metric"), F.col(source.value.name).alias("value")]
    rows = frame.select(*keys, *values)
    return rows if months is None else rows.where(F.col("month").isin(list(months)))


def raw_groups(raw: DataFrame, rules: Rules) -> DataFrame:
    """rollup.Rollup.raw_groups: the raw rows summed per (month, asin, marketplace, metric), value and row_count.

    A wide table is grouped by (month, asin, marketplace) with the SUM and COUNT of each measure, then
    unpivoted: one row per metric whose COUNT is not 0."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    keys = ["month", "asin", "marketplace"]
    if not rules.metrics:
        return raw.groupBy(*keys, "metric").agg(
            F.sum(_exact(raw.schema["value"].dataType, F.col("value"), rules)).alias("value"),
            F.count(F.lit(1)).alias("row_count"))
    decimal = DecimalType(rules.precision, rules.scale)  # one type for every metric's sums: one array below
    sums = [agg for i in range(len(rules.metrics)) for agg in (
        F.sum(_exact(raw.schema[f"m{i}"].dataType, F.col(f"m{i}"), rules)).cast(decimal).alias(f"v{i}"),
        F.count(F.col(f"m{i}")).alias(f"n{i}"))]
    pairs = F.explode(F.array(*(F.struct(F.lit(metric).alias("metric"), F.col(f"v{i}").alias("value"),
                                         F.col(f"n{i}").alias("row_count")) for i, metric in enumerate(rules.metrics))))
    grouped = raw.groupBy(*keys).agg(*sums)
    return grouped.select(*keys, pairs.alias("pair")).select(*keys, "pair.*").where(F.col("row_count") > 0)


def product_rows(frame: DataFrame, config: Config) -> DataFrame:
    from pyspark.sql import functions as F

    s = config.source
    return frame.select(F.col(s.product_asin_column).alias("p_asin"),
                        F.col(s.product_brand_column).cast("long").alias("p_brand"))


def brand_rows(frame: DataFrame, config: Config) -> DataFrame:
    from pyspark.sql import functions as F

    s = config.source
    return frame.select(F.col(s.brand_id_column).cast("long").alias("b_id"),
                        F.col(s.brand_category_column).cast("long").alias("b_category"))


def category_rows(frame: DataFrame, config: Config) -> DataFrame:
    from pyspark.sql import functions as F

    return frame.select(F.col(config.source.category_id_column).cast("long").alias("c_id"))


def tier1(raw: DataFrame, products: DataFrame, brands: DataFrame, categories: DataFrame, rules: Rules) -> DataFrame:
    """rollup.tier1_select: aggregate the raw rows first, then look up brand and category per group."""
    from pyspark.sql import functions as F

    grouped = raw_groups(raw, rules)
    joined = grouped.join(products, grouped["asin"] == products["p_asin"], "left") \
        .join(brands, F.col("p_brand") == F.col("b_id"), "left") \
        .join(categories, F.col("b_category") == F.col("c_id"), "left")
    unassigned = F.lit(rules.unassigned).cast("long")
    brand = F.coalesce(F.col("p_brand"), unassigned)
    category = F.when(brand == unassigned, unassigned).otherwise(F.coalesce(F.col("c_id"), unassigned))
    return _finish(joined.withColumn("brand_id", brand).withColumn("category_id", category), "asin", rules)


def tier2(t1: DataFrame, rules: Rules) -> DataFrame:
    """rollup.tier2_inserts: per marketplace from tier 1, then the ALL rows from those."""
    from pyspark.sql import functions as F

    per_market = t1.groupBy("month", "brand_id", "marketplace", "metric", "category_id").agg(*_sums(rules))
    all_markets = per_market.where(F.col("marketplace") != rules.all_marketplace) \
        .groupBy("month", "brand_id", "metric", "category_id").agg(*_sums(rules)) \
        .withColumn("marketplace", F.lit(rules.all_marketplace))
    return _finish(per_market.unionByName(all_markets), "brand", rules)


def tier3(t2: DataFrame, rules: Rules) -> DataFrame:
    """rollup.tier3_insert: categories from tier 2's ALL rows."""
    from pyspark.sql import functions as F

    rows = t2.where(F.col("marketplace") == rules.all_marketplace) \
        .groupBy("month", "category_id", "metric").agg(*_sums(rules))
    return _finish(rows, "category", rules)


def _exact(source_type: Any, value: Column, rules: Rules) -> Column:
    """A DECIMAL source is summed as it is (rounded once, at the end, as the database does); anything
    else (a Parquet double or string) becomes DECIMAL first, so the sum itself is exact."""
    from pyspark.sql.types import DecimalType

    return value if isinstance(source_type, DecimalType) else value.cast(DecimalType(rules.precision, rules.scale))


def _sums(rules: Rules) -> list[Column]:
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    return [F.sum("value").cast(DecimalType(rules.precision, rules.scale)).alias("value"),
            F.sum("row_count").cast("long").alias("row_count")]


def _finish(frame: DataFrame, tier: str, rules: Rules) -> DataFrame:
    """The tier's columns in order, value at the summary's DECIMAL, refreshed_at the run's start."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    stamp = F.lit(rules.stamp.isoformat(sep=" ")).cast("timestamp_ntz")
    columns = {"value": F.col("value").cast(DecimalType(rules.precision, rules.scale)),
               "row_count": F.col("row_count").cast("long"), "refreshed_at": stamp}
    return frame.select(*(columns.get(name, F.col(name)).alias(name) for name in COLUMNS[tier]))


# --- the session and its errors ---------------------------------------------------------------------------


def session(config: Config) -> SparkSession:
    """The process's SparkSession for ``[spark] master`` (reused across runs), set up for exact sums."""
    from pyspark.sql import SparkSession

    master = config.spark.master
    if master.startswith("spark://") and (unreachable := unreachable_master(master)):
        raise RefreshFailed(f"spark: no Spark master answers at {master} ({unreachable}): start the cluster, "
                            "or set [spark] master to one that runs")
    if master.startswith("sc://"):
        spark = SparkSession.builder.remote(master).getOrCreate()
    else:
        spark = SparkSession.builder.master(master).appName("summarizer") \
            .config("spark.jars", ",".join(config.spark.jars)) \
            .config("spark.ui.showConsoleProgress", "false").getOrCreate()
        if spark.sparkContext.master != master:
            raise RefreshFailed(f"this process already runs Spark with master {spark.sparkContext.master}; "
                                f"it cannot switch to {master}")
    spark.conf.set("spark.sql.ansi.enabled", "true")  # overflow and bad casts fail, never NULL
    spark.conf.set("spark.sql.legacy.charVarcharAsString", "true")  # CHAR(n) read as the database returns it
    partitions = config.spark.shuffle_partitions or _default_partitions(spark, master)
    if partitions:
        spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    return spark


def unreachable_master(master: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why no master of a standalone URL (``spark://host:port``, or ``host1:port1,host2:port2`` with standby
    masters) accepts a TCP connection; None when one does, or when the URL is Spark's to judge.

    Without this, Spark retries for a minute with a stack trace every 20 s, then stops the context and
    reports only "Cannot call methods on a stopped SparkContext".
    """
    reasons = {}
    for address in master.removeprefix("spark://").split(","):
        try:
            parts = urlsplit(f"//{address}")
            host, port = parts.hostname, parts.port
        except ValueError:
            return None
        if not host or port is None:
            return None  # Spark itself says what is wrong with the URL
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            reasons[address] = exc.strerror or str(exc) or type(exc).__name__
    if len(reasons) == 1:
        return next(iter(reasons.values()))
    return "; ".join(f"{address}: {reason}" for address, reason in reasons.items())


def _default_partitions(spark: SparkSession, master: str) -> int | None:
    """Twice the cores, at least 8: Spark's own 200 cost 3x on two cores. None: Spark's conf already says."""
    if master.startswith("sc://"):
        return None  # a Connect server keeps its own setting
    context = spark.sparkContext
    if context.getConf().contains("spark.sql.shuffle.partitions"):
        return None
    return max(8, 2 * context.defaultParallelism)


@contextmanager
def spark_errors() -> Iterator[None]:
    """Spark's exceptions as RefreshFailed with Spark's own message, first line."""
    from py4j.protocol import Py4JError  # type: ignore[import-untyped]
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JError) as exc:
        raise RefreshFailed(f"spark: {spark_message(exc)}") from exc


def spark_message(exc: BaseException) -> str:
    """The readable line: a Java error's root cause (the task's own error, not 'Job aborted'), else the text."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        while java.getCause() is not None and java.getCause() != java:
            java = java.getCause()
        text = str(java.toString())
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if "JAVA_GATEWAY_EXITED" in first:
        first += " (Spark's launcher printed the reason on stderr)"
    return first[:1000]

