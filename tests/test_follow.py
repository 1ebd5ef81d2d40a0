"""summarizer follow: the tiers kept exact from the database's change stream.

Every test runs on a server of the module's own with the change stream on (MariaDB: the binary log in
row format with full images and metadata; PostgreSQL: a cluster with ``wal_level = logical``, whose
source tables get REPLICA IDENTITY FULL and the publication as ``follow --check`` asks), one scratch
database per test; :data:`FOLLOWED` lists the engines, and :data:`ENGINE` what differs between them. The
expected tiers come from ``oracle.py`` (plain Python over the rows read back) and from a fresh full
refresh, compared row for row.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from summarizer import Summarizer
from summarizer.follow.pgslot import PgSlotStream
from summarizer.follow.stream import Transaction
from summarizer.follow.streams import open_stream
from summarizer.serve.http import create_app

from . import procs, servers, workload
from .clirun import invoke, run_cli
from .databases import make_app, scratch_database
from .oracle import actual_tiers, assert_tiers_equal
from .test_api_http import Http
from .test_data_version import assert_answer_is_the_tier, warm

FOLLOWED = ["mysql", "postgresql"]
SERVER_OPTIONS = {"mysql": ("--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL",
                            "--binlog-row-metadata=FULL", "--server-id=1"),
                  "postgresql": ("-c", "wal_level=logical")}
ENGINE: dict[str, dict[str, str]] = {  # what the tests write or expect that differs between the engines
    "mysql": {"index": "ALTER TABLE financials ADD INDEX ix_probe (metric)", "position": "binlog.",
              "ddl_stops": "the source table financials was changed by DDL"},
    "postgresql": {"index": "CREATE INDEX ix_probe ON financials (metric)", "position": "summarizer_follow_",
                   "ddl_stops": "the columns of source table financials changed"},
}
FOLLOW: dict[str, Any] = {"follow_enabled": "true", "follow_idle_seconds": "0.05", "follow_batch_seconds": "0.3"}
KILLS = 20


@pytest.fixture(scope="module", params=FOLLOWED)
def follow_server(request: pytest.FixtureRequest) -> Iterator[servers.Server]:
    reason = servers.missing("mysql" if request.param == "mysql" else "postgres")
    if reason:
        pytest.skip(reason)
    start = servers.mariadb if request.param == "mysql" else servers.postgres
    with start(*SERVER_OPTIONS[request.param]) as server:
        yield server


@pytest.fixture
def follow_url(follow_server: servers.Server) -> Iterator[URL]:
    yield from scratch_database(follow_server.url, f"follow_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def followed(follow_url: URL, tmp_path: Path) -> Iterator[Summarizer]:
    """A followed database: the workload's starting data, init, and the first handover refresh."""
    app = make_app(follow_url, tmp_path, **FOLLOW)
    workload.seed_data(app.dialect.engine, seed=1, rows=10_000)
    prepare_source(app)
    app.init(source_indexes=True)
    app.refresh()
    yield app
    app.close()


def prepare_source(app: Summarizer) -> None:
    """PostgreSQL: what ``follow --check`` asks the tables' owner to run (REPLICA IDENTITY FULL, the publication)."""
    if app.dialect.name == "postgresql":
        stream = open_stream(app.dialect, app.config, app.source)
        assert isinstance(stream, PgSlotStream)
        stream.prepare_source()


def tiers_of(app: Summarizer) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    return actual_tiers(app.dialect.engine, app.schema.live().by_name())


def assert_exact(app: Summarizer) -> None:
    """The tiers equal the oracle's, and then a fresh full refresh's, row for row."""
    followed = tiers_of(app)
    assert_tiers_equal(workload.expected(app.dialect.engine), followed, exact=True)
    app.refresh()
    assert tiers_of(app) == followed


def catch_up(app: Summarizer) -> int:
    return app.follower().run(once=True)


def test_a_randomised_workload_killed_20_times_is_followed_exactly(followed, follow_url, tmp_path):
    """100,000+ raw changes of every kind mixed with dimension moves, followed by a real ``summarizer follow``
    process killed with SIGKILL at 20 random moments (each time a new one resumes from the stored position):
    no change lost or applied twice. The last one ends on SIGTERM after its batch, with exit 0."""
    rng = random.Random(5)
    work = workload.Workload(followed.dialect.engine, seed=6)
    proc = procs.start(follow_url, "follow", cwd=tmp_path, **FOLLOW)
    kills, kill_at = 0, None

    def maybe_kill() -> None:  # a random moment within a second of the process starting to follow
        nonlocal proc, kills, kill_at
        if kill_at is None and any("following from" in line for line in proc.lines):
            kill_at = time.monotonic() + rng.uniform(0.0, 1.0)
        if kills < KILLS and kill_at is not None and time.monotonic() > kill_at:
            proc.kill()
            kills += 1
            proc, kill_at = procs.start(follow_url, "follow", cwd=tmp_path, **FOLLOW), None
    try:
        work.run(100_000, between=maybe_kill, rate=4_000)
        while kills < KILLS:
            work.run(work.raw_changes + 200, between=maybe_kill, rate=4_000)
        proc.wait_for_line("following from", timeout=60)  # SIGTERM to a follower, not to a starting interpreter
    finally:
        proc.signal(signal.SIGTERM)
        code = proc.finish(timeout=120)
    assert code == 0, proc.stderr
    assert kills == KILLS and work.raw_changes >= 100_000 and work.month_deleted
    catch_up(followed)
    state = followed.follow_status()
    assert state is not None and state.changes >= work.raw_changes  # every change, once (exactness below)
    assert_exact(followed)


