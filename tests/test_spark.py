"""The spark engine on a real MariaDB with Spark in local mode: the same tiers as the database engine and
the oracle, from JDBC and from Parquet; failures that leave the live tiers alone and are recorded.

Every test is marked ``spark`` (pyspark and Java 17+): ``pytest -m "not spark"`` leaves them out. One
SparkSession serves the whole file; the engine finds and reuses it (same master).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from summarizer import ConfigError, RefreshFailed, UsageError, load_config
from summarizer.engines.spark import jdbc_for
from summarizer.model import STAGE_SUFFIX
from summarizer.serve.read import Reader

from .clirun import run_cli
from .databases import env_for
from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows
from .procs import wait_until

pytestmark = pytest.mark.spark

MASTER = "local[2]"
MARIADB_JAR = "/usr/share/java/mariadb-java-client.jar"
JARS = f"{MARIADB_JAR},/usr/share/java/postgresql.jar"
SPARK = {"refresh_engine": "spark", "spark_master": MASTER, "spark_shuffle_partitions": "4"}


@pytest.fixture(scope="module")  # stopped at the end of this file: test_spark_cluster.py runs another master
def spark() -> Iterator[Any]:
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'summarizer-tiers[spark]'")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master(MASTER).appName("summarizer-tests").config("spark.jars", JARS)
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    yield session
    session.stop()


def tiers(app: Any) -> dict[str, dict[Any, Any]]:
    return actual_tiers(app.dialect.engine, app.schema.live().by_name())


def stamps(app: Any) -> dict[str, dict[dt.date, set[dt.datetime]]]:
    """tier -> month -> the refreshed_at values of its rows."""
    found: dict[str, dict[dt.date, set[dt.datetime]]] = {}
    with app.dialect.engine.connect() as conn:
        for name, table in app.schema.live().by_name().items():
            for month, stamp in conn.execute(text(f"SELECT DISTINCT month, refreshed_at FROM {table.name}")):
                found.setdefault(name, {}).setdefault(month, set()).add(stamp)
    return found


def leftovers(app: Any, suffix: str) -> list[str]:
    return [t for t in inspect(app.dialect.engine).get_table_names() if t.endswith(suffix)]


def last_run(app: Any) -> Any:
    return app.runs.latest(1)[0]


# --- the same tiers ------------------------------------------------------------------------------------


def test_full_and_incremental_equal_the_database_engine_and_the_oracle(mysql_url, app_factory, spark):
    database, engine = app_factory(mysql_url), app_factory(mysql_url, **SPARK)
    data = random_dataset(seed=11, rows=800, months=5)  # values near the DECIMAL(18,4) limit included
    tables = load(database.dialect.engine, data)
    database.init(source_indexes=True)

    database.refresh()
    by_database = tiers(database)
    version = Reader(engine).version
    before = version()
    run = engine.refresh()
    assert run.status == "succeeded" and run.plan.startswith(f"spark ({MASTER})") and "spark asin" in run.steps
    assert version() == before + 1  # the data version's shadow row went in with the swap
    assert tiers(engine) == by_database
    assert_tiers_equal(expected_tiers(data), tiers(engine), exact=True)
    assert {s for months in stamps(engine).values() for m in months.values() for s in m} == {run.stamp}
    assert engine.verify().ok and not leftovers(engine, "__new")

    changed = data.months[1:3]
    mutate(data, changed)
    reload_rows(database.dialect.engine, tables, data)
    run = engine.refresh(months=changed)
    assert run.status == "succeeded" and run.months == ",".join(f"{m:%Y-%m}" for m in changed)
    assert version() == before + 1 + len(changed)  # one step in each month's transaction
    assert_tiers_equal(expected_tiers(data), tiers(engine), exact=True)
    for months in stamps(engine).values():  # only the asked months were replaced
        assert {m for m, s in months.items() if s == {run.stamp}} == set(changed)
    by_spark = tiers(engine)
    database.refresh(months=changed)
    assert tiers(database) == by_spark
    assert not leftovers(engine, STAGE_SUFFIX)


def write_parquet(spark: Any, data: Any, root: Path, *, without: str | None = None) -> None:
    """The dataset as Parquet: financials/month=YYYY-MM-01/, products/, brands/, categories/."""
    from pyspark.sql.types import DateType, DecimalType, LongType, StringType, StructField, StructType

    columns = [("asin", StringType()), ("marketplace", StringType()), ("month", DateType()),
               ("metric", StringType()), ("value", DecimalType(18, 4))]
    columns = [c for c in columns if c[0] != without]
    rows = [tuple(r[name] for name, _ in columns) for r in data.rows]
    schema = StructType([StructField(name, kind, False) for name, kind in columns])
    spark.createDataFrame(rows, schema).write.mode("overwrite").partitionBy("month").parquet(str(root / "financials"))
    products = StructType([StructField("asin", StringType()), StructField("brand_id", LongType())])
    spark.createDataFrame(list(data.products.items()), products).write.mode("overwrite").parquet(str(root / "products"))
    brands = StructType([StructField("brand_id", LongType()), StructField("category_id", LongType())])
    spark.createDataFrame(list(data.brands.items()), brands).write.mode("overwrite").parquet(str(root / "brands"))
    categories = StructType([StructField("category_id", LongType())])
    spark.createDataFrame([(c,) for c in data.categories], categories).write.mode("overwrite") \
        .parquet(str(root / "categories"))


def test_parquet_input_gives_the_jdbc_tiers(mysql_url, app_factory, spark, tmp_path):
    engine = app_factory(mysql_url, **SPARK)
    data = random_dataset(seed=12, rows=600, months=4)
    load(engine.dialect.engine, data)
    engine.init()
    engine.refresh()
    from_jdbc = tiers(engine)
    write_parquet(spark, data, tmp_path)
    assert sorted(p.name for p in (tmp_path / "financials").glob("month=*")) == \
        [f"month={m:%Y-%m-%d}" for m in data.months]
    with engine.dialect.engine.begin() as conn:  # the lake holds the only copy now
        conn.execute(text("DROP TABLE financials, products, brands"))

    lake = app_factory(mysql_url, **SPARK, spark_source="parquet", spark_parquet_path=str(tmp_path))
    run = lake.refresh()
    assert run.status == "succeeded" and "Parquet" in run.plan
    assert tiers(lake) == from_jdbc
    assert_tiers_equal(expected_tiers(data), from_jdbc, exact=True)

    mutate(data, data.months[2:3], seed=5)
    write_parquet(spark, data, tmp_path)
    lake.refresh(months=data.months[2:3])
    assert_tiers_equal(expected_tiers(data), tiers(lake), exact=True)


# --- Spark Connect ------------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory) -> Iterator[str]:
    """A real Spark Connect server (the one pyspark ships, local[2] inside), started for this module."""
    pytest.importorskip("grpc", reason="no Spark Connect client: pip install 'summarizer-tiers[spark-connect]'")
    import pyspark

    home, logs = Path(pyspark.__file__).parent, tmp_path_factory.mktemp("connect")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOG_DIR=str(logs), SPARK_PID_DIR=str(logs))
    command = [str(home / "sbin" / "start-connect-server.sh"), "--wait", "--master", MASTER, "--jars", MARIADB_JAR,
               "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false"]
    with open(logs / "server.log", "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _port_open(port) or server.poll() is not None, "the Spark Connect server", timeout=90)
        assert server.poll() is None, (logs / "server.log").read_text()[-3000:]
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own process group: the script and its JVM
        server.wait(timeout=60)


def test_spark_connect_remote_computes_the_same_tiers(connect_url, mysql_url, app_factory, tmp_path):
    """``--spark-master sc://...`` through the real command: Spark runs in the server, JDBC from there."""
    app = app_factory(mysql_url)
    data = random_dataset(seed=16, rows=400, months=3)
    tables = load(app.dialect.engine, data)
    app.init()
    settings = {"spark_shuffle_partitions": "4"}
    result = run_cli(mysql_url, "refresh", "--spark-master", connect_url, cwd=tmp_path, timeout=180, **settings)
    assert result.returncode == 0, result.stderr
    assert last_run(app).plan.startswith(f"spark ({connect_url})")
    assert_tiers_equal(expected_tiers(data), tiers(app), exact=True)

    mutate(data, data.months[1:2], seed=9)
    reload_rows(app.dialect.engine, tables, data)
    result = run_cli(mysql_url, "refresh", "--spark-master", connect_url, "--months", f"{data.months[1]:%Y-%m}",
                     cwd=tmp_path, timeout=180, **settings)
    assert result.returncode == 0, result.stderr
    assert_tiers_equal(expected_tiers(data), tiers(app), exact=True)
    assert not leftovers(app, STAGE_SUFFIX)


