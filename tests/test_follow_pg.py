"""The PostgreSQL change stream (summarizer/follow/pgslot.py) on a cluster of the module's own with wal_level=logical.

The shared server runs with wal_level=replica, so it serves one test only: that ``problems()`` names
that setting. Everything else runs on :func:`tests.servers.postgres`, one cluster for the module and
one database per test, whose source tables live in schema ``shop`` (reached through the session's
search_path), beside a ``public.financials`` and a tier-like table the stream must never report.
Expected changes are written out by hand; the handover test checks the snapshot and the stream
against the table's own count and sum at the end. The last test runs the stream's benchmark
(benchmarks/followpg.py) at a tiny size, so that it cannot rot; its figures are not asserted.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from benchmarks import followpg
from summarizer.config import load_config
from summarizer.dialects import PostgresDialect
from summarizer.follow.pgoutput import lsn_value
from summarizer.follow.pgslot import PgSlotStream
from summarizer.follow.stream import Op, SchemaChanged, StreamGone, Transaction
from summarizer.model import source_from_config

from . import servers

pytestmark = pytest.mark.slow  # a server of the module's own

SOURCE_DDL = [
    "CREATE SCHEMA shop",
    "CREATE TABLE shop.financials (id bigserial PRIMARY KEY, asin varchar(16) NOT NULL, marketplace varchar(8) "
    "NOT NULL, month date NOT NULL, metric varchar(32) NOT NULL, value numeric(40,10))",
    "CREATE TABLE shop.products (asin varchar(16) PRIMARY KEY, brand_id bigint)",
    "CREATE TABLE shop.brands (brand_id bigint PRIMARY KEY, category_id bigint, name varchar(100))",
    "CREATE TABLE shop.categories (category_id bigint PRIMARY KEY, name varchar(100))",
    # the same name in another schema, and a table the follower would write: never reported
    "CREATE TABLE public.financials (id int, value numeric)",
    "CREATE TABLE shop.financials_summary (month date, value numeric)",
]
BIG = Decimal("123456789012345678901234567890.1234567891")  # 30 digits before the point, 10 after
WAIT = 0.3


@pytest.fixture(scope="module")
def cluster() -> Iterator[servers.Server]:
    reason = servers.missing("postgres")
    if reason:
        pytest.skip(reason)
    with servers.postgres("-c", "wal_level=logical") as server:
        yield server


@pytest.fixture
def source_url(cluster: servers.Server) -> Iterator[URL]:
    """A fresh database on the cluster with the source tables in schema shop, which the search_path finds."""
    name = f"summarizer_f_{uuid.uuid4().hex[:10]}"
    admin = create_engine(cluster.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = cluster.url.set(database=name, query={"options": "-csearch_path=shop"})
    run(url, *SOURCE_DDL)
    yield url
    with admin.connect() as conn:  # a database with replication slots cannot be dropped
        conn.execute(text("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                          "WHERE database = :name AND active"), {"name": name})
        wait_until(lambda: not slots(conn, name, active=True))
        conn.execute(text("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                          "WHERE database = :name"), {"name": name})
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def engine(source_url: URL) -> Iterator[Engine]:
    made = create_engine(source_url, poolclass=NullPool)
    yield made
    made.dispose()


@pytest.fixture
def stream(engine: Engine) -> Iterator[PgSlotStream]:
    """A stream on prepared source tables (REPLICA IDENTITY FULL, the publication)."""
    made = new_stream(engine)
    made.prepare_source()
    yield made
    made.close()


def new_stream(engine: Engine, **options: Any) -> PgSlotStream:
    return PgSlotStream(engine, source_from_config(load_config(Path("/nonexistent.ini"), environ={})), **options)


def run(url_or_engine: URL | Engine, *statements: str) -> None:
    """The statements in one transaction."""
    engine = create_engine(url_or_engine, poolclass=NullPool) if isinstance(url_or_engine, URL) else url_or_engine
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def drain(stream: PgSlotStream, since: str, max_changes: int = 10**9) -> list[Transaction]:
    return list(stream.read(since, max_changes=max_changes, wait=WAIT))


def changes(transactions: Sequence[Transaction]) -> list[list[tuple[Any, ...]]]:
    return [[(c.table, c.op, c.before, c.after) for c in t.changes] for t in transactions]


def slots(conn: Any, database: str, *, active: bool | None = None) -> list[str]:
    rows = conn.execute(text("SELECT slot_name, active FROM pg_replication_slots WHERE database = :db ORDER BY 1"),
                        {"db": database}).all()
    return [name for name, on in rows if active is None or on == active]


def confirmed(engine: Engine, position: str) -> int:
    slot = position.split("@")[0]
    with engine.connect() as conn:
        return lsn_value(conn.execute(text("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                           "WHERE slot_name = :slot"), {"slot": slot}).scalar_one())


def lsn(position: str) -> int:
    return lsn_value(position.split("@")[1].split(":")[0])


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def row(id_: int, asin: str, market: str, month: str, metric: str, value: Decimal | None) -> dict[str, Any]:
    return {"id": id_, "asin": asin, "marketplace": market, "month": dt.date.fromisoformat(month), "metric": metric,
            "value": value}


def test_each_committed_change_comes_whole_and_exact_in_commit_order(stream: PgSlotStream, engine: Engine) -> None:
    assert stream.problems() == []
    start = stream.current_position()
    run(engine, "INSERT INTO financials (asin, marketplace, month, metric, value) VALUES "
                f"('A1', 'US', '2024-01-01', 'revenue', {BIG}), ('A2', 'DE', '2024-02-01', 'units', NULL)",
        "INSERT INTO products VALUES ('A1', 7), ('A2', NULL)")
    run(engine, "UPDATE financials SET month = '2024-03-01', asin = 'A3', marketplace = 'UK' WHERE id = 1",
        "UPDATE financials SET value = -0.0001 WHERE id = 2", "DELETE FROM products WHERE asin = 'A2'",
        "INSERT INTO brands VALUES (7, 100, 'brand 7')", "INSERT INTO categories VALUES (100, 'cat 100')")
    with engine.connect() as conn:  # rolled back: never seen
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          "VALUES ('A9', 'US', '2024-01-01', 'revenue', 1)"))
        conn.execute(text("UPDATE financials SET value = 5 WHERE id = 2"))
        conn.rollback()
    run(engine, "INSERT INTO public.financials VALUES (1, 1)",
        "INSERT INTO financials_summary VALUES ('2024-01-01', 1)")
    run(engine, "DELETE FROM financials WHERE id = 1", "INSERT INTO public.financials VALUES (2, 2)",
        "UPDATE brands SET category_id = 101 WHERE brand_id = 7")

    got = drain(stream, start)

    first, second = row(1, "A1", "US", "2024-01-01", "revenue", BIG), row(2, "A2", "DE", "2024-02-01", "units", None)
    moved = row(1, "A3", "UK", "2024-03-01", "revenue", BIG)
    assert changes(got) == [
        [("financials", Op.INSERT, None, first), ("financials", Op.INSERT, None, second),
         ("products", Op.INSERT, None, {"asin": "A1", "brand_id": 7}),
         ("products", Op.INSERT, None, {"asin": "A2", "brand_id": None})],
        [("financials", Op.UPDATE, first, moved),
         ("financials", Op.UPDATE, second, {**second, "value": Decimal("-0.0001")}),
         ("products", Op.DELETE, {"asin": "A2", "brand_id": None}, None),
         ("brands", Op.INSERT, None, {"brand_id": 7, "category_id": 100, "name": "brand 7"}),
         ("categories", Op.INSERT, None, {"category_id": 100, "name": "cat 100"})],
        [("financials", Op.DELETE, moved, None),
         ("brands", Op.UPDATE, {"brand_id": 7, "category_id": 100, "name": "brand 7"},
          {"brand_id": 7, "category_id": 101, "name": "brand 7"})],
    ]
    value = got[0].changes[0].after["value"]  # type: ignore[index]
    assert type(value) is Decimal and str(value) == str(BIG)  # exact, never through a float
    ends = [lsn(t.position) for t in got]
    assert ends == sorted(set(ends)) and ends[0] > lsn(start)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert all(t.committed_at is not None and abs((now - t.committed_at).total_seconds()) < 60 for t in got)
    assert drain(stream, got[-1].position) == [] and stream.waiting(got[-1].position) is not None


def test_a_restarted_reader_yields_exactly_what_follows_the_stored_position(stream: PgSlotStream,
                                                                          engine: Engine) -> None:
    start = stream.current_position()
    insert_rows(engine, *(f"A{n}" for n in range(10)))
    batches = [list(stream.read(start, max_changes=3, wait=WAIT))]  # batches of about 3 changes, one session
    while batches[-1]:
        batches.append(list(stream.read(batches[-1][-1].position, max_changes=3, wait=WAIT)))
    assert [len(b) for b in batches] == [3, 3, 3, 1, 0]
    everything = [t for b in batches for t in b]
    assert asins(everything) == [[f"A{n}"] for n in range(10)]
    stored = everything[-1].position
    wait_until(lambda: confirmed(engine, stored) == lsn(stored))  # the last read started there: acknowledged
    stream.close()

    # The follower commits the next batch's position, then dies before its next read: the slot lags behind
    # the stored position, and a new reader must start after that position, not at the slot's.
    insert_rows(engine, "B1", "B2")
    lagging = new_stream(engine)
    batch = drain(lagging, stored)
    assert asins(batch) == [["B1"], ["B2"]]
    lagging.close()
    insert_rows(engine, "C1")
    restarted = new_stream(engine)
    assert asins(drain(restarted, batch[-1].position)) == [["C1"]]
    wait_until(lambda: confirmed(engine, stored) == lsn(batch[-1].position))
    with pytest.raises(StreamGone, match="past the stored position"):  # older than what was acknowledged: gone
        drain(new_stream(engine), everything[4].position)
    restarted.close()


def insert_rows(engine: Engine, *asins: str) -> None:
    """One transaction per row."""
    for n, asin in enumerate(asins):
        run(engine, f"INSERT INTO financials (asin, marketplace, month, metric, value) "
                    f"VALUES ('{asin}', 'US', '2024-01-01', 'revenue', {n}.0001)")


def asins(transactions: Sequence[Transaction]) -> list[list[str]]:
    return [[str((c.after or c.before or {})["asin"]) for c in t.changes] for t in transactions]


def test_a_reader_whose_connection_was_killed_resumes_where_it_was(stream: PgSlotStream, engine: Engine) -> None:
    start = stream.current_position()
    run(engine, "INSERT INTO products VALUES ('P1', 1)")
    first = drain(stream, start)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                          "WHERE active AND database = current_database()"))
    wait_until(lambda: not confirmed_active(engine))
    run(engine, "INSERT INTO products VALUES ('P2', 2)")
    with pytest.raises(DBAPIError) as lost:
        drain(stream, first[-1].position)
    assert PostgresDialect(engine).is_transient(lost.value)  # the follower retries it, as a refresh would
    assert changes(drain(stream, first[-1].position)) == [[("products", Op.INSERT, None,
                                                            {"asin": "P2", "brand_id": 2})]]


def confirmed_active(engine: Engine) -> bool:
    """Is a slot of the test's database streamed now?"""
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT bool_or(active) FROM pg_replication_slots "
                                      "WHERE database = current_database()")).scalar())


