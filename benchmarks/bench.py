"""Benchmark summarizer against the targets of docs/design.md on one database (``measure.py`` does the work).

In one run: the floor (one scan of the raw table), a full refresh and its ratio to the floor, the write floor
(writing as many rows as the tiers hold, in key order) and the full refresh against both floors, the field
report's method on the same data, one month's incremental refresh, the dashboard questions from the
summaries and from the raw tables, the peak RSS of a refresh process and the disk the tiers take (after a refresh,
and at the peak during one, shadow tables included). Prints a table; --json-out
writes every figure as JSON.

It replaces the source tables (financials, products, brands, categories) with synthetic data and adds
and drops indexes on financials: point it at a scratch database.

    python -m benchmarks.bench --url mysql+pymysql://root@127.0.0.1:3306/bench_scratch --rows 5000000 --jobs 2 \\
        --json-out bench.json
    python -m benchmarks.bench --url ... --skip-generate --shape sparse    # reuse the data already there

Shapes: `field` (default) is shaped like the data of docs/design.md's background, about 40 raw rows per tier-1 row
(20,000 ASINs, 2,000 brands, 200 categories, 40 raw rows per drawn key); `sparse` is synth's default
(rows/100 ASINs, one raw row per drawn key), which hardly compresses; `wide` is the field shape as a wide
table, one row per order line (synth's order_lines: an order_date on any day, three measure columns, the
third NULL in a tenth of the rows); `tpch` is TPC-H-like (benchmarks/tpch.py: one raw row per part, nation, month
and metric, tier 1 ~99% of the raw rows). --asins, --brands, --categories, --skew and --rows-per-key override any.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from benchmarks.measure import FIELD_SHAPE, BenchOptions, render, run_bench, write_json
from benchmarks.tpch import TPCH_SHAPE
from summarizer.errors import SummarizerError, UsageError
from summarizer.synth import Shape

SHAPES: dict[str, dict[str, Any]] = {"field": FIELD_SHAPE, "sparse": {}, "wide": {**FIELD_SHAPE, "wide": True},
                                     "tpch": TPCH_SHAPE}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("SUMMARIZER_DATABASE_URL"),
                        help="SQLAlchemy URL of a scratch database (default: SUMMARIZER_DATABASE_URL)")
    parser.add_argument("--rows", type=int, default=5_000_000, help="raw rows to generate (default 5,000,000)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="field", help="data shape preset (default field)")
    for name in ("asins", "brands", "categories", "skew", "rows-per-key"):
        parser.add_argument(f"--{name}", type=int, default=None, help=f"override the shape's {name}")
    parser.add_argument("--skip-generate", action="store_true", help="benchmark the source tables already there")
    parser.add_argument("--replace", action="store_true", help="replace source tables that already hold rows")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the floor, full and one-month refresh")
    parser.add_argument("--jobs", type=int, default=1, help="months the full refresh builds at once (default 1)")
    parser.add_argument("--summary-queries", type=int, default=200, help="timed summary reads per question")
    parser.add_argument("--raw-queries", type=int, default=3, help="timed raw-table queries per question")
    parser.add_argument("--no-settle", action="store_true",
                        help="do not wait for the server's background writes (InnoDB dirty pages; PostgreSQL "
                        "CHECKPOINT) before each timed run")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not run the hand-written method (slow where the data hardly compresses)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the report as JSON to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def options(args: argparse.Namespace) -> BenchOptions:
    if not args.url:
        raise UsageError("--url: no database given (or set SUMMARIZER_DATABASE_URL)")
    try:
        url = make_url(args.url)
    except ArgumentError:
        raise UsageError(f"--url: {args.url!r} is not a SQLAlchemy URL") from None
    overrides = {k: getattr(args, k) for k in ("asins", "brands", "categories", "skew", "rows_per_key")
                 if getattr(args, k) is not None}
    shape = Shape(rows=args.rows, **{**SHAPES[args.shape], **overrides})
    return BenchOptions(url=url, shape=shape, generate=not args.skip_generate, replace=args.replace,
                        repeat=args.repeat, jobs=args.jobs, summary_queries=args.summary_queries,
                        raw_queries=args.raw_queries, settle=not args.no_settle,
                        baseline=not args.skip_baseline)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_bench(options(args), lambda line: print(line, file=sys.stderr, flush=True))
    except SummarizerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print(render(report))
    if args.json_out:
        write_json(report, args.json_out)
    wrong = not report["verify"]["ok"] or not report.get("baseline", {"verifies": True})["verifies"] or not all(
        q["answers_match"] for q in report.get("dashboard", {}).values())
    missed = not all(t["met"] for t in report["targets"].values())
    return 1 if wrong or (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
