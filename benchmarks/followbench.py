"""Benchmark ``summarizer follow``: throughput, commit-to-visible lag, and what it costs the writers.

On one MariaDB/MySQL database with the binary log on, or one PostgreSQL database with ``wal_level =
logical`` (``--url``; or ``--own-server [mariadb|postgresql]``, which starts a server of its own with
the change stream on, from the repository's ``tests/servers.py``):

1. synthetic source data (``synth.py``), on PostgreSQL what ``follow --check`` asks for (REPLICA
   IDENTITY FULL, the publication), ``init --source-indexes`` and the handover refresh;
2. **writers alone**: writers commit raw changes (inserts, value updates, updates that move rows
   between months; 100 transactions a second, rate/100 rows each) at ``--writer-rate`` changes per second
   for ``--seconds``
   with no follower running: each commit's latency, p50 and p99;
3. **sustained throughput**: ``--backlog`` raw changes are written while no follower runs, then a
   ``summarizer follow`` process is started and timed until it has applied them all: changes per second;
4. **lag at 100, 1,000 and 10,000 changes per second** (``--rates``): the writers write at that rate for
   ``--seconds`` with the follower process running; ten times a second a probe row is committed, and a
   poller on tier 1 notes when its group appears: commit-to-visible lag, p50 and p99. The writers'
   commit latency at ``--writer-rate`` with the follower is reported beside step 2's.

It ends with the tiers compared with a fresh full refresh. It replaces the source tables: point it at a
scratch database.

    python -m benchmarks.followbench --own-server --json-out follow.json
    python -m benchmarks.followbench --own-server postgresql --json-out followpg.json
    python -m benchmarks.followbench --url mysql+pymysql://root@127.0.0.1:3307/bench_follow --rows 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from summarizer import Summarizer, load_config
from summarizer.follow.pgslot import PgSlotStream
from summarizer.follow.streams import open_stream
from summarizer.synth import Shape, create_source_tables, generate

FOLLOW_SETTINGS = {"SUMMARIZER_FOLLOW_ENABLED": "true"}
PROBE_ASIN = "ZZPROBE"
PROBE_MONTH = dt.date(2023, 1, 1)
PROBES_PER_SECOND = 10
TRANSACTIONS_PER_SECOND = 100  # the writers' commits per second; each changes rate / 100 rows (at least one)


@dataclass
class Lags:
    rate: int
    achieved_rate: float
    probes: int
    p50_s: float
    p99_s: float
    max_s: float


@dataclass
class Report:
    load_average: tuple[float, float, float]
    rows: int
    writers_alone_p50_ms: float = 0.0
    writers_alone_p99_ms: float = 0.0
    writers_with_follower_p50_ms: float = 0.0
    writers_with_follower_p99_ms: float = 0.0
    writer_rate: int = 0
    backlog_changes: int = 0
    sustained_changes_per_second: float = 0.0
    lags: list[Lags] = field(default_factory=list)
    exact_after: bool = False


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


class Writers:
    """Raw changes at a given rate from one thread: small multi-row transactions, each commit timed."""

    def __init__(self, engine: Engine, rows: int = 10, seed: int = 1) -> None:
        self.engine, self.seed, self.rows = engine, seed, rows
        self.latencies: list[float] = []
        self.changes = 0
        with engine.connect() as conn:
            self.max_id = int(conn.execute(text("SELECT MAX(id) FROM financials")).scalar() or 0)

    def run(self, rate: float, seconds: float, stop: threading.Event | None = None) -> None:
        start = time.monotonic()
        with self.engine.connect() as conn:
            step = 0
            while time.monotonic() - start < seconds and not (stop and stop.is_set()):
                began = time.perf_counter()
                self._transaction(conn, step)
                self.latencies.append(time.perf_counter() - began)
                step += 1
                self.changes += self.rows
                time.sleep(max(0.0, start + self.changes / rate - time.monotonic()))

    def _transaction(self, conn: Any, step: int) -> None:
        kind = step % 3
        if kind == 0:
            rows = ", ".join(f"('B{(step * 7 + i) % 5000:08d}', 'US', '2024-0{1 + i % 9}-01', 'revenue', {i}.25)"
                             for i in range(self.rows))
            conn.execute(text(f"INSERT INTO financials (asin, marketplace, month, metric, value) VALUES {rows}"))
            self.max_id += self.rows
        else:
            low = 1 + (step * 7919) % max(1, self.max_id - self.rows)
            later = ("CAST(month + INTERVAL '1 month' AS date)" if conn.dialect.name == "postgresql"
                     else "DATE_ADD(month, INTERVAL 1 MONTH)")
            change = "value = value + 1" if kind == 1 else f"month = {later}"
            conn.execute(text(f"UPDATE financials SET {change} WHERE id BETWEEN :lo AND :hi"),
                         {"lo": low, "hi": low + self.rows - 1})
        conn.commit()


def follower_process(url: URL, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUMMARIZER_DATABASE_URL": url.render_as_string(hide_password=False), **FOLLOW_SETTINGS}
    return subprocess.Popen([sys.executable, "-m", "summarizer", "follow"], cwd=workdir, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_follower(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_caught_up(app: Summarizer, engine: Engine, timeout: float = 600.0) -> None:
    """Until the follower's position is the binary log's end as far as the source tables go (a probe shows)."""
    marker = f"m{time.time_ns()}"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          "VALUES (:a, 'US', :m, :k, 0)"), {"a": PROBE_ASIN, "m": PROBE_MONTH, "k": marker})
    visible(app, engine, marker, timeout)


def visible(app: Summarizer, engine: Engine, metric: str, timeout: float) -> float:
    tier = app.schema.live().asin.name
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            found = conn.execute(text(f"SELECT 1 FROM {tier} WHERE month = :m AND asin = :a AND metric = :k"),
                                 {"m": PROBE_MONTH, "a": PROBE_ASIN, "k": metric}).first()
            conn.commit()
            if found:
                return time.monotonic()
            time.sleep(0.01)
    raise TimeoutError(f"probe {metric} not visible after {timeout}s: the follower is not keeping up")


def measure_lags(app: Summarizer, engine: Engine, rate: int, seconds: float) -> Lags:
    """Writers at ``rate`` while probes are committed and watched for in tier 1."""
    stop = threading.Event()
    writers = Writers(engine, rows=max(1, rate // TRANSACTIONS_PER_SECOND), seed=rate)
    thread = threading.Thread(target=writers.run, args=(rate, seconds, stop))
    committed: dict[str, float] = {}
    seen: dict[str, float] = {}
    tier = app.schema.live().asin.name

    def poll() -> None:
        with engine.connect() as conn:
            while not stop.is_set() or len(seen) < len(committed):
                rows = conn.execute(text(f"SELECT metric FROM {tier} WHERE month = :m AND asin = :a"),
                                    {"m": PROBE_MONTH, "a": PROBE_ASIN}).scalars().all()
                conn.commit()
                now = time.monotonic()
                for metric in rows:
                    seen.setdefault(metric, now)
                time.sleep(0.005)
    poller = threading.Thread(target=poll)
    thread.start()
    poller.start()
    start = time.monotonic()
    with engine.connect() as conn:
        n = 0
        while time.monotonic() - start < seconds:
            metric = f"p{rate}_{n}"
            conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                              "VALUES (:a, 'US', :m, :k, 1)"), {"a": PROBE_ASIN, "m": PROBE_MONTH, "k": metric})
            conn.commit()
            committed[metric] = time.monotonic()
            n += 1
            time.sleep(max(0.0, start + n / PROBES_PER_SECOND - time.monotonic()))
    thread.join()
    stop.set()
    poller.join(timeout=600)
    lags = [seen[m] - t for m, t in committed.items() if m in seen]
    return Lags(rate=rate, achieved_rate=round(writers.changes / seconds, 1), probes=len(lags),
                p50_s=round(percentile(lags, 0.5), 3), p99_s=round(percentile(lags, 0.99), 3),
                max_s=round(max(lags), 3) if lags else float("nan"))


def tiers_snapshot(app: Summarizer) -> list[Any]:
    """Every tier row but its refreshed_at (the last column)."""
    with app.dialect.engine.connect() as conn:
        return [sorted(tuple(r)[:-1] for r in conn.execute(text(f"SELECT * FROM {t.name}")))
                for t in app.schema.live()]


def run(url: URL, args: argparse.Namespace) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="followbench-"))
    env = {"SUMMARIZER_DATABASE_URL": url.render_as_string(hide_password=False), **FOLLOW_SETTINGS}
    app = Summarizer(load_config(workdir / "absent.ini", env))
    engine = app.dialect.engine
    report = Report(load_average=os.getloadavg(), rows=args.rows, writer_rate=args.writer_rate)
    with engine.connect() as conn:
        create_source_tables(conn, drop=True)
        generate(conn, Shape(rows=args.rows, asins=max(1000, args.rows // 200), brands=200, categories=20))
    if engine.dialect.name == "postgresql":  # the statements follow --check names, run as the tables' owner
        stream = open_stream(app.dialect, app.config, app.source)
        assert isinstance(stream, PgSlotStream)
        stream.prepare_source()
    app.init(source_indexes=True)
    app.refresh()
    rows = max(1, args.writer_rate // TRANSACTIONS_PER_SECOND)
    alone = Writers(engine, rows=rows)
    alone.run(args.writer_rate, args.seconds)
    report.writers_alone_p50_ms = round(1000 * percentile(alone.latencies, 0.5), 2)
    report.writers_alone_p99_ms = round(1000 * percentile(alone.latencies, 0.99), 2)
    backlog = Writers(engine, rows=100, seed=7)
    backlog.run(1e9, 10**9, _after_changes(backlog, args.backlog))
    report.backlog_changes = backlog.changes + alone.changes
    follower = follower_process(url, workdir)
    try:
        started = time.monotonic()
        wait_caught_up(app, engine)
        report.sustained_changes_per_second = round(report.backlog_changes / (time.monotonic() - started), 1)
        with_follower = Writers(engine, rows=rows, seed=3)
        with_follower.run(args.writer_rate, args.seconds)
        report.writers_with_follower_p50_ms = round(1000 * percentile(with_follower.latencies, 0.5), 2)
        report.writers_with_follower_p99_ms = round(1000 * percentile(with_follower.latencies, 0.99), 2)
        for rate in args.rates:
            wait_caught_up(app, engine)
            report.lags.append(measure_lags(app, engine, rate, args.seconds))
            print(f"  rate {rate}/s: {report.lags[-1]}", file=sys.stderr)
        wait_caught_up(app, engine)
    finally:
        stop_follower(follower)
    followed = tiers_snapshot(app)
    app.refresh()
    report.exact_after = tiers_snapshot(app) == followed
    app.close()
    return report


def _after_changes(writers: Writers, changes: int) -> threading.Event:
    """An event that is set once ``writers`` made ``changes`` changes (checked from a watcher thread)."""
    done = threading.Event()

    def watch() -> None:
        while writers.changes < changes:
            time.sleep(0.05)
        done.set()
    threading.Thread(target=watch, daemon=True).start()
    return done


@contextlib.contextmanager
def own_server(kind: str) -> Iterator[URL]:
    """A server of our own with the change stream on, and a database ``bench_follow`` on it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import servers  # the repository's helper: a server of our own, stopped by its PID

    if kind == "postgresql":
        started = servers.postgres("-c", "wal_level=logical", "-c", "shared_buffers=256MB")
    else:
        started = servers.mariadb("--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL",
                                  "--binlog-row-metadata=FULL", "--server-id=1", "--innodb-buffer-pool-size=256M")
    with started as server:
        admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE bench_follow"))
        admin.dispose()
        yield server.url.set(database="bench_follow")