# --- failures --------------------------------------------------------------------------------------------


@pytest.fixture
def refreshed(mysql_url, app_factory):
    """A database whose live tiers were built by the database engine: (app, data, tiers)."""
    app = app_factory(mysql_url)
    data = random_dataset(seed=13, rows=300, months=3)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    return app, data, tiers(app)


def test_bad_master_url_fails_the_run_and_leaves_the_tiers(refreshed, mysql_url, tmp_path):
    app, _, before = refreshed
    result = run_cli(mysql_url, "refresh", "--spark-master", "local[two]", cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Could not parse Master URL: 'local[two]'" in result.stderr
    assert tiers(app) == before
    failed = last_run(app)
    assert failed.status == "failed" and "Could not parse Master URL" in failed.error


def test_executor_error_fails_the_run_and_leaves_the_tiers(refreshed, mysql_url, app_factory, spark):
    app, _, before = refreshed
    with app.dialect.engine.begin() as conn:  # a source whose value column cannot be read as a number
        conn.execute(text("CREATE VIEW financials_text AS SELECT asin, marketplace, month, metric, "
                          "CASE WHEN id = 7 THEN 'n/a' ELSE CAST(value AS CHAR) END AS value FROM financials"))
    engine = app_factory(mysql_url, **SPARK, source_financials_table="financials_text")
    with pytest.raises(RefreshFailed, match="CAST_INVALID_INPUT") as caught:
        engine.refresh()
    assert "'n/a'" in str(caught.value) and "\n" not in str(caught.value)
    assert tiers(app) == before
    failed = last_run(app)
    assert failed.status == "failed" and "CAST_INVALID_INPUT" in failed.error and "'n/a'" in failed.error


def test_missing_parquet_column_fails_an_incremental_run(refreshed, mysql_url, app_factory, spark, tmp_path):
    app, data, before = refreshed
    write_parquet(spark, data, tmp_path, without="metric")
    lake = app_factory(mysql_url, **SPARK, spark_source="parquet", spark_parquet_path=str(tmp_path))
    with pytest.raises(RefreshFailed, match="metric"):
        lake.refresh(months=data.months[:1])
    assert tiers(app) == before and not leftovers(app, STAGE_SUFFIX)
    failed = last_run(app)
    assert failed.status == "failed" and "UNRESOLVED_COLUMN" in failed.error


# --- bad input: a clear message, nothing run, nothing recorded -------------------------------------------


@pytest.mark.parametrize(("settings", "message"), [
    ({"spark_jars": "/nonexistent/driver.jar"}, "[spark], key 'jars': no such file: /nonexistent/driver.jar"),
    ({"spark_source": "parquet"}, "source = parquet needs parquet_path"),
    ({"spark_source": "parquet", "spark_parquet_path": "/nonexistent"}, "/nonexistent holds no folder financials"),
])
def test_bad_spark_settings_change_nothing(mysql_url, app_factory, settings, message):
    app = app_factory(mysql_url, **SPARK, **settings)
    load(app.dialect.engine, random_dataset(seed=14, rows=50, months=2))
    app.init()
    with pytest.raises(ConfigError) as caught:
        app.refresh()
    assert message in str(caught.value)
    assert app.runs.latest(5) == [] and not leftovers(app, "__new")


def test_sqlite_is_not_a_spark_target(tmp_path, app_factory):
    app = app_factory(make_url(f"sqlite:///{tmp_path / 'demo.db'}"), **SPARK)
    load(app.dialect.engine, random_dataset(seed=15, rows=50, months=2))
    app.init()
    with pytest.raises(ConfigError, match="MySQL/MariaDB or PostgreSQL, not sqlite"):
        app.refresh()
    assert app.runs.latest(5) == []


def test_engine_options_and_settings_are_checked(mysql_url, tmp_path):
    result = run_cli(mysql_url, "refresh", "--engine", "database", "--spark-master", MASTER, cwd=tmp_path)
    assert result.returncode == UsageError.exit_code and "--spark-master" in result.stderr
    result = run_cli(mysql_url, "refresh", "--spark-master", "nosuch://nowhere", cwd=tmp_path)
    assert result.returncode == ConfigError.exit_code
    assert "'nosuch://nowhere' is not a Spark master URL" in result.stderr and "[spark]" in result.stderr
    assert "started" not in result.stderr
    with pytest.raises(ConfigError, match=r"\[refresh\], key 'engine': expected one of database, spark"):
        load_config(tmp_path / "absent.ini", {"SUMMARIZER_REFRESH_ENGINE": "hadoop"})
    with pytest.raises(ConfigError, match=r"\[spark\], key 'source': expected one of jdbc, parquet"):
        load_config(tmp_path / "absent.ini", {"SUMMARIZER_SPARK_SOURCE": "csv"})


def test_jdbc_url_keeps_credentials_out_of_the_url():
    jdbc = jdbc_for(make_url("mysql+pymysql://app:s3cret@db.internal:3307/shop"))
    assert jdbc.url.startswith("jdbc:mysql://db.internal:3307/shop?permitMysqlScheme")
    assert "s3cret" not in jdbc.url and jdbc.properties["password"] == "s3cret"
    assert jdbc.properties["driver"] == "org.mariadb.jdbc.Driver"
    assert jdbc_for(make_url("postgresql+psycopg://pg@h/db")).url.startswith("jdbc:postgresql://h:5432/db?")


def test_without_pyspark_the_package_works_and_the_engine_names_the_extra(mysql_url, tmp_path):
    """A process where pyspark cannot be imported: summarizer loads; the spark engine says what to install."""
    script = textwrap.dedent("""
        import sys
        sys.modules["pyspark"] = None  # what a missing package looks like to `import pyspark`
        import summarizer.cli
        from summarizer import ConfigError, Summarizer, load_config
        assert not any(name.startswith("pyspark") and sys.modules[name] for name in sys.modules)
        try:
            Summarizer(load_config("absent.ini")).refresh()
        except ConfigError as exc:
            print(exc)
    """)
    env = env_for(mysql_url, refresh_engine="spark")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "needs pyspark" in result.stdout and "summarizer-tiers[spark]" in result.stdout


def test_the_database_engine_stays_the_default(tmp_path):
    assert load_config(tmp_path / "absent.ini", {}).refresh.engine == "database"


def test_raw_rows_with_the_all_marketplace_label_fail_a_spark_refresh_clearly(refreshed, mysql_url, app_factory, spark):
    app, data, before = refreshed
    with app.dialect.engine.begin() as conn:
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          "VALUES ('A0001', 'ALL', :month, 'revenue', 1.5)"), {"month": data.months[0]})
    engine = app_factory(mysql_url, **SPARK)
    with pytest.raises(RefreshFailed) as caught:
        engine.refresh()
    assert "has rows with marketplace 'ALL', the label the summaries reserve" in str(caught.value)
    assert tiers(app) == before
    failed = last_run(app)
    assert failed.status == "failed" and "set [summary] all_marketplace" in failed.error
