"""Runs a refresh: lock, run record, mode, engine, swap.

A full refresh builds the three tiers into shadow tables (``<name>__new``) and swaps them in at
once; until the swap the live tables are not touched. An incremental refresh replaces whole months
of the live tiers, each month in one transaction (delete, then insert, in every tier). What computes
the tiers is a tier engine (``engines/``, chosen by ``[refresh] engine``); the steps are run, retried
and timed by ``steps.py``, so every step is safe to repeat. The swap first looks whether an attempt
whose reply was lost already did it.

A restart of the database ends the run lock's session too, so a step tried again after a lost
connection first takes the lock again (or stops, if another run has it). The run record is written
when the database is back, waiting for it at least :data:`RECORD_BUDGET_SECONDS`.

A refresh killed with ``kill -9`` can leave its last statement running on the server. Only a
MySQL ``RENAME`` (the swap) could still change something after the client is gone, so a full
refresh starts by reading each live tier: that read queues behind a dead run's rename that is still
waiting, and the shadow tables are dropped only once it is resolved.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import CreateTable

from . import version
from .config import Config
from .ddl import ddl, require_tables, sorted_indexes
from .dialects import Dialect
from .engines import Context, TierEngine, engine_for
from .errors import (
    ConfigError,
    DatabaseUnavailable,
    FollowFailed,
    LockHeld,
    RefreshFailed,
    SummarizerError,
    TableClash,
    UsageError,
)
from .follow.handover import Handover
from .follow.streams import open_stream
from .guards import check_before_write, foreign_tables
from .lock import RunLock, make_lock
from .model import OLD_SUFFIX, SHADOW_SUFFIX, Schema, Source, Tiers
from .months import as_date
from .rollup import Rollup
from .runs import CHANGED, FAILED, FULL, INTERRUPTED, MONTHS, SINCE, SUCCEEDED, Mode, Run, RunLog, RunStatus
from .sourcedata import check_months, duplicate_key_message
from .steps import Progress, Steps
from .text import first_line

log = logging.getLogger(__name__)

# --changed starts this long before the previous run began: updated_at columns often keep whole
# seconds only, and a writer's transaction open across that moment commits rows stamped earlier.
CHANGED_OVERLAP = dt.timedelta(minutes=1)
HOLDER_GRACE_SECONDS = 3.0  # how long a run that finds the lock held waits for the holder's record
# A short retry budget gives up the work soon; the record of the outcome still waits this long for
# the database, so that a live process never leaves its run marked running.
RECORD_BUDGET_SECONDS = 60.0


@dataclass(frozen=True)
class RefreshRequest:
    """What to refresh and how: the mode, its months or start, months at once, how long to wait for the lock."""

    mode: Mode = FULL
    months: tuple[dt.date, ...] = ()
    since: dt.datetime | None = None
    jobs: int = 1
    wait: float = 0.0


class Refresher:
    """One refresh, of any mode, from lock to run record; the tiers computed by the configured engine."""

    def __init__(self, dialect: Dialect, config: Config, schema: Schema, source: Source,
                 runs: RunLog, progress: Progress | None = None) -> None:
        self.dialect, self.config, self.schema, self.source = dialect, config, schema, source
        self.rollup = Rollup(source, schema)
        self.runs = runs
        self.engine = dialect.engine
        self.steps = Steps(dialect, config, progress)
        context = Context(dialect, config, schema, source, self.rollup, self.steps)
        self.tier_engine: TierEngine = engine_for(context)
        # following set up: a full refresh reads tier 1 in a snapshot and hands its stream position over
        self.handover = Handover(context, open_stream(dialect, config, source)) if config.follow.enabled else None
        self._retry, self._read, self.execute = self.steps.retry, self.steps.read, self.steps.execute

    # --- the run ----------------------------------------------------------------------------------
    def run(self, request: RefreshRequest) -> Run:
        try:
            self._preflight(request)
            lock = make_lock(self.dialect, self.config.refresh.lock_name)
            acquired = self._acquire(lock, request.wait)
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"refresh could not start: {first_line(exc, named=True)}") from exc
        if not acquired:
            advice = f"gave up after waiting {request.wait:g}s" if request.wait else "use --wait SECONDS to wait for it"
            raise LockHeld(f"another refresh holds the lock: {self._holder()}; {advice}")
        try:
            for run_id in self._retry("run history", self.runs.mark_interrupted, relock=False):
                log.warning("run %d was left running by a process that died; marked interrupted", run_id)
            return self._run_locked(request, lock)
        finally:
            lock.release()

    def _preflight(self, request: RefreshRequest) -> None:
        self._follow_preflight(request)
        engine = self.tier_engine
        check_before_write(self.dialect, self.config, self.schema, value_precision_cap=engine.VALUE_PRECISION_CAP)
        engine.preflight(request.mode)
        if engine.reads_source_here():  # the raw rows are in this database
            check_months(self.dialect, self.source, "refresh")
        require_tables(self.dialect, self.schema)
        if request.mode in (SINCE, CHANGED) and self.source.updated_at is None:
            option = "--changed" if request.mode == CHANGED else "--since"
            raise ConfigError(f"{option} needs to know when raw rows changed: set it to the raw table's "
                              "last-change column (or use --months)",
                              source=self.config.path, section="source", key="updated_at_column")

    def _follow_preflight(self, request: RefreshRequest) -> None:
        """While following is set up: only full refreshes, in this database, on a server ready to hand over."""
        if self.handover is None:
            return
        if request.mode != FULL:
            raise UsageError(f"refresh --{request.mode} is refused while following is set up ([follow] enabled): "
                             "it would recompute months outside the stream position the follower keeps them exact "
                             "at. The follower already applies every change; to rebuild, run a full "
                             "`summarizer refresh` (it hands over to the follower) or `summarizer follow --resync`")
        if self.config.refresh.engine != "database":
            raise ConfigError("a full refresh hands over to the follower only with the database engine (one "
                              "snapshot of the raw table): set engine = database, or [follow] enabled = false",
                              source=self.config.path, section="refresh", key="engine")
        problems = self.handover.stream.problems()
        if problems:
            raise FollowFailed("following is set up ([follow] enabled), and a full refresh hands its stream "
                               "position over, but the server is not ready: " + "; ".join(problems))

    def _acquire(self, lock: RunLock, wait: float) -> bool:
        if self._retry("run lock", lambda: lock.acquire(0)):
            return True
        if self.handover is not None and wait < float(self.config.follow.refresh_wait):
            wait = float(self.config.follow.refresh_wait)  # the follower holds it only while it applies a batch
        if wait <= 0:
            return False
        log.info("waiting up to %gs for the run lock, held by %s", wait, self._holder())
        return self._retry("run lock", lambda: lock.acquire(wait))

    def _holder(self) -> str:
        """Who holds the lock, from the run history (giving a holder that just started time to record itself)."""
        deadline = time.monotonic() + HOLDER_GRACE_SECONDS
        holder = self.runs.holder()
        while holder is None and time.monotonic() < deadline:
            time.sleep(0.2)
            holder = self.runs.holder()
        return holder.describe() if holder else "a run that has not recorded itself in the run history"

    def _run_locked(self, request: RefreshRequest, lock: RunLock) -> Run:
        self._retry("data version", self._ensure_version_row)
        data_as_of = self._read("database clock", self._database_now)
        months = self._months_for(request)
        label = ",".join(f"{m:%Y-%m}" for m in months) if request.mode != FULL else None
        run = self._retry("run history", lambda: self.runs.start(request.mode, label, data_as_of), relock=False)
        log.info("run %d started: %s refresh%s", run.id, request.mode, f" of {label}" if label else "")
        self.steps.timings = run.steps

        def retake() -> None:
            lock.check(lambda: self.runs.is_running(run))
        self.steps.relock = retake
        check = lambda: self._retry("run lock", retake, relock=False)  # noqa: E731
        try:
            if request.mode == FULL:
                self._full(run, check, request.jobs)
            else:
                self._incremental(run, months, request.jobs, check)
        except KeyboardInterrupt:
            self._record(run, INTERRUPTED, "stopped by a signal before it finished")
            raise
        except Exception as exc:
            self._record_failure(run, exc, request.mode, months)
        self._record_success(run)
        return run

    def _record_failure(self, run: Run, exc: Exception, mode: Mode, months: Sequence[dt.date]) -> None:
        """Record ``run`` as failed and raise: ``exc`` itself, or RefreshFailed with a better message."""
        reserved = self._reserved_label_message(exc, mode, months) or self._duplicate_key_message(exc)
        message = reserved or first_line(exc, named=True)
        self._record(run, FAILED, message)
        if isinstance(exc, SummarizerError) and reserved is None:
            raise exc
        raise RefreshFailed(f"refresh failed: {message}") from exc

    def _record_success(self, run: Run) -> None:
        try:
            self._retry("run history", lambda: self.runs.finish(run, SUCCEEDED), relock=False,
                        budget=self._record_budget())
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"run {run.id} did its work (the live tiers are new) but could not be "
                                      f"recorded as succeeded: {exc}") from exc

    def _record_budget(self) -> float:
        return max(float(self.config.refresh.retry_budget_seconds), RECORD_BUDGET_SECONDS)

    def _ensure_version_row(self) -> None:
        """The data version's row, written again if it was deleted: without it no change would move the version."""
        table = self.schema.data_version()
        with self.engine.begin() as conn:
            if conn.execute(version.current(table)).first() is None:
                log.warning("the data version row in %s was missing; written again", table.name)
                conn.execute(version.seed(table))

    def _record(self, run: Run, status: RunStatus, message: str) -> None:
        try:
            self._retry("run history", lambda: self.runs.finish(run, status, message), relock=False,
                        budget=self._record_budget())
        except Exception as exc:  # the database may be the thing that failed
            log.error("could not record run %d as %s: %s", run.id, status, first_line(exc, named=True))

    def _reserved_label_message(self, exc: Exception, mode: Mode, months: Sequence[dt.date]) -> str | None:
        """What to say instead of a duplicate key caused by raw rows that use the reserved label, if that is it.

        An engine that reports a duplicate key as a failure of its own (Spark's JDBC writes) makes a failed full
        refresh look too (its tier 1 is written to the shadow table before tier 2)."""
        wrapped = mode == FULL and isinstance(exc, RefreshFailed) and self.tier_engine.REPORTS_DUPLICATES_AS_FAILURE
        found = self._reserved_label_in_use(mode, months) if isinstance(exc, IntegrityError) or wrapped else None
        if found is None:
            return None
        label = self.schema.all_marketplace
        equal = "" if found == label else f" (equal to '{label}' for the database)"
        return (f"the raw table {self.source.financials.name} has rows with marketplace '{found}'{equal}, the label "
                "the summaries reserve for all marketplaces together: set [summary] all_marketplace to a label no "
                "raw marketplace uses")

    def _duplicate_key_message(self, exc: Exception) -> str | None:
        """What to say instead of a bare duplicate key in a tier: which source rows gave two rows one key."""
        if not isinstance(exc, IntegrityError) or not self.dialect.is_duplicate_key(exc):
            return None
        error = first_line(exc, named=True)
        try:
            return self._read("duplicate key check", lambda conn: duplicate_key_message(conn, self.source, error))
        except Exception as found:  # the original error is still reported
            log.warning("could not look for the source of a duplicate key: %s", first_line(found, named=True))
            return None

    def _reserved_label_in_use(self, mode: Mode, months: Sequence[dt.date]) -> str | None:
        """A raw marketplace equal to the all-marketplaces label; looked for only after an integrity error.

        A full refresh looks in the shadow tier 1 it built; an incremental one in the raw table's months,
        as a failed month's transaction takes its tier 1 rows back with it.
        """
        query = self.rollup.reserved_marketplace(tier1=self.schema.tiers(SHADOW_SUFFIX).asin) if mode == FULL \
            else self.rollup.reserved_marketplace(months)
        try:
            found = self._read("reserved label check", lambda conn: conn.execute(query).scalar())
            return None if found is None else str(found)
        except Exception as exc:  # the original error is still reported
            log.warning("could not look for raw rows with the reserved marketplace label: %s",
                        first_line(exc, named=True))
            return None

    def _database_now(self, conn: Connection) -> dt.datetime:
        value = conn.execute(text(self.dialect.now_sql())).scalar()
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))

    def _months_for(self, request: RefreshRequest) -> tuple[dt.date, ...]:
        if request.mode == MONTHS:
            return request.months
        if request.mode == SINCE:
            return self._changed_months(request.since)
        if request.mode == CHANGED:
            last = self._retry("run history", lambda: self.runs.last_success(modes=(FULL, CHANGED)), relock=False)
            if last is None or last.data_as_of is None:
                raise SummarizerError("--changed needs an earlier successful full or --changed refresh "
                                      "to start from: run `summarizer refresh` once first")
            since = last.data_as_of.replace(microsecond=0) - CHANGED_OVERLAP
            log.info("changed since %s (run %d started at %s)", since, last.id, last.data_as_of)
            return self._changed_months(since)
        return ()

    def _changed_months(self, since: dt.datetime | None) -> tuple[dt.date, ...]:
        query = self.rollup.changed_months()
        return self._read("changed months", lambda conn: tuple(
            as_date(m) for m in conn.execute(query, {"since": since}).scalars()))

    def _table_names(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    # --- full refresh -------------------------------------------------------------------------------
    def _full(self, run: Run, check: Callable[[], None], jobs: int = 1) -> None:
        live, shadow = self.schema.live(), self.schema.tiers(SHADOW_SUFFIX)
        plan = self.tier_engine.plan()
        run.plan = plan.describe()
        (log.info if plan.chunked else log.warning)("plan: %s", run.plan)
        with self.steps.timed("prepare"):
            self._create_shadows(live, shadow)
        filler = self.handover or self.tier_engine
        written = filler.fill_shadows(shadow, plan, run.stamp, check, jobs)
        self._finish_shadows(run, shadow, written)
        check()
        with self.steps.timed("swap"):  # the data version's shadow row goes in with the tiers (version.py)
            self._swap([*zip(live, shadow, strict=True),
                        (self.schema.data_version(), self.schema.data_version(SHADOW_SUFFIX)),
                        *(self.handover.pairs() if self.handover else [])])
        log.info("swapped in: %s", ", ".join(f"{t} {n} rows" for t, n in run.rows.items()))

    def _finish_shadows(self, run: Run, shadow: Tiers, written: dict[str, int] | None) -> None:
        """The filled shadow tiers' indexes and statistics; their rows into the run record: as the engine counted
        its writes, else counted (a COUNT(*) of every tier reads them all again)."""
        with self.steps.timed("indexes"):
            self._retry("indexes", lambda: self._create_indexes(shadow))
        if statistics := self.dialect.statistics_statements(shadow.read_by_dashboards()):
            with self.steps.timed("statistics"):
                self.execute("statistics", statistics)
        run.rows = dict(written) if written is not None else self.steps.count(shadow)

    def _create_shadows(self, live: Tiers, shadow: Tiers) -> None:
        # The probes come first: they wait for a dead run's rename that is still queued (module docstring).
        probes = [self.rollup.probe(t) for t in live]
        versions = self.schema.data_version(), self.schema.data_version(SHADOW_SUFFIX)
        leftovers = [t.name + suffix for t in [*live, versions[0]] for suffix in (SHADOW_SUFFIX, OLD_SUFFIX)]
        creates = [ddl(CreateTable(t), self.engine.dialect) for t in [*shadow, versions[1]]]  # indexes after the load
        self._refuse_foreign([*shadow, versions[1], *self._old_copies()], "dropping the leftovers of an earlier run")
        self.execute("prepare", [*probes, *(self.dialect.drop_table_if_exists(name) for name in leftovers), *creates,
                                 version.successor(versions[1], versions[0])])

    def _create_indexes(self, shadow: Tiers) -> None:
        """The shadow tiers' secondary indexes that do not exist yet (MySQL commits each statement on its own)."""
        inspector = inspect(self.engine)
        statements = []
        for table in shadow:
            have = {i["name"] for i in inspector.get_indexes(table.name)}
            statements += self.dialect.add_indexes(table, [i for i in sorted_indexes(table) if i.name not in have])
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))

    def _swap(self, pairs: list[tuple[Any, Any]]) -> None:
        """Each phase in one transaction; a metadata-lock timeout gives way to readers, then tries again."""
        cfg = self.config.refresh
        shadows = {shadow.name for _, shadow in pairs}
        for index, phase in enumerate(self.dialect.swap_phases(pairs, cfg.swap_lock_timeout)):
            def once(phase: list[str] = phase, first: bool = index == 0) -> None:
                if first and not shadows & self._table_names():
                    log.warning("swap: already done by an attempt whose reply was lost")
                    return
                if first:
                    self._refuse_foreign([*(t for pair in pairs for t in pair), *self._old_copies()], "the swap")
                self._swap_phase(phase)
            for attempt in range(1, cfg.swap_attempts + 1):
                try:
                    self._retry("swap", once, lock_timeouts=False)
                    break
                except Exception as exc:
                    if not self.dialect.is_lock_timeout(exc) or attempt == cfg.swap_attempts:
                        raise
                    log.warning("swap: waited %ss for readers to release the tables (try %d of %d); trying again",
                                cfg.swap_lock_timeout, attempt, cfg.swap_attempts)
                    time.sleep(min(1.0, cfg.swap_lock_timeout / 3))

    def _old_copies(self) -> list[Table]:
        """The ``__old`` names the swap renames the live tables to (and drops afterwards)."""
        follow = self.handover.old_copies() if self.handover else []
        return [*self.schema.tiers(OLD_SUFFIX), self.schema.data_version(OLD_SUFFIX), *follow]

    def _refuse_foreign(self, tables: Iterable[Table], doing: str) -> None:
        """Raise unless each of ``tables`` that exists has the shape summarizer gives it: only such a table
        is ever renamed or dropped, checked right before (a table can appear after the run's first check)."""
        problems = foreign_tables(self.dialect, tables)
        if problems:
            raise TableClash(f"{doing} would rename or drop a table summarizer did not make: "
                             + "; ".join(why for _, why in problems) + ". Nothing was renamed or dropped; "
                             "rename that table, or point [summary] at other table names")

    def _swap_phase(self, statements: list[str]) -> None:
        with self.engine.connect() as conn:
            try:
                with conn.begin():
                    for statement in statements:
                        conn.execute(text(statement))
            finally:
                conn.invalidate()  # the phase shortened the session's lock wait: that must not outlive it

    # --- incremental refresh --------------------------------------------------------------------
    def _incremental(self, run: Run, months: Sequence[dt.date], jobs: int, check: Callable[[], None]) -> None:
        progress = self.steps.progress
        with self.tier_engine.months(months, run.stamp, check) as work:
            progress.begin(f"{run.mode} refresh", len(months))
            try:
                with self.steps.timed("months"):
                    changes: Counter[str] = Counter()
                    for change in self.steps.parallel(months, jobs, check, work):
                        changes.update(change)  # update() keeps negative counts; + would drop them
            finally:
                progress.end()
        run.rows = self._rows_after(run, self.schema.live(), changes)

    def _rows_after(self, run: Run, live: Tiers, changes: Counter[str]) -> dict[str, int | None]:
        """Rows per tier after an incremental run without counting them (a COUNT(*) of every tier grows
        with the tiers): the previous run's figures plus this run's changes. Counted when the previous
        run did not succeed, since a failed or killed run may have committed months it did not record."""
        before = self._retry("run history", lambda: self.runs.previous(run))
        if before is None or before.status != SUCCEEDED or any(before.rows.get(n) is None for n in live.by_name()):
            return self.steps.count(live)
        return {name: int(before.rows[name] or 0) + changes[table.name] for name, table in live.by_name().items()}
