"""The ``summarizer`` command: click commands, each parsing, calling the library, printing.

Shell completion comes from click: ``eval "$(_SUMMARIZER_COMPLETE=bash_source summarizer)"`` (zsh_source,
fish_source for the other shells; see docs/operations.md).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import DISTRIBUTION, __version__
from .config import Config, config_location, example_ini, load_config, parse_duration
from .errors import EXIT_FAILURE, ConfigError, SummarizerError, UsageError
from .facade import Summarizer
from .logs import FORMATS, protect_stderr, setup_logging, uvicorn_log_config
from .metrics import observed
from .metrics import target as metrics_target
from .months import parse_months, parse_timestamp
from .secrets import redact
from .terminal import BarProgress, run_summary, status_text, verify_text

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("summarizer")


def handle_errors(func: F) -> F:
    """One translator: a SummarizerError becomes ``Error: ...`` on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SummarizerError as exc:
            click.secho(f"Error: {redact(str(exc))}", fg="red", err=True)
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
    def config(self) -> Config:
        """``--config``, else ``$SUMMARIZER_CONFIG``, else ./config.ini (which may be missing)."""
        path, required = config_location(self.config_path)
        return load_config(path, required=required).replace(**self.overrides)

    @functools.cached_property
    def summarizer(self) -> Summarizer:
        return Summarizer(self.config)

    def command(self) -> str:
        """How to call summarizer again with this configuration, for the commands we print."""
        return "summarizer" + (f" --config {self.config_path}" if self.config_path else "")


pass_context = click.make_pass_decorator(Context)


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value:  # given after the command name: overrides the one given before it
            ctx.meta[name] = value
    return callback


def log_options(func: F) -> F:
    """``--log-format`` and ``-v`` after the command name too (``summarizer refresh --log-format json``)."""
    func = click.option("--log-format", type=click.Choice(FORMATS), default=None, expose_value=False,
                        callback=_remember("log_format"),
                        help="Log lines as text, or one JSON object per line (as before the command).")(func)
    return click.option("-v", "--verbose", is_flag=True, default=False, expose_value=False,
                        callback=_remember("verbose"), help="Log debugging detail.")(func)


def _logging(click_ctx: click.Context, quiet: bool = False) -> None:
    setup_logging(quiet, click_ctx.meta.get("verbose", False), click_ctx.meta.get("log_format", "text"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Configuration file (default $SUMMARIZER_CONFIG, else ./config.ini; the environment "
                   "overrides its settings).")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Log lines as text, or one JSON object per line (for log shippers).")
@click.version_option(__version__, prog_name="summarizer",
                      message=f"%(prog)s %(version)s (distribution {DISTRIBUTION})")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, log_format: str) -> None:
    """Keep pre-aggregated summary tables fresh inside the database."""
    protect_stderr()
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
@log_options
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
    _logging(click_ctx, quiet)
    progress = BarProgress() if sys.stderr.isatty() and not quiet else None
    app = click_ctx.obj.summarizer
    mode = "months" if months else "since" if since_ts else "changed" if changed else "full"
    run = observed(app, metrics, mode, lambda: app.refresh(months=months, since=since_ts, changed=changed,
                                                           jobs=jobs, wait=wait, progress=progress))
    _warn_months_without_raw_rows(app, months)
    if as_json:
        click.echo(json.dumps(run.as_json(), indent=2))
    elif not quiet:
        click.echo(run_summary(run))


def _warn_months_without_raw_rows(app: Summarizer, months: list[Any]) -> None:
    empty = app.months_without_raw_rows(months) if months else []
    if empty:
        log.warning("no raw rows for %s: the refresh leaves no summary rows for %s (check --months)",
                    ", ".join(f"{m:%Y-%m}" for m in empty), "it" if len(empty) == 1 else "them",
                    extra={"event": "months_without_raw_rows", "months": [f"{m:%Y-%m}" for m in empty]})


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
    """Compare every tier with totals recomputed from the raw table.

    One line per month that disagrees, then the refresh that repairs them. Exit 0 when every tier
    matches, 1 on a mismatch, 69 when the database cannot be reached, 2 for a bad option or config.
    """
    report = ctx.summarizer.verify(_parse(parse_months, months_spec, "--months"))
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else verify_text(report, ctx.command()))
    if not report.ok:
        sys.exit(EXIT_FAILURE)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when the summaries are stale or the last run failed.")