READER = """
import sys
from pathlib import Path
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from summarizer.config import load_config
from summarizer.follow.pgslot import PgSlotStream
from summarizer.model import source_from_config
stream = PgSlotStream(create_engine(sys.argv[1], poolclass=NullPool),
                      source_from_config(load_config(Path("/nonexistent.ini"), environ={})))
since = sys.argv[2]
while True:  # as a follower would: each position read is stored before the next read starts from it
    for transaction in stream.read(since, max_changes=1, wait=30):
        since = transaction.position
        print(since, flush=True)
"""


def test_a_reader_killed_with_sigkill_is_replaced_without_loss_or_duplicate(stream: PgSlotStream, engine: Engine,
                                                                           source_url: URL) -> None:
    start = stream.current_position()
    stream.close()
    url = source_url.render_as_string(hide_password=False)
    printed: list[str] = []
    written: list[str] = []
    done = threading.Event()

    def writer() -> None:  # commits go on while the reader is killed
        while not done.is_set() and len(written) < 2000:
            written.append(f"K{len(written):04d}")
            insert_rows(engine, written[-1])

    with subprocess.Popen([sys.executable, "-c", READER, url, start], stdout=subprocess.PIPE, text=True) as child:
        pump = threading.Thread(target=lambda: printed.extend(line.strip() for line in child.stdout or ()))
        pump.start()
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            wait_until(lambda: len(printed) >= 40, timeout=30)
        finally:
            child.kill()  # SIGKILL, mid-stream: its WAL sender learns of it only from the closed socket
            child.wait()
            pump.join()
            done.set()
            thread.join()
    successor = new_stream(engine)
    rest = drain(successor, printed[-1])  # at once: the slot may still look taken for a moment
    successor.close()
    assert len(printed) < len(written) and [a for [a] in asins(rest)] == written[len(printed):]


