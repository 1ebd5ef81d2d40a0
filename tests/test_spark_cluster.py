"""The spark engine on a real standalone cluster: a master and two one-core workers, each its own JVM,
started once for this module by tests/sparkcluster.py; this process is the driver (client mode).

On MariaDB and on PostgreSQL, a full and a ``--months`` refresh computed on the cluster, from JDBC and
from Parquet, give the database engine's tiers row for row and the oracle's exactly. The tasks ran in
the workers' executors, not in the driver: each worker's own account lists one executor of this
application, and the driver's count of tasks per executor grows on both during a refresh. A master
nobody listens on fails the run with one line and a recorded failure, and no live tier changes.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect

from summarizer.engines.spark import unreachable_master
from summarizer.model import STAGE_SUFFIX

from . import sparkcluster
from .clirun import run_cli
from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, mutate, random_dataset, reload_rows
from .procs import wait_until
from .servers import free_port
from .test_spark import write_parquet

pytestmark = pytest.mark.spark

EXECUTOR_MEMORY = "512m"  # of the 1 GiB each worker offers


@pytest.fixture(scope="module")
def cluster() -> Iterator[sparkcluster.Cluster]:
    reason = sparkcluster.missing()
    if reason:
        pytest.skip(reason)
    with sparkcluster.standalone(workers=2, cores=1, memory="1g") as running:
        yield running


@pytest.fixture(scope="module")
def spark(cluster):
    """The driver's session on the cluster, with its UI on a port of its own (its REST API counts tasks per
    executor); the engine finds and reuses it (same master). Both executors are up before any test."""
    from pyspark.sql import SparkSession

    earlier = SparkSession.getActiveSession()
    if earlier is not None:  # one SparkContext per process: another module's local-mode session goes
        earlier.stop()
    session = (SparkSession.builder.master(cluster.master_url).appName("summarizer-cluster-tests")
               .config("spark.jars", ",".join(sparkcluster.JARS)).config("spark.executor.memory", EXECUTOR_MEMORY)
               .config("spark.executor.extraJavaOptions", sparkcluster.QUICK_JVM)
               .config("spark.driver.extraJavaOptions", sparkcluster.QUICK_JVM)  # if this module starts the JVM
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "true")  # the JVM may hold test_spark.py's "false" from its start
               .config("spark.ui.port", str(free_port())).config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    try:
        wait_until(lambda: len(executor_tasks(session)) == 2, "an executor on each worker", timeout=90, every=0.2)
        yield session
    finally:
        session.stop()


def executor_tasks(session: Any) -> dict[str, int]:
    """Executor id -> tasks it has run, from the driver's REST API (the driver itself left out)."""
    context = session.sparkContext
    url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/executors"
    with urllib.request.urlopen(url, timeout=10) as response:
        found = json.load(response)
    return {e["id"]: int(e["totalTasks"]) for e in found if e["id"] != "driver" and e["isActive"]}


def executors_of(session: Any, cluster: sparkcluster.Cluster) -> dict[str, int]:
    """Executor id -> the worker that runs it, from the master's and the workers' own accounts; asserts that the
    application holds one core of each of the two workers and that each runs one executor of it."""
    status = cluster.status()
    assert status["aliveworkers"] == 2 and [w["cores"] for w in status["workers"]] == [1, 1]
    ours = [a for a in status["activeapps"] if a["id"] == session.sparkContext.applicationId]
    assert len(ours) == 1 and ours[0]["cores"] == 2, status["activeapps"]
    hosts = {str(e["id"]): n for n in range(2) for e in cluster.worker_status(n)["executors"]
             if e["appid"] == ours[0]["id"]}
    assert sorted(hosts.values()) == [0, 1], hosts
    return hosts


def on_cluster(cluster: sparkcluster.Cluster, **settings: str) -> dict[str, str]:
    return {"refresh_engine": "spark", "spark_master": cluster.master_url, "spark_shuffle_partitions": "4",
            **settings}


def tiers(app: Any) -> dict[str, dict[Any, Any]]:
    return actual_tiers(app.dialect.engine, app.schema.live().by_name())


def leftovers(app: Any, suffix: str) -> list[str]:
    return [t for t in inspect(app.dialect.engine).get_table_names() if t.endswith(suffix)]


