"""Benchmark of the PostgreSQL change stream (summarizer/follow/pgslot.py): decoding rate and commit-to-yield lag.

On a scratch database of a server with ``wal_level = logical`` (the user must have REPLICATION), it
(re)creates the source tables and, for each --changes N:

  decode    N raw changes (60 % inserts, 25 % updates moving value and month, 15 % deletes, 100 per
            transaction) are committed first; then the time the stream takes to yield all N from the
            position before them (changes per second). The same backlog is also read the other way
            the slot can be read, with SQL (pg_logical_slot_peek_binary_changes through the same decoder),
            and the server's time for an SQL poll is measured: each poll decodes again from the slot's
            restart point, so its cost grows with what the follower has not acknowledged yet.
  lag       a writer commits single-row inserts at --rate per second for --seconds; the reader yields
            them as a follower reads (batches of up to 1,000 changes or 0.2 s) and each
            transaction's lag is the time from its commit (the server's timestamp) to its yield.

    python -m benchmarks.followpg --url postgresql+psycopg://postgres@127.0.0.1:5433/bench_followpg \\
        --changes 10000 100000 --rate 1000 --seconds 20 --json-out followpg.json

Replaces the tables financials, products, brands and categories of that database: point it at a scratch one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from summarizer.config import load_config
from summarizer.follow import pgcatalog
from summarizer.follow.pgdecode import TransactionDecoder
from summarizer.follow.pgslot import PgSlotStream
from summarizer.model import source_from_config

TABLES = [
    "DROP TABLE IF EXISTS financials, products, brands, categories",
    "CREATE TABLE financials (id bigserial PRIMARY KEY, asin varchar(16) NOT NULL, marketplace varchar(8) NOT NULL, "
    "month date NOT NULL, metric varchar(32) NOT NULL, value numeric(18,4) NOT NULL)",
    "CREATE TABLE products (asin varchar(16) PRIMARY KEY, brand_id bigint)",
    "CREATE TABLE brands (brand_id bigint PRIMARY KEY, category_id bigint, name varchar(100))",
    "CREATE TABLE categories (category_id bigint PRIMARY KEY, name varchar(100))",
]
PER_TRANSACTION = 100
BATCH_SECONDS = 0.2  # the lag test's reader ends a batch after this long, or after 1,000 changes
SLOT_PREFIX = "bench_followpg"


def setup(engine: Engine) -> PgSlotStream:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                          "WHERE database = current_database() AND NOT active"))
        conn.execute(text("DROP PUBLICATION IF EXISTS bench_followpg"))
        for statement in TABLES:
            conn.execute(text(statement))
    stream = PgSlotStream(engine, source_from_config(load_config(Path("/nonexistent.ini"), environ={})),
                          slot_prefix=SLOT_PREFIX, publication="bench_followpg")
    stream.prepare_source()
    return stream


def write_changes(engine: Engine, total: int) -> float:
    """``total`` raw changes, PER_TRANSACTION to a transaction: 60 inserts, 25 updates, 15 deletes of each 100."""
    started = time.perf_counter()
    with engine.connect() as conn:
        base = int(conn.execute(text("SELECT coalesce(max(id), 0) FROM financials")).scalar_one())
        for done in range(0, total, PER_TRANSACTION):
            conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                              "SELECT 'B' || (g % 997), 'US', DATE '2024-01-01' + (g % 12) * INTERVAL '1 month', "
                              "'revenue', g * 1.0001 FROM generate_series(1, 60) g"))
            low = base + done // PER_TRANSACTION * 60 + 1  # the 60 rows just inserted
            conn.execute(text("UPDATE financials SET value = value + 0.0001, month = DATE '2024-06-01' "
                              "WHERE id BETWEEN :low AND :low + 24"), {"low": low})
            conn.execute(text("DELETE FROM financials WHERE id BETWEEN :low + 25 AND :low + 39"), {"low": low})
            conn.commit()
    return time.perf_counter() - started


def decode_rate(engine: Engine, stream: PgSlotStream, total: int) -> dict[str, Any]:
    since = stream.current_position()
    slot = since.split("@")[0]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # the SQL reader's own slot
        conn.execute(text("SELECT pg_create_logical_replication_slot('bench_followpg_sql', 'pgoutput')"))
    write_seconds = write_changes(engine, total)
    started, count = time.perf_counter(), 0
    for transaction in stream.read(since, max_changes=total, wait=2.0):
        count += len(transaction.changes)
    stream_seconds = time.perf_counter() - started
    stream.close()
    sql = _sql_rates(engine, total)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_drop_replication_slot('bench_followpg_sql')"))
        conn.execute(text("SELECT pg_drop_replication_slot(:slot)"), {"slot": slot})
    return {"changes": count, "write_seconds": write_seconds, "stream_seconds": stream_seconds,
            "stream_changes_per_second": count / stream_seconds, **sql}


def _sql_rates(engine: Engine, total: int) -> dict[str, Any]:
    """The same backlog read with SQL through the same decoder; and what one poll costs the server.

    A poll decodes from the slot's restart point, skipping what came before its acknowledged position;
    a follower that polls before it has acknowledged a backlog pays for decoding that backlog again."""
    peek = ("SELECT {what} FROM pg_logical_slot_peek_binary_changes('bench_followpg_sql', NULL, {upto}, "
            "'proto_version', '1', 'publication_names', 'bench_followpg')")
    with engine.connect() as conn:
        tables, _ = pgcatalog.source_tables(conn, ["financials", "products", "brands", "categories"])
        started = time.perf_counter()
        conn.execute(text(peek.format(what="count(*)", upto="1"))).scalar_one()
        first_poll = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(text(peek.format(what="count(*)", upto="NULL"))).scalar_one()
        backlog_poll = time.perf_counter() - started
        decoder, count = TransactionDecoder(tables), 0
        started = time.perf_counter()
        for (data,) in conn.execution_options(stream_results=True, yield_per=5000).execute(
                text(peek.format(what="data", upto="NULL"))):
            decoded = decoder.feed(bytes(data))
            if decoded is not None:
                count += len(decoded.changes)
        sql_seconds = time.perf_counter() - started
    assert count == total, (count, total)
    return {"sql_seconds": sql_seconds, "sql_changes_per_second": count / sql_seconds,
            "sql_first_transaction_poll_seconds": first_poll, "sql_whole_backlog_poll_seconds": backlog_poll}


def lag(engine: Engine, stream: PgSlotStream, rate: float, seconds: float) -> dict[str, Any]:
    since = stream.current_position()
    done, written = threading.Event(), [0]

    def writer() -> None:
        with engine.connect() as conn:
            started = time.perf_counter()
            while not done.is_set():
                due = started + written[0] / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                                  "VALUES ('L', 'US', '2024-01-01', 'revenue', 1.2345)"))
                conn.commit()
                written[0] += 1

    thread = threading.Thread(target=writer)
    lags: list[float] = []
    thread.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            batch_ends = time.monotonic() + BATCH_SECONDS
            for transaction in stream.read(since, max_changes=1000, wait=BATCH_SECONDS):
                now = time.time()
                if transaction.committed_at is not None:
                    lags.append(now - _epoch(transaction.committed_at))
                since = transaction.position
                if time.monotonic() > batch_ends:  # a follower ends its batch on time as well as on size
                    break
    finally:
        done.set()
        thread.join()
        stream.close()
    ordered = sorted(lags)
    return {"rate_asked": rate, "rate_written": written[0] / seconds, "transactions": len(lags),
            "p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
            "max_ms": 1000 * ordered[-1]}


def _epoch(naive_utc: Any) -> float:
    import datetime as dt
    return float(naive_utc.replace(tzinfo=dt.UTC).timestamp())


def run(url: str, changes: Sequence[int], rate: float, seconds: float) -> dict[str, Any]:
    engine = create_engine(make_url(url), poolclass=NullPool)
    try:
        stream = setup(engine)
        report: dict[str, Any] = {"decode": [decode_rate(engine, stream, n) for n in changes]}
        report["lag"] = lag(engine, stream, rate, seconds)
        report["load_average"] = os.getloadavg()
        with engine.connect() as conn:
            report["server"] = {name: conn.execute(text(f"SHOW {name}")).scalar_one()
                                for name in ("server_version", "fsync", "synchronous_commit", "wal_level")}
        return report
    finally:
        engine.dispose()


def render(report: dict[str, Any]) -> str:
    lines = [f"server {report['server']}; load average {', '.join(f'{x:.2f}' for x in report['load_average'])}"]
    for d in report["decode"]:
        lines.append(f"decode {d['changes']:>8,} changes: stream {d['stream_changes_per_second']:>9,.0f}/s "
                     f"({d['stream_seconds']:.2f} s), SQL peek {d['sql_changes_per_second']:>9,.0f}/s; an SQL poll's "
                     f"server time: {1000 * d['sql_first_transaction_poll_seconds']:.0f} ms for the first transaction, "
                     f"{1000 * d['sql_whole_backlog_poll_seconds']:.0f} ms over the backlog; written in "
                     f"{d['write_seconds']:.2f} s")
    g = report["lag"]
    lines.append(f"lag at {g['rate_written']:,.0f} commits/s ({g['transactions']:,} transactions): p50 "
                 f"{g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, max {g['max_ms']:.1f} ms")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a scratch database (wal_level = logical)")
    parser.add_argument("--changes", type=int, nargs="+", default=[10_000, 100_000], help="backlogs to decode")
    parser.add_argument("--rate", type=float, default=1000.0, help="commits per second of the lag test")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the lag test")
    parser.add_argument("--json-out", type=Path, default=None, help="write the report as JSON to this file")
    args = parser.parse_args(argv)
    report = run(args.url, args.changes, args.rate, args.seconds)
    print(render(report))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