def test_a_follower_in_process_keeps_up_while_the_workload_runs(followed):
    """The follower's own loop (no process) while writers write; then the tiers are exact."""
    follower = followed.follower()
    thread = threading.Thread(target=follower.run)
    thread.start()
    try:
        work = workload.Workload(followed.dialect.engine, seed=2)
        work.run(10_000, rate=5_000)
    finally:
        follower.stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    applied = follower.applied + catch_up(followed)
    assert applied >= work.raw_changes
    assert_exact(followed)


def lose_the_stored_position(app: Summarizer) -> None:
    """MariaDB: purge the binary log the position lies in; PostgreSQL: drop the slot the position names."""
    engine = app.dialect.engine
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            state = app.follow_status()
            assert state is not None
            slot = state.position.partition("@")[0]
            procs.wait_until(lambda: not conn.execute(text("SELECT active FROM pg_replication_slots WHERE slot_name = "
                                                           ":s"), {"s": slot}).scalar(), "the slot let go")
            conn.execute(text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
            return
        conn.execute(text("FLUSH BINARY LOGS"))
        newest = conn.execute(text("SHOW MASTER STATUS")).one()[0]
        for session in conn.execute(text("SELECT id FROM information_schema.processlist "
                                         "WHERE command LIKE 'Binlog Dump%'")).scalars():
            conn.execute(text(f"KILL {int(session)}"))  # a log file a replica still reads is not purged
        procs.wait_until(lambda: conn.execute(text(f"PURGE BINARY LOGS TO '{newest}'")) is not None and [
            f for f, *_ in conn.execute(text("SHOW BINARY LOGS"))] == [newest], "the binary log purged")


def test_a_lost_stream_position_is_said_plainly_and_resync_recovers(followed, follow_url):
    """A purged binary log (MariaDB) or a dropped replication slot (PostgreSQL): the follower names it and
    --resync; ``follow --resync`` rebuilds the tiers, hands a new position over and follows on exactly."""
    engine = followed.dialect.engine
    catch_up(followed)
    workload.Workload(engine, seed=3).run(2_000)
    lose_the_stored_position(followed)
    gone = run_cli(follow_url, "follow", "--once", **FOLLOW)
    assert gone.returncode == 1, gone.stderr
    assert "is gone" in gone.stderr and "summarizer follow --resync" in gone.stderr
    assert followed.follow_status().error is not None
    resynced = run_cli(follow_url, "follow", "--resync", "--once", **FOLLOW)
    assert resynced.returncode == 0, resynced.stderr
    assert followed.follow_status().error is None
    workload.Workload(engine, seed=4).run(1_000)
    catch_up(followed)
    assert_exact(followed)


def test_the_handover_is_exact_while_writers_write_and_a_follower_runs(followed, follow_url, tmp_path):
    """A full refresh (a real process, as cron runs it) while writers change the raw table and a follower
    process applies batches: the refresh waits for the run lock between two batches (no exit 75), reads
    tier 1 in a snapshot without blocking the writers, and the follower resumes from that snapshot exactly."""
    engine = followed.dialect.engine
    stop, during = threading.Event(), []
    work = workload.Workload(engine, seed=9)

    def write() -> None:
        while not stop.is_set():
            work.run(work.raw_changes + 200, rate=3_000)
            during.append(work.raw_changes)
    writer = threading.Thread(target=write)
    follower = procs.start(follow_url, "follow", cwd=tmp_path, **FOLLOW)
    writer.start()
    try:
        follower.wait_for_line("following from")
        time.sleep(0.5)
        before = len(during)
        refreshed = run_cli(follow_url, "refresh", **FOLLOW, refresh_jobs="2")  # PostgreSQL: 2 snapshot readers
        written_meanwhile = len(during) - before
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert refreshed.returncode == 0, refreshed.stderr
    assert written_meanwhile > 0, "the writers did not write during the refresh"
    follower.wait_for_line("a full refresh handed position .* over")
    time.sleep(1.0)
    follower.signal(signal.SIGTERM)
    assert follower.finish(timeout=60) == 0, follower.stderr
    catch_up(followed)
    assert_exact(followed)


def test_a_handover_that_ends_where_the_batch_in_hand_ends_is_taken_for_one(followed, caplog):
    """A follower holds a batch while a refresh runs; when the writers paused meanwhile, the refresh's snapshot
    saw exactly that batch and the stored position is where the batch ends. That is the handover (its state
    row counts no batch yet), not this batch already applied by a try whose commit reply was lost; and a
    batch that was applied is not applied twice. (The follower's loop is driven by hand here: only this way
    does a batch end exactly at a handover's position every time.)"""
    follower = followed.follower()
    try:
        follower._start()
        workload.Workload(followed.dialect.engine, seed=13).run(200)
        batch = changes_read(follower)
        followed.refresh()  # hands over a position past the batch's
        handed = follower._read_state()
        assert handed is not None and handed.values["batches"] == 0
        in_hand = [*batch[:-1], Transaction(batch[-1].changes, handed.position, batch[-1].committed_at)]
        with caplog.at_level("INFO", logger="summarizer.follow.follower"):
            assert follower._apply_locked(in_hand) is None  # dropped: the snapshot saw it
        assert f"a full refresh handed position {handed.position} over" in caplog.text
        assert follower.stored == handed
        workload.Workload(followed.dialect.engine, seed=14).run(200)
        batch = changes_read(follower)  # after the refresh's own statements, which the stream passes over
        before = follower.stored
        applied = follower._apply_locked(batch)
        assert applied is not None and applied > 0
        follower._moved_to(before)  # as if the commit's reply had been lost: the same batch is tried again
        assert follower._apply_locked(batch) == 0
    finally:
        follower.prefetch.stop()
    catch_up(followed)
    assert_exact(followed)


def changes_read(follower: Any, timeout: float = 30) -> list[Transaction]:
    """The follower's next batch that changes a source table (what only changed other tables is passed over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if batch := follower._read():
            return batch
    raise AssertionError(f"the follower read no change of a source table within {timeout:g}s")


def test_an_idle_follower_stores_a_position_past_other_tables_wal(followed):
    """PostgreSQL: the slot keeps the server's WAL after the stored position. With the source tables idle and
    another table written to, the follower stores the stream's heartbeat position (tiers and data version
    unchanged), and the slot lets that WAL go."""
    if followed.dialect.name != "postgresql":
        pytest.skip("MariaDB's binary log is kept by the server's own expiry, whatever the follower stored")
    engine, state = followed.dialect.engine, followed.schema.follow().state
    catch_up(followed)
    with engine.connect() as conn:
        before = conn.execute(text(f"SELECT position, data_version, batches FROM {state.name}")).one()
    tiers = tiers_of(followed)
    with engine.begin() as conn:  # about 3 MiB of WAL, none of it the source tables'
        conn.execute(text("CREATE TABLE other_work AS SELECT g, repeat('x', 100) AS pad "
                          "FROM generate_series(1, 20000) g"))
    with engine.connect() as conn:
        written = conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
    follower = followed.follower()
    follower.stream.heartbeat_bytes = 2**20  # type: ignore[attr-defined]
    assert follower.run(once=True) == 0
    with engine.connect() as conn:
        after = conn.execute(text(f"SELECT position, data_version, batches FROM {state.name}")).one()
    slot, lsn = after.position.split(":")[0].split("@")
    assert after.position != before.position and after.data_version == before.data_version
    assert after.batches == before.batches + 1 and tiers_of(followed) == tiers
    catch_up(followed)  # a reader confirms the stored position to the server as it starts
    with engine.connect() as conn:
        assert conn.execute(text("SELECT CAST(:lsn AS pg_lsn) >= CAST(:written AS pg_lsn) - 65536"),
                            {"lsn": lsn, "written": written}).scalar_one()
        confirmed = conn.execute(text("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                      "WHERE slot_name = :slot"), {"slot": slot}).scalar_one()
        assert conn.execute(text("SELECT CAST(:confirmed AS pg_lsn) >= CAST(:lsn AS pg_lsn)"),
                            {"confirmed": confirmed, "lsn": lsn}).scalar_one(), (confirmed, lsn)


def test_a_database_restart_is_retried(followed, follow_url, follow_server, tmp_path):
    """The server goes away for a few seconds under a running follower: it reconnects and goes on, exactly."""
    engine = followed.dialect.engine
    follower = procs.start(follow_url, "follow", cwd=tmp_path, **FOLLOW)
    try:
        follower.wait_for_line("following from")
        workload.Workload(engine, seed=11).run(3_000)
        follow_server.restart(down=3.0)
        engine.dispose()
        workload.Workload(engine, seed=12).run(3_000)
        follower.wait_for_line("transient error")
        time.sleep(2.0)
    finally:
        follower.signal(signal.SIGTERM)
        code = follower.finish(timeout=90)
    assert code == 0, follower.stderr
    catch_up(followed)
    assert_exact(followed)


def test_the_api_answers_new_numbers_after_a_change_without_a_batch_run(followed):
    engine = followed.dialect.engine
    http = Http(create_app(followed))
    cached = warm(http)
    with engine.begin() as conn:
        conn.execute(text("UPDATE financials SET value = value + 1000 WHERE month = '2024-02-01' AND id % 5 = 0"))
    catch_up(followed)
    runs = followed.runs.latest(50)
    assert_answer_is_the_tier(http, followed, workload.MONTHS[:4], cached)
    assert followed.runs.latest(50) == runs, "a batch run was recorded: the follower must not need one"


def test_a_schema_change_of_a_source_table_stops_following(followed, follow_url):
    engine = followed.dialect.engine
    differs = ENGINE[engine.dialect.name]
    with engine.begin() as conn:  # an index is no schema change (init --source-indexes adds one online)
        conn.execute(text(differs["index"]))
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          "VALUES ('B00001', 'US', '2024-01-01', 'revenue', 1.5)"))
    assert catch_up(followed) >= 1
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE financials ADD COLUMN note VARCHAR(10)"))
    stopped = run_cli(follow_url, "follow", "--once", **FOLLOW)
    assert stopped.returncode == 1
    assert differs["ddl_stops"] in stopped.stderr, stopped.stderr
    assert "--resync" in stopped.stderr


def test_incremental_refreshes_are_refused_while_following(followed, follow_url):
    before = tiers_of(followed)
    refused = invoke(follow_url, "refresh", "--months", "2024-01", **FOLLOW)
    assert refused.returncode == 2
    assert "refused while following is set up" in refused.stderr and "follow --resync" in refused.stderr
    assert tiers_of(followed) == before


def test_status_metrics_and_the_operations_page_show_the_follower(followed, follow_url):
    with followed.dialect.engine.begin() as conn:
        conn.execute(text("DELETE FROM financials WHERE month = '2024-03-01'"))
    catch_up(followed)
    shown = invoke(follow_url, "status", "--json", **FOLLOW)
    assert shown.returncode == 0, shown.stderr
    follow = json.loads(shown.stdout)["follow"]
    prefix = ENGINE[followed.dialect.name]["position"]
    assert follow["position"].startswith(prefix) and follow["changes"] > 0 and follow["error"] is None
    assert follow["lag_seconds"] is not None and follow["rate"] is not None
    text_status = invoke(follow_url, "status", **FOLLOW)
    assert f"follow: at {prefix}" in text_status.stdout
    http = Http(create_app(followed))
    metrics = http.get("/metrics").text
    assert f"summarizer_follow_changes_total {float(follow['changes'])}" in metrics
    assert "summarizer_follow_lag_seconds " in metrics and "summarizer_follow_error 0.0" in metrics
    health = http.get("/api/health").json()["data"]
    assert health["follow"]["position"] == follow["position"]


# per engine: the setting that turns the change stream on, whether its value does, what --check says of it,
# and the tables init would have created
SHARED_SERVER_LACKS = {
    "mysql": ("SELECT @@log_bin", lambda value: bool(value),
              ("log_bin is 0, following needs 1", "binlog_format"), "SHOW TABLES"),
    "postgresql": ("SHOW wal_level", lambda value: value == "logical",
                   ("wal_level is replica", "ALTER SYSTEM SET wal_level = logical"),
                   "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"),
}


def test_check_names_what_the_shared_server_lacks(server_url, tmp_path):
    """The shared test servers have no change stream (MariaDB: no binary log; PostgreSQL: wal_level =
    replica): --check and init say what is missing and how to set it, and init creates nothing."""
    setting, on, said, tables = SHARED_SERVER_LACKS[server_url.get_backend_name()]
    app = make_app(server_url, tmp_path)
    try:  # closed: an engine left to the garbage collector makes psycopg warn in whatever test runs then
        with app.dialect.engine.connect() as conn:
            if on(conn.execute(text(setting)).scalar()):
                pytest.skip(f"the shared server has its change stream on ({setting})")
        checked = invoke(server_url, "follow", "--check", **FOLLOW)
        assert checked.returncode == 1
        assert all(part in checked.stderr for part in said), checked.stderr
        init = invoke(server_url, "init", **FOLLOW)
        assert init.returncode == 1 and "Nothing was created" in init.stderr
        with app.dialect.engine.connect() as conn:
            assert conn.execute(text(tables)).all() == []
    finally:
        app.close()