# --- the same tiers, computed on the cluster -------------------------------------------------------------


def test_jdbc_full_and_months_equal_the_database_engine_and_the_oracle(server_url, app_factory, spark, cluster):
    database, engine = app_factory(server_url), app_factory(server_url, **on_cluster(cluster))
    data = random_dataset(seed=21, rows=800, months=5)  # values near the DECIMAL(18,4) limit included
    tables = load(database.dialect.engine, data)
    database.init(source_indexes=True)
    database.refresh()
    by_database = tiers(database)

    hosts = executors_of(spark, cluster)
    before = executor_tasks(spark)
    run = engine.refresh()
    assert run.status == "succeeded" and run.plan.startswith(f"spark ({cluster.master_url})"), run.error
    after = executor_tasks(spark)
    assert set(after) == set(hosts) and all(after[e] > before[e] for e in hosts), (before, after)  # both worked
    assert tiers(engine) == by_database
    assert_tiers_equal(expected_tiers(data), tiers(engine), exact=True)
    assert not leftovers(engine, "__new")

    changed = data.months[1:3]
    mutate(data, changed)
    reload_rows(database.dialect.engine, tables, data)
    run = engine.refresh(months=changed)
    assert run.status == "succeeded" and run.months == ",".join(f"{m:%Y-%m}" for m in changed), run.error
    assert_tiers_equal(expected_tiers(data), tiers(engine), exact=True)
    by_spark = tiers(engine)
    database.refresh(months=changed)
    assert tiers(database) == by_spark
    assert not leftovers(engine, STAGE_SUFFIX)


def test_parquet_full_and_months_equal_the_database_engine_and_the_oracle(server_url, app_factory, spark, cluster,
                                                                          tmp_path):
    """The lake is read by the executors (a local path is valid on workers of this machine)."""
    database = app_factory(server_url)
    lake = app_factory(server_url, **on_cluster(cluster, spark_source="parquet", spark_parquet_path=str(tmp_path)))
    data = random_dataset(seed=22, rows=700, months=4)
    tables = load(database.dialect.engine, data)
    database.init()
    database.refresh()
    by_database = tiers(database)
    write_parquet(spark, data, tmp_path)

    run = lake.refresh()
    assert run.status == "succeeded" and "Parquet" in run.plan, run.error
    assert tiers(lake) == by_database
    assert_tiers_equal(expected_tiers(data), by_database, exact=True)

    changed = data.months[2:3]
    mutate(data, changed, seed=5)
    write_parquet(spark, data, tmp_path)
    reload_rows(database.dialect.engine, tables, data)
    run = lake.refresh(months=changed)
    assert run.status == "succeeded", run.error
    assert_tiers_equal(expected_tiers(data), tiers(lake), exact=True)
    by_spark = tiers(lake)
    database.refresh(months=changed)
    assert tiers(database) == by_spark


# --- no cluster there --------------------------------------------------------------------------------------


def test_a_master_nobody_listens_on_fails_the_run_in_one_line(mysql_url, app_factory, tmp_path):
    app = app_factory(mysql_url)
    load(app.dialect.engine, random_dataset(seed=24, rows=300, months=3))
    app.init()
    app.refresh()
    before = tiers(app)
    master = f"spark://127.0.0.1:{free_port()}"
    result = run_cli(mysql_url, "refresh", "--engine", "spark", "--spark-master", master, cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and f"no Spark master answers at {master}" in errors[0], result.stderr
    assert f"{master} (Connection refused): start the cluster" in errors[0]
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert tiers(app) == before  # (the shadow tables it made are dropped by the next run, as after any failure)
    failed = app.runs.latest(1)[0]
    assert failed.status == "failed" and f"no Spark master answers at {master}" in failed.error


def test_a_standby_list_needs_one_master_that_answers(cluster):
    dead, other = (f"127.0.0.1:{free_port()}" for _ in range(2))
    assert unreachable_master(f"spark://{dead},127.0.0.1:{cluster.port}") is None
    assert unreachable_master(f"spark://{dead},{other}") == f"{dead}: Connection refused; {other}: Connection refused"
    assert unreachable_master("spark://no-port-given") is None  # Spark's own message says what is wrong
