"""The ``summarizer`` command: click commands, each parsing, calling the library, printing."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import DISTRIBUTION, __version__
from .app import Summarizer
from .config import load_config, parse_duration
from .errors import EXIT_FAILURE, SummarizerError, UsageError
from .logs import FORMATS, setup_logging
from .metrics import observed
from .metrics import target as metrics_target
from .months import parse_months, parse_timestamp
from .output import BarProgress, run_summary, status_text, verify_text

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("summarizer")


def handle_errors(func: F) -> F:
    """One translator: a SummarizerError becomes ``Error: ...`` on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SummarizerError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
    return wrapper  # type: ignore[return-value]


def _parse(parser: Callable[[str], Any], text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return parser(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.overrides: dict[str, Any] = {}  # section__key -> value, from command-line options

    @functools.cached_property
    def summarizer(self) -> Summarizer:
        path = self.config_path or "config.ini"
        return Summarizer(load_config(path, required=self.config_path is not None).replace(**self.overrides))


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Configuration file (default ./config.ini; the environment overrides it).")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Log lines as text, or one JSON object per line (for log shippers).")
@click.version_option(__version__, prog_name="summarizer",
                      message=f"%(prog)s %(version)s (distribution {DISTRIBUTION})")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, log_format: str) -> None:
    """Keep pre-aggregated summary tables fresh inside the database."""
    ctx.obj = Context(config_path)
    ctx.meta["verbose"] = verbose
    ctx.meta["log_format"] = log_format


@cli.command()
@click.option("--source-indexes", is_flag=True, help="Also add the raw-table index the refresh reads through.")
@click.option("--print-sql", is_flag=True, help="Print the statements instead of running them.")
@pass_context
@handle_errors
def init(ctx: Context, source_indexes: bool, print_sql: bool) -> None:
    """Create the summary and bookkeeping tables where missing (idempotent)."""
    plan = ctx.summarizer.init(source_indexes=source_indexes, dry_run=print_sql)
    statements = plan.statements + [sql for sql, _ in plan.online]
    if print_sql:
        click.echo("\n".join(f"{s};" for s in statements) or "-- nothing to do")
    else:
        click.echo(f"init: {len(statements)} statement(s) run" if statements else "init: nothing to do")


@cli.command()
@click.option("--months", "months_spec", metavar="SPEC", help="Only these months: 2024-01..2024-03 or 2024-02,2024-05.")
@click.option("--since", metavar="TIMESTAMP", help="Only months with raw rows changed since then (updated_at).")
@click.option("--changed", is_flag=True, help="Only months changed since the last successful run (updated_at).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Months refreshed at once, one connection each.")
@click.option("--wait", type=click.FloatRange(0), default=0.0, help="Seconds to wait for another run's lock.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON on stdout.")
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus metrics of the run here (textfile collector).")
@click.option("--engine", type=click.Choice(["database", "spark"]), default=None,
              help="What computes the tiers (default: [refresh] engine): the database, or Apache Spark.")
@click.option("--spark-master", metavar="URL",
              help="Spark master: local[*], spark://host:7077 or a Spark Connect sc://host:15002 "
                   "(implies --engine spark).")
@click.pass_context
@handle_errors
def refresh(click_ctx: click.Context, months_spec: str | None, since: str | None, changed: bool,
            jobs: int | None, wait: float, quiet: bool, as_json: bool, metrics_file: str | None,
            engine: str | None, spark_master: str | None) -> None:
    """Rebuild the summaries: all of them (default) or only some months."""
    click_ctx.obj.overrides.update(_engine_overrides(engine, spark_master))
    if sum(x is not None and x is not False for x in (months_spec, since, changed)) > 1:
        raise UsageError("choose one of --months, --since and --changed")
    months = _parse(parse_months, months_spec, "--months") or []
    since_ts = _parse(parse_timestamp, since, "--since")
    metrics = _parse(metrics_target, metrics_file, "--metrics-file")
    setup_logging(quiet, click_ctx.meta.get("verbose", False), click_ctx.meta.get("log_format", "text"))
    progress = BarProgress() if sys.stderr.isatty() and not quiet else None
    app = click_ctx.obj.summarizer
    mode = "months" if months else "since" if since_ts else "changed" if changed else "full"
    run = observed(app, metrics, mode, lambda: app.refresh(months=months, since=since_ts, changed=changed,
                                                           jobs=jobs, wait=wait, progress=progress))
    if as_json:
        click.echo(json.dumps(run.as_json(), indent=2))
    elif not quiet:
        click.echo(run_summary(run))