def render(report: Report) -> str:
    lines = [f"load average at start: {report.load_average[0]:.2f} {report.load_average[1]:.2f} "
             f"{report.load_average[2]:.2f}; {report.rows:,} raw rows",
             f"sustained: {report.sustained_changes_per_second:,.0f} raw changes/s applied "
             f"(a backlog of {report.backlog_changes:,})",
             f"writers at {report.writer_rate:,} changes/s, commit latency p50/p99: alone "
             f"{report.writers_alone_p50_ms} / {report.writers_alone_p99_ms} ms, with the follower "
             f"{report.writers_with_follower_p50_ms} / {report.writers_with_follower_p99_ms} ms"]
    lines += [f"lag at {lag.rate:,}/s (achieved {lag.achieved_rate:,.0f}/s, {lag.probes} probes): p50 {lag.p50_s} s, "
              f"p99 {lag.p99_s} s, max {lag.max_s} s" for lag in report.lags]
    lines.append(f"tiers equal to a fresh full refresh afterwards: {report.exact_after}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a scratch database on a server with its change stream on")
    where.add_argument("--own-server", nargs="?", const="mariadb", choices=["mariadb", "postgresql"],
                       help="start a server of its own (tests/servers.py): mariadb (the default) or postgresql")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic raw rows to start from")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each measured phase writes")
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 1000, 10000], help="changes/s to measure lag at")
    parser.add_argument("--writer-rate", type=int, default=1000, help="changes/s of the writer-latency phases")
    parser.add_argument("--backlog", type=int, default=100_000, help="changes written before the throughput phase")
    parser.add_argument("--json-out", help="write the report as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(own_server(args.own_server)) if args.own_server else make_url(args.url)
        report = run(url, args)
    print(render(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(asdict(report), indent=2) + "\n")


if __name__ == "__main__":
    main()