def test_a_slot_another_reader_holds_is_waited_for_then_refused(stream: PgSlotStream, engine: Engine) -> None:
    start = stream.current_position()
    run(engine, "INSERT INTO products VALUES ('P1', 1)")
    position = drain(stream, start)[-1].position  # this reader keeps the slot
    second = new_stream(engine)
    second.busy_seconds = 0.5
    with pytest.raises(DBAPIError, match="is active for PID"):
        drain(second, position)
    second.busy_seconds = 10.0
    threading.Timer(0.5, stream.close).start()  # the first one lets go while the second waits
    run(engine, "INSERT INTO products VALUES ('P2', 2)")
    assert asins(drain(second, position)) == [["P2"]]
    second.close()


def test_a_snapshot_and_the_changes_after_its_position_make_the_final_table(stream: PgSlotStream,
                                                                           engine: Engine) -> None:
    before = stream.current_position()  # the slot the follower used until this full refresh
    done, committed = threading.Event(), [0]

    def writer() -> None:  # inserts, updates and deletes, committed one after another
        n = 0
        with engine.connect() as conn:
            while not done.is_set():
                n += 1
                conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) SELECT 'W' || g, "
                                  "'US', '2024-01-01', 'revenue', :v * g FROM generate_series(1, 3) g"),
                             {"v": Decimal(f"{n}.0001")})
                if n % 3 == 0:
                    conn.execute(text("UPDATE financials SET value = value + 1.00001 WHERE id = :id"), {"id": n})
                if n % 5 == 0:
                    conn.execute(text("DELETE FROM financials WHERE id = :id"), {"id": n + 1})
                conn.commit()
                committed[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until(lambda: committed[0] > 20)
        with engine.connect() as refresh:
            position = stream.snapshot_position(refresh)
            at_snapshot = committed[0]
            wait_until(lambda: committed[0] > at_snapshot + 20)  # the snapshot must not see these
            seen_count, seen_sum = refresh.execute(text("SELECT count(*), coalesce(sum(value), 0) "
                                                        "FROM financials")).one()
            refresh.rollback()
        wait_until(lambda: committed[0] > at_snapshot + 40)
    finally:
        done.set()
        thread.join()

    count, total = seen_count, seen_sum
    for transaction in drain(stream, position):
        for change in transaction.changes:
            for image, sign in ((change.before, -1), (change.after, 1)):
                if image is not None:
                    value: Any = image["value"]
                    count, total = count + sign, total + sign * value
    with engine.connect() as conn:
        final = conn.execute(text("SELECT count(*), sum(value) FROM financials")).one()
        assert slots(conn, engine.url.database or "") == [position.split("@")[0]]  # the old slot is dropped
    assert (count, total) == tuple(final) and count > seen_count > 0
    assert before.split("@")[0] != position.split("@")[0]


def test_an_exported_snapshot_serves_several_connections(stream: PgSlotStream, engine: Engine) -> None:
    run(engine, "INSERT INTO categories VALUES (1, 'one')")
    with stream.exported_snapshot() as snapshot, engine.connect() as one, engine.connect() as two:
        snapshot.begin(one)
        run(engine, "INSERT INTO categories VALUES (2, 'two')")
        snapshot.begin(two)  # imported after a commit, it still sees what the snapshot saw
        seen = [c.execute(text("SELECT array_agg(category_id) FROM categories")).scalar() for c in (one, two)]
    assert seen == [[1], [1]]
    assert changes(drain(stream, snapshot.position)) == [[("categories", Op.INSERT, None,
                                                           {"category_id": 2, "name": "two"})]]


def test_a_dropped_slot_is_stream_gone(stream: PgSlotStream, engine: Engine) -> None:
    start = stream.current_position()
    run(engine, "INSERT INTO products VALUES ('P1', 1)")
    position = drain(stream, start)[-1].position
    slot = position.split("@")[0]
    with engine.connect() as conn:  # as an administrator would: end its WAL sender, drop it
        conn.execute(text("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                          "WHERE active AND database = current_database()"))
        wait_until(lambda: not confirmed_active(engine))
        conn.execute(text("SELECT pg_drop_replication_slot(:slot)"), {"slot": slot})
        conn.commit()
    with pytest.raises(StreamGone, match=f"slot {slot} is gone"):
        drain(stream, position)
    with pytest.raises(StreamGone, match=f"slot {slot} is gone"):  # and from a new reader too
        drain(new_stream(engine), position)
    assert stream.waiting(position) is None


def test_a_changed_source_table_is_schema_changed_also_after_a_restart(stream: PgSlotStream, engine: Engine) -> None:
    start = stream.current_position()
    run(engine, "INSERT INTO products VALUES ('P1', 1)")
    first = drain(stream, start)  # the reader streams; then the table changes under it
    run(engine, "INSERT INTO products VALUES ('P2', 2)")
    run(engine, "ALTER TABLE financials ADD COLUMN note text")
    run(engine, "INSERT INTO financials (asin, marketplace, month, metric, value, note) "
                "VALUES ('A', 'US', '2024-01-01', 'revenue', 1, 'x')")
    got: list[Transaction] = []
    with pytest.raises(SchemaChanged, match=r"financials changed under the follower.*, now \(id int8, .*note text\)"):
        got.extend(stream.read(first[-1].position, max_changes=100, wait=WAIT))
    assert changes(got) == [[("products", Op.INSERT, None, {"asin": "P2", "brand_id": 2})]]  # what came before
    with pytest.raises(SchemaChanged, match="financials changed after the stored position"):
        drain(new_stream(engine), got[-1].position)  # after it the stream shows only the new columns


def test_a_renamed_source_table_is_schema_changed(stream: PgSlotStream, engine: Engine) -> None:
    start = stream.current_position()
    run(engine, "INSERT INTO products VALUES ('P1', 1)")
    first = drain(stream, start)
    run(engine, "ALTER TABLE products RENAME TO items", "INSERT INTO items VALUES ('P2', 2)")
    with pytest.raises(SchemaChanged, match="products was renamed to shop.items"):
        drain(stream, first[-1].position)


def test_a_truncated_source_table_cannot_be_followed_row_by_row(stream: PgSlotStream, engine: Engine) -> None:
    start = stream.current_position()
    run(engine, "TRUNCATE financials_summary")  # not a source table: nothing to say
    run(engine, "TRUNCATE products")
    with pytest.raises(StreamGone, match="products was truncated"):
        drain(stream, start)


def test_an_idle_reader_moves_past_other_tables_wal(engine: Engine) -> None:
    stream = new_stream(engine, heartbeat_bytes=2**20)
    stream.prepare_source()
    start = stream.current_position()
    run(engine, "INSERT INTO financials_summary SELECT '2024-01-01', g FROM generate_series(1, 40000) g")  # > 1 MiB
    beat = drain(stream, start)
    assert [t.changes for t in beat] == [()] and lsn(beat[0].position) - lsn(start) > 2**20
    assert drain(stream, beat[0].position) == []
    wait_until(lambda: confirmed(engine, start) == lsn(beat[0].position))  # the server may release that WAL now
    stream.close()


def test_problems_name_the_replica_identity_and_the_publication_until_prepared(engine: Engine) -> None:
    stream = new_stream(engine)
    found = stream.problems()
    assert [p.split(":")[-1].strip() for p in found] == [
        *(f"ALTER TABLE shop.{t} REPLICA IDENTITY FULL" for t in ("financials", "products", "brands", "categories")),
        "CREATE PUBLICATION summarizer_follow FOR TABLE shop.financials, shop.products, shop.brands, shop.categories"]
    assert stream.setup_statements() == [p.split(":")[-1].strip() for p in found]
    with engine.connect() as conn:  # nothing was changed by asking
        assert conn.execute(text("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = 'shop' AND c.relreplident = 'f'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM pg_publication")).scalar() == 0
    stream.prepare_source()
    assert stream.problems() == [] and stream.setup_statements() == []
    run(engine, "ALTER PUBLICATION summarizer_follow DROP TABLE brands")
    assert stream.problems() == ["publication summarizer_follow does not include shop.brands: as its owner run: "
                                 "ALTER PUBLICATION summarizer_follow ADD TABLE shop.brands"]


def test_a_partitioned_raw_table_is_followed_under_its_own_name(engine: Engine) -> None:
    run(engine, "DROP TABLE financials",
        "CREATE TABLE financials (id bigint, asin varchar(16), marketplace varchar(8), month date, metric varchar(32), "
        "value numeric(40,10)) PARTITION BY RANGE (month)",
        "CREATE TABLE financials_2024_01 PARTITION OF financials FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')",
        "CREATE TABLE financials_2024_02 PARTITION OF financials FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')")
    stream = new_stream(engine)
    assert stream.setup_statements() == [
        *(f"ALTER TABLE shop.{t} REPLICA IDENTITY FULL" for t in ("financials", "financials_2024_01",
                                                                  "financials_2024_02")),
        *(f"ALTER TABLE shop.{t} REPLICA IDENTITY FULL" for t in ("products", "brands", "categories")),
        "CREATE PUBLICATION summarizer_follow FOR TABLE shop.financials, shop.products, shop.brands, shop.categories "
        "WITH (publish_via_partition_root = true)"]
    stream.prepare_source()
    assert stream.problems() == []
    start = stream.current_position()
    run(engine, "INSERT INTO financials VALUES (1, 'A', 'US', '2024-01-01', 'revenue', 1.5)")
    run(engine, "UPDATE financials SET month = '2024-02-01' WHERE id = 1")  # to the other partition
    january, february = row(1, "A", "US", "2024-01-01", "revenue", Decimal("1.5")), \
        row(1, "A", "US", "2024-02-01", "revenue", Decimal("1.5"))
    assert changes(drain(stream, start)) == [[("financials", Op.INSERT, None, january)],
                                             [("financials", Op.DELETE, january, None),
                                              ("financials", Op.INSERT, None, february)]]
    stream.close()
    run(engine, "CREATE TABLE financials_2024_03 PARTITION OF financials FOR VALUES FROM ('2024-03-01') "
                "TO ('2024-04-01')")
    with pytest.raises(SchemaChanged, match="shop.financials_2024_03 has no REPLICA IDENTITY FULL"):
        drain(new_stream(engine), start)


def test_problems_name_a_missing_replication_attribute(stream: PgSlotStream, engine: Engine) -> None:
    user = f"u_{uuid.uuid4().hex[:8]}"
    run(engine, f"CREATE ROLE {user} LOGIN", f"GRANT USAGE ON SCHEMA shop TO {user}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {user}")
    try:
        limited = create_engine(engine.url.set(username=user), poolclass=NullPool)
        assert new_stream(limited).problems() == [
            f"the database user {user} has neither the REPLICATION attribute nor superuser, which reading a "
            f"replication slot needs: as a superuser run ALTER ROLE {user} REPLICATION"]
        run(engine, f"ALTER ROLE {user} REPLICATION")
        assert new_stream(limited).problems() == []
        limited.dispose()
    finally:
        run(engine, f"DROP OWNED BY {user}", f"DROP ROLE {user}")


def test_problems_on_a_server_without_logical_decoding_name_wal_level(postgres_url: URL) -> None:
    run(postgres_url, *SOURCE_DDL)
    engine = create_engine(postgres_url.set(query={"options": "-csearch_path=shop"}), poolclass=NullPool)
    found = new_stream(engine).problems()
    engine.dispose()
    assert found[0] == ("wal_level is replica: following reads logical decoding, which needs wal_level = logical; as a "
                        "superuser run ALTER SYSTEM SET wal_level = logical (or set wal_level = logical in "
                        "postgresql.conf) and restart PostgreSQL (it takes effect only at a restart)")


def test_the_benchmark_runs_end_to_end(cluster: servers.Server) -> None:
    name = f"summarizer_b_{uuid.uuid4().hex[:10]}"
    admin = create_engine(cluster.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        report = followpg.run(str(cluster.url.set(database=name)), [300], rate=50, seconds=0.5)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))  # the benchmark dropped its slots
        admin.dispose()
    assert report["decode"][0]["changes"] == 300 and report["lag"]["transactions"] > 0
    assert len(followpg.render(report).splitlines()) == 3


def test_problems_name_too_few_slots_and_wal_senders() -> None:
    with servers.postgres("-c", "wal_level=logical", "-c", "max_replication_slots=1", "-c", "max_wal_senders=0") as own:
        engine = create_engine(own.url, poolclass=NullPool)
        found = new_stream(engine).problems()
        engine.dispose()
    restart = "and restart PostgreSQL (it takes effect only at a restart)"
    assert found[:2] == [
        "max_replication_slots is 1 and 0 slot(s) belong to others: following needs 2 of its own (the one it follows, "
        f"one for a full refresh's handover); run ALTER SYSTEM SET max_replication_slots = 2 (or set it in "
        f"postgresql.conf) {restart}",
        "max_wal_senders is 0 and 0 are in use by others: following streams through a WAL sender of its own; run "
        f"ALTER SYSTEM SET max_wal_senders = 1 (or set it in postgresql.conf) {restart}"]