def _engine_overrides(engine: str | None, spark_master: str | None) -> dict[str, str]:
    if spark_master is not None and (engine == "database" or not spark_master.strip()):
        raise UsageError("--spark-master: give a Spark master URL, with --engine spark (or no --engine)")
    overrides = {"refresh__engine": engine or "spark"} if engine or spark_master else {}
    return overrides | ({"spark__master": spark_master.strip()} if spark_master else {})


@cli.command()
@click.option("--months", "months_spec", metavar="SPEC", help="Only these months.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
@handle_errors
def verify(ctx: Context, months_spec: str | None, as_json: bool) -> None:
    """Compare every tier with totals recomputed from the raw table; exit 1 on any mismatch."""
    report = ctx.summarizer.verify(_parse(parse_months, months_spec, "--months"))
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else verify_text(report))
    if not report.ok:
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when the summaries are stale or the last run failed.")
@click.option("--max-age", default="26h", show_default=True, help="Age beyond which --check calls them stale.")
@pass_context
@handle_errors
def status(ctx: Context, as_json: bool, check: bool, max_age: str) -> None:
    """Last runs, age of the last success, rows per tier, months, unassigned share."""
    max_age_seconds = _parse(parse_duration, max_age, "--max-age")
    current = ctx.summarizer.status()
    click.echo(json.dumps(current.as_json(), indent=2) if as_json else status_text(current))
    if check:
        problems = current.problems(max_age_seconds)
        for problem in problems:
            click.secho(f"CHECK FAILED: {problem}", fg="red", err=True)
        if problems:
            sys.exit(EXIT_FAILURE)


@cli.command()
@pass_context
@handle_errors
def explain(ctx: Context) -> None:
    """Show the database's plan for the refresh's read of the raw table."""
    result = ctx.summarizer.explain()
    click.echo(f"plan: {result['plan']}")
    click.echo("\n".join(f"  {line}" for line in result["explain"]))
    if result["temporary"]:
        fix = ("the index exists but the database does not read through it in order: refresh the raw table's "
               "statistics (MySQL: ANALYZE TABLE; PostgreSQL: VACUUM ANALYZE, which index-only scans need)"
               if result["chunked"] else "Run `summarizer init --source-indexes`")
        click.secho("WARNING: the GROUP BY over the raw table uses a temporary table or a sort; at tens of "
                    f"millions of rows that can take hours. {fix}.", fg="yellow")


@cli.command()
@click.option("--rows", type=click.IntRange(1000, 10_000_000), default=200_000, show_default=True,
              help="Raw rows to generate.")
@click.option("--path", type=click.Path(dir_okay=False), default="summarizer-demo.db", show_default=True,
              help="SQLite file to create (replaced if it exists).")
@handle_errors
def demo(rows: int, path: str) -> None:
    """Build a SQLite database of synthetic data, refresh and verify it, and show the result."""
    from .demo import run_demo
    setup_logging(quiet=True, verbose=False)
    run_demo(Path(path), rows, click.echo)


@cli.command()
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus metrics after every run (textfile collector).")
@click.pass_context
@handle_errors
def schedule(click_ctx: click.Context, metrics_file: str | None) -> None:
    """Refresh on the [schedule] cron expressions, in the foreground, until SIGTERM or SIGINT.

    One run at a time; a run that finds another holding the lock is skipped. The first signal lets
    a run in progress finish, a second stops it now (recorded interrupted). Exits 0 when stopped.
    """
    from .schedule import run_schedule
    metrics = _parse(metrics_target, metrics_file, "--metrics-file")
    setup_logging(False, click_ctx.meta.get("verbose", False), click_ctx.meta.get("log_format", "text"))
    run_schedule(click_ctx.obj.summarizer, metrics)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default: [api] host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port to listen on (default: [api] port).")
@click.pass_context
@handle_errors
def serve(click_ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the read API: HTTP JSON over the summary tables (needs the `api` extra)."""
    try:
        import uvicorn

        from .api import create_app
    except ImportError as exc:
        raise UsageError(f"serve needs the api extra: pip install 'summarizer-tiers[api]' ({exc})") from None
    app = click_ctx.obj.summarizer
    setup_logging(False, click_ctx.meta.get("verbose", False), click_ctx.meta.get("log_format", "text"))
    uvicorn.run(create_app(app), host=host or app.config.api.host, port=port or app.config.api.port)


def main() -> None:
    cli(prog_name="summarizer")
