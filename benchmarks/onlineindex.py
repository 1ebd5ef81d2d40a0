"""How long ``summarizer init --source-indexes`` takes on a live raw table, and what it costs its writers.

The covering index is dropped first (when it is there), then a writer inserts one raw row per
statement, each committed on its own as an application would, for ``--before`` seconds alone, for as
long as ``summarizer init --source-indexes`` (a real process) builds the index, and for ``--after``
seconds once it is there. The report gives the build's duration and the writer's insert latency
(p50, p99, worst) in each phase. The writer's rows go into the raw table's last month under an ASIN
no product has (``WRITER-BENCH``), and are deleted at the end through the new index.

    python -m benchmarks.onlineindex --url mysql+pymysql://root@127.0.0.1:3306/bench68

It changes the raw table: point it at a scratch database, as for ``benchmarks.bench``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Date, Index, MetaData, String, Table, delete, func, insert, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.types import Numeric

from summarizer.config import load_config
from summarizer.facade import Summarizer
from summarizer.model import covering_index_columns

from .measure import percentile

WRITER_ASIN = "WRITER-BENCH"


def raw_table(app: Summarizer) -> Table:
    source = app.source
    return Table(source.financials.name, MetaData(), Column("asin", String(32)), Column("marketplace", String(8)),
                 Column("month", Date), Column("metric", String(32)), Column("value", Numeric(18, 4)))


class Writer(threading.Thread):
    """Inserts one row per statement, autocommitted, every ``interval`` seconds; records each latency by phase."""

    def __init__(self, engine: Engine, table: Table, month: dt.date, interval: float) -> None:
        super().__init__(daemon=True)
        self.engine, self.table, self.month, self.interval = engine, table, month, interval
        self.phase = "before"
        self.latencies: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        statement = insert(self.table).values(asin=WRITER_ASIN, marketplace="US", month=self.month,
                                              metric="revenue", value=Decimal("1.0000"))
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    conn.execute(statement)
                except Exception as exc:  # noqa: BLE001 - a failed insert is a figure of the report, not a crash
                    self.errors.append(f"{self.phase}: {exc}")
                self.latencies[self.phase].append(time.perf_counter() - started)
                self.stop.wait(self.interval)


def phase_figures(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"inserts": 0}
    return {"inserts": len(ms), "p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(ms[-1], 2)}


def drop_covering_index(app: Summarizer, table: Table) -> bool:
    columns = covering_index_columns(app.source)
    engine = app.dialect.engine
    dropped = False
    for found in inspect(engine).get_indexes(table.name):
        if list(found["column_names"]) == columns:
            Index(str(found["name"]), *(table.c[c] for c in columns)).drop(engine)
            dropped = True
    return dropped


def run(url: str, before: float, after: float, interval: float, echo: Any) -> dict[str, Any]:
    environ = {"SUMMARIZER_DATABASE_URL": url}
    app = Summarizer(load_config(os.devnull, environ))
    table = raw_table(app)
    engine = app.dialect.engine
    echo(f"dropped the covering index: {drop_covering_index(app, table)}")
    with engine.connect() as conn:
        raw_rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
        month = conn.execute(select(func.max(table.c.month))).scalar_one()
    writer = Writer(engine, table, month, interval)
    writer.start()
    time.sleep(before)
    writer.phase = "during"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")} | environ
    command = [sys.executable, "-m", "summarizer", "--config", os.devnull, "init", "--source-indexes"]
    started = time.perf_counter()
    result = subprocess.run(command, env=child_env, capture_output=True, text=True)
    build = time.perf_counter() - started
    writer.phase = "after"
    time.sleep(after)
    writer.stop.set()
    writer.join()
    with engine.begin() as conn:
        written = conn.execute(delete(table).where(table.c.month == month, table.c.asin == WRITER_ASIN)).rowcount
    report = {"raw_rows": raw_rows, "init_exit": result.returncode, "init_seconds": round(build, 1),
              "init_output": (result.stdout + result.stderr)[-1500:], "writer_interval_s": interval,
              "writer_rows_deleted": written, "errors": writer.errors[:10],
              "writer": {phase: phase_figures(s) for phase, s in writer.latencies.items()}}
    app.close()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("SUMMARIZER_DATABASE_URL"), help="scratch database URL")
    parser.add_argument("--before", type=float, default=10.0, help="seconds the writer writes alone first")
    parser.add_argument("--after", type=float, default=10.0, help="seconds it writes once the index is there")
    parser.add_argument("--interval", type=float, default=0.01, help="pause between two inserts (seconds)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url: no database given (or set SUMMARIZER_DATABASE_URL)")
    make_url(args.url)
    report = run(args.url, args.before, args.after, args.interval, lambda line: print(line, file=sys.stderr))
    out = json.dumps(report, indent=2, default=str)
    print(out)
    if args.json_out:
        args.json_out.write_text(out + "\n")
    return 0 if report["init_exit"] == 0 and not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