@click.option("--max-age", default=None, help="With --check: age beyond which it calls them stale [default: 26h].")
@pass_context
@handle_errors
def status(ctx: Context, as_json: bool, check: bool, max_age: str | None) -> None:
    """Last runs, age of the last success, rows per tier, months, unassigned share."""
    if max_age is not None and not check:
        raise UsageError("--max-age only applies with --check: status --check --max-age 26h")
    max_age_seconds = _parse(parse_duration, max_age or "26h", "--max-age")
    current = ctx.summarizer.status()
    click.echo(json.dumps(current.as_json(), indent=2) if as_json else status_text(current))
    if check:
        problems = current.problems(max_age_seconds)
        for problem in problems:
            click.secho(f"CHECK FAILED: {problem}", fg="red", err=True)
        if problems:
            sys.exit(EXIT_FAILURE)


@cli.command()
@click.option("--once", is_flag=True, help="Apply what is waiting, then exit (for cron and tests).")
@click.option("--check", is_flag=True,
              help="Only say what the server lacks for following (a setting, a privilege) and how to set it; "
                   "exit 1 if anything.")
@click.option("--resync", is_flag=True,
              help="First run a full refresh that hands its stream position over (after a purged binary log, a "
                   "dropped replication slot, a schema change or an incremental refresh), then follow.")
@log_options
@click.pass_context
@handle_errors
def follow(click_ctx: click.Context, once: bool, check: bool, resync: bool) -> None:
    """Keep the tiers exact from the database's change stream, within seconds of each commit.

    Reads the binary log (MariaDB/MySQL) as a replica does, or a logical replication slot (PostgreSQL),
    and applies each batch of committed changes to the tiers in one transaction with its stream
    position. The first start runs a full refresh that hands its position over. SIGTERM or SIGINT: the
    batch being applied finishes, then exit 0. Needs [follow] enabled = true and `summarizer init`;
    `docs/follow.md` says what the server needs.
    """
    app = click_ctx.obj.summarizer
    if check:
        problems = app.follow_problems()
        for problem in problems:
            click.secho(f"NOT READY: {problem}", fg="red", err=True)
        if problems:
            sys.exit(EXIT_FAILURE)
        click.echo("follow: the server is ready (every setting, privilege and object following needs)")
        return
    _logging(click_ctx)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):  # from the start: a signal during --resync stops after it
        signal.signal(number, lambda *_: stop.set())
    follower = app.follower()
    follower.stop = stop
    if resync:
        run = app.refresh()
        log.info("resync: run %d handed its stream position over", run.id)
    applied = follower.run(once=once)
    click.echo(f"follow: applied {applied} row change(s)")


@cli.command()
@pass_context
@handle_errors
def explain(ctx: Context) -> None:
    """Show the database's plan for the refresh's read of the raw table."""
    result = ctx.summarizer.explain()
    click.echo(f"plan: {result['plan']}")
    if result.get("summary"):
        click.echo(f"the database's plan: {result['summary']}")
    click.echo("\n".join(f"  {line}" for line in result["explain"]))
    if result["temporary"]:
        fix = ("the index exists but the database does not read through it in order: refresh the raw table's "
               "statistics (MySQL: ANALYZE TABLE; PostgreSQL: VACUUM ANALYZE, which index-only scans need)"
               if result["chunked"] else result["advice"])
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
@click.option("--print-cron", is_flag=True, help="Print the crontab lines for this installation instead, and exit.")
@click.option("--print-systemd", is_flag=True,
              help="Print the systemd service and timer for this installation instead, and exit.")
@log_options
@click.pass_context
@handle_errors
def schedule(click_ctx: click.Context, metrics_file: str | None, print_cron: bool, print_systemd: bool) -> None:
    """Refresh on the [schedule] cron expressions, in the foreground, until SIGTERM or SIGINT.

    One run at a time; a run that finds another holding the lock is skipped. The first signal lets
    a run in progress finish, a second stops it now (recorded interrupted). Exits 0 when stopped.
    With --print-cron or --print-systemd it only prints the files that run it from cron or systemd.
    """
    if print_cron or print_systemd:
        click.echo(_unit_files(click_ctx.obj, metrics_file, print_cron, print_systemd), nl=False)
        return
    from .schedule import run_schedule
    metrics = _parse(metrics_target, metrics_file, "--metrics-file")
    _logging(click_ctx)
    run_schedule(click_ctx.obj.summarizer, metrics)


def _unit_files(ctx: Context, metrics_file: str | None, cron: bool, systemd: bool) -> str:
    from . import units
    if cron and systemd:
        raise UsageError("choose one of --print-cron and --print-systemd")
    config = ctx.config
    named, _ = config_location(ctx.config_path)
    script = Path(sys.executable).parent / "summarizer"
    paths = units.Paths(executable=str(script) if script.exists() else f"{sys.executable} -m summarizer",
                        config=str(named.resolve()) if named.exists() else units.CONFIG,
                        metrics=str(Path(metrics_file).resolve()) if metrics_file else units.METRICS)
    if cron:
        return units.crontab(config, paths)
    try:
        timer = units.timer(config)
    except ValueError as exc:
        raise ConfigError(str(exc), source=config.path, section="schedule", key="full") from None
    return (f"# ---- /etc/systemd/system/summarizer-refresh.service ----\n{units.service(paths)}\n"
            f"# ---- /etc/systemd/system/summarizer-refresh.timer ----\n{timer}")


@cli.group("config")
def config_group() -> None:
    """The configuration file: print an annotated example to start one from."""


@config_group.command("example")
def config_example() -> None:
    """Print the annotated example configuration: every setting, its default and what it means.

    Start a config with: summarizer config example > config.ini
    """
    click.echo(example_ini(), nl=False)


@cli.command("sql")
@click.option("--dialect", type=click.Choice(["mysql", "postgresql"]), required=True,
              help="The database the SQL is for.")
@click.option("--file", "only", type=click.Choice(["schema.sql", "refresh_full.sql", "refresh_month.sql",
                                                   "verify.sql"]),
              default=None, help="Print only this one (default: all four, each under a heading).")
@pass_context
@handle_errors
def sql(ctx: Context, dialect: str, only: str | None) -> None:
    """Print the SQL summarizer runs, rendered for your configuration (table and column names).

    schema.sql (what init creates), refresh_full.sql and refresh_month.sql (a refresh by hand) and
    verify.sql (what verify compares). Needs no database connection.
    """
    from .render import render
    rendered = render(dialect, ctx.config)
    if only:
        click.echo(rendered[only], nl=False)
        return
    click.echo("\n".join(f"-- ==== {name} ====\n{content}" for name, content in rendered.items()), nl=False)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default: [api] host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port to listen on (default: [api] port).")
@log_options
@click.pass_context
@handle_errors
def serve(click_ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the read API: HTTP JSON over the summary tables (needs the `api` extra)."""
    try:
        import uvicorn

        from .serve.http import create_app
    except ImportError as exc:
        raise UsageError(f"serve needs the api extra: pip install 'summarizer-tiers[api]' ({exc})") from None
    app = click_ctx.obj.summarizer
    _logging(click_ctx)
    uvicorn.run(create_app(app), host=host or app.config.api.host, port=port or app.config.api.port,
                log_config=uvicorn_log_config(click_ctx.meta.get("log_format", "text")))


def main() -> None:
    cli(prog_name="summarizer")
