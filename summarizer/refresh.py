"""Runs a refresh: lock, plan, month chunks, retries, swap, run record.

A full refresh builds the three tiers into shadow tables (``<name>__new``) and swaps them in at
once; until the swap the live tables are not touched. An incremental refresh replaces whole months
of the live tiers, each month in one transaction (delete, then insert, in every tier).

Every step is safe to repeat, so a step that hits a transient error (deadlock, lock wait timeout,
lost connection) is retried as a whole: data steps are one transaction that deletes what it is
about to insert; DDL steps (which MySQL commits statement by statement) only do what is still
missing; the swap first looks whether an attempt whose reply was lost already did it.

While the database cannot be reached (a restart), a step keeps trying for ``retry_budget_seconds``
however many attempts that takes; ``retry_attempts`` bounds the errors the database answers with.
A restart ends the run lock's session too, so a step tried again after a lost connection first takes
the lock again (or stops, if another run has it). The run record is written when the database is
back, waiting for it at least :data:`RECORD_BUDGET_SECONDS`.

A refresh killed with ``kill -9`` can leave its last statement running on the server. Only a
MySQL ``RENAME`` (the swap) could still change something after the client is gone, so a full
refresh starts by reading each live tier: that read queues behind a dead run's rename that is still
waiting, and the shadow tables are dropped only once it is resolved.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Delete, Executable, Insert, Table, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.expression import TableClause
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from . import spark_engine, version
from .config import Config
from .ddl import check_source, ddl, require_tables, sorted_indexes
from .dialects import Dialect
from .errors import ConfigError, DatabaseUnavailable, LockHeld, RefreshFailed, SummarizerError, TableClash
from .guards import check_before_write, foreign_tables
from .lock import RunLock, make_lock
from .model import OLD_SUFFIX, SHADOW_SUFFIX, Schema, Source, Tiers
from .plan import Plan, choose_plan, index_advice
from .rollup import Rollup
from .runs import CHANGED, FAILED, FULL, INTERRUPTED, MONTHS, SINCE, SUCCEEDED, Mode, Run, RunLog, RunStatus
from .sourcedata import check_months, duplicate_key_message

log = logging.getLogger(__name__)
T = TypeVar("T")

# --changed starts this long before the previous run began: updated_at columns often keep whole
# seconds only, and a writer's transaction open across that moment commits rows stamped earlier.
CHANGED_OVERLAP = dt.timedelta(minutes=1)
HOLDER_GRACE_SECONDS = 3.0  # how long a run that finds the lock held waits for the holder's record
# A short retry budget gives up the work soon; the record of the outcome still waits this long for
# the database, so that a live process never leaves its run marked running.
RECORD_BUDGET_SECONDS = 60.0


class Progress(Protocol):
    def begin(self, label: str, total: int) -> None: ...
    def advance(self, detail: str) -> None: ...
    def end(self) -> None: ...


class LogProgress:
    """Plain log lines, for cron and for anything that is not a terminal."""

    def __init__(self) -> None:
        self.label, self.total, self.done = "", 0, 0

    def begin(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        log.info("%s: %d month(s)", label, total)

    def advance(self, detail: str) -> None:
        self.done += 1
        log.info("%s: %s done (%d/%d)", self.label, detail, self.done, self.total)

    def end(self) -> None:
        pass


@dataclass(frozen=True)
class Request:
    mode: Mode = FULL
    months: tuple[dt.date, ...] = ()
    since: dt.datetime | None = None
    jobs: int = 1
    wait: float = 0.0


class Refresher:
    """One refresh, of any mode, from lock to run record."""

    def __init__(self, dialect: Dialect, config: Config, schema: Schema, source: Source,
                 runs: RunLog, progress: Progress | None = None) -> None:
        self.dialect, self.config, self.schema, self.source = dialect, config, schema, source
        self.rollup = Rollup(source, schema)
        self.runs = runs
        self.progress = progress or LogProgress()
        self.engine = dialect.engine
        self.steps: dict[str, float] = {}
        self._steps_lock = threading.Lock()  # months may run in several threads (--jobs)
        self._relock: Callable[[], None] | None = None  # takes the run lock again after a lost connection

    # --- the run ----------------------------------------------------------------------------------
    def run(self, request: Request) -> Run:
        try:
            self._preflight(request)
            lock = make_lock(self.dialect, self.config.refresh.lock_name)
            acquired = self._acquire(lock, request.wait)
        except DBAPIError as exc:
            raise DatabaseUnavailable(f"refresh could not start: {_describe(exc)}") from exc
        if not acquired:
            advice = f"gave up after waiting {request.wait:g}s" if request.wait else "use --wait SECONDS to wait for it"
            raise LockHeld(f"another refresh holds the lock: {self._holder()}; {advice}")
        try:
            for run_id in self._retry("run history", self.runs.mark_interrupted, relock=False):
                log.warning("run %d was left running by a process that died; marked interrupted", run_id)
            return self._run_locked(request, lock)
        finally:
            lock.release()

    def _preflight(self, request: Request) -> None:
        spark = spark_engine.enabled(self.config)
        check_before_write(self.dialect, self.config, self.schema,
                           value_precision_cap=spark_engine.MAX_PRECISION if spark else 0)
        if spark:
            spark_engine.preflight(self, request)  # checks the source the config names (maybe not this database)
        else:
            check_source(self.dialect, self.source)
        if not spark or self.config.spark.source == "jdbc":  # the raw rows are in this database
            check_months(self.dialect, self.source, "refresh")
        require_tables(self.dialect, self.schema)
        if request.mode in (SINCE, CHANGED) and self.source.updated_at is None:
            option = "--changed" if request.mode == CHANGED else "--since"
            raise ConfigError(f"{option} needs to know when raw rows changed: set it to the raw table's "
                              "last-change column (or use --months)",
                              source=self.config.path, section="source", key="updated_at_column")

    def _acquire(self, lock: RunLock, wait: float) -> bool:
        if self._retry("run lock", lambda: lock.acquire(0)):
            return True
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

    def _run_locked(self, request: Request, lock: RunLock) -> Run:
        self._retry("data version", self._ensure_version_row)
        data_as_of = self._read("database clock", self._database_now)
        months = self._months_for(request)
        label = ",".join(f"{m:%Y-%m}" for m in months) if request.mode != FULL else None
        run = self._retry("run history", lambda: self.runs.start(request.mode, label, data_as_of), relock=False)
        log.info("run %d started: %s refresh%s", run.id, request.mode, f" of {label}" if label else "")
        self.steps = run.steps

        def retake() -> None:
            lock.check(lambda: self.runs.is_running(run))
        self._relock = retake
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
            reserved = self._reserved_label_message(exc, request.mode, months) or self._duplicate_key_message(exc)
            message = reserved or _describe(exc)
            self._record(run, FAILED, message)
            if isinstance(exc, SummarizerError) and reserved is None:
                raise
            raise RefreshFailed(f"refresh failed: {message}") from exc
        self._record_success(run)
        return run

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
            log.error("could not record run %d as %s: %s", run.id, status, _describe(exc))

    def _reserved_label_message(self, exc: Exception, mode: Mode, months: Sequence[dt.date]) -> str | None:
        """What to say instead of a duplicate key caused by raw rows that use the reserved label, if that is it.

        Spark's JDBC writes report a duplicate key as a Spark error, so a failed full Spark refresh looks
        too (its tier 1 is written to the shadow table before tier 2)."""
        spark_full = mode == FULL and isinstance(exc, RefreshFailed) and spark_engine.enabled(self.config)
        found = self._reserved_label_in_use(mode, months) if isinstance(exc, IntegrityError) or spark_full else None
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
        error = _describe(exc)
        try:
            return self._read("duplicate key check", lambda conn: duplicate_key_message(conn, self.source, error))
        except Exception as found:  # the original error is still reported
            log.warning("could not look for the source of a duplicate key: %s", _describe(found))
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
            log.warning("could not look for raw rows with the reserved marketplace label: %s", _describe(exc))
            return None

    def _database_now(self, conn: Connection) -> dt.datetime:
        value = conn.execute(text(self.dialect.now_sql())).scalar()
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))

    def _months_for(self, request: Request) -> tuple[dt.date, ...]:
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
            _as_date(m) for m in conn.execute(query, {"since": since}).scalars()))

    # --- steps ------------------------------------------------------------------------------------
    def _retrying(self, what: str, budget: float, *, lock_timeouts: bool = True) -> Retrying:
        cfg = self.config.refresh
        tries = _Tries(budget)

        def away(state: RetryCallState) -> bool:
            return self.dialect.is_disconnect(_failure(state))

        def transient(exc: BaseException) -> bool:
            return self.dialect.is_transient(exc) and (lock_timeouts or not self.dialect.is_lock_timeout(exc))

        def stop(state: RetryCallState) -> bool:
            if away(state):
                return tries.budget_left() <= 0.0  # attempts are not counted while the database is away
            tries.answered += 1
            return tries.answered >= int(cfg.retry_attempts)

        backoff = wait_random_exponential(multiplier=cfg.retry_initial_wait, max=cfg.retry_max_wait)

        def wait(state: RetryCallState) -> float:
            return min(backoff(state), tries.budget_left()) if away(state) else backoff(state)

        def before_sleep(state: RetryCallState) -> None:
            assert state.next_action is not None
            if away(state):
                log.warning("%s: transient error, retry in %.1fs: the database cannot be reached "
                            "(%.0fs of %gs left): %s", what, state.next_action.sleep, tries.budget_left(), budget,
                            _describe(_failure(state)))
                return
            log.warning("%s: transient error, retry %d of %d in %.1fs: %s", what, tries.answered,
                        cfg.retry_attempts - 1, state.next_action.sleep, _describe(_failure(state)))

        # Only errors that can succeed on a second try; every step is safe to repeat (module docstring).
        return Retrying(retry=retry_if_exception(transient), stop=stop, wait=wait,
                        before_sleep=before_sleep, reraise=True)

    def _retry(self, what: str, work: Callable[[], T], *, lock_timeouts: bool = True, relock: bool = True,
               budget: float | None = None) -> T:
        """``work()``, tried again after transient database errors; after a lost connection the run lock is
        taken again first (unless ``relock`` is false). ``budget``: how long the database may stay away."""
        budget = self.config.refresh.retry_budget_seconds if budget is None else budget
        reconnecting = False

        def attempt() -> T:
            nonlocal reconnecting
            if reconnecting and relock and self._relock is not None:
                self._relock()  # the restart that cut this step's connection ended the lock's session too
            try:
                return work()
            except Exception as exc:
                reconnecting = self.dialect.is_disconnect(exc)
                raise
        try:
            return self._retrying(what, budget, lock_timeouts=lock_timeouts)(attempt)
        except DBAPIError as exc:
            if not self.dialect.is_disconnect(exc):
                raise
            raise DatabaseUnavailable(f"{what}: the database could not be reached for {budget:g}s "
                                      f"([refresh] retry_budget_seconds): {_describe(exc)}") from exc

    def _read(self, what: str, read: Callable[[Connection], T]) -> T:
        """``read(conn)`` on a pooled connection, tried again after transient database errors."""
        def once() -> T:
            with self.engine.connect() as conn:
                return read(conn)
        return self._retry(what, once)

    def execute(self, what: str, statements: Sequence[Executable | str],
                params: dict[str, Any] | None = None) -> list[int]:
        """Run ``statements`` in one transaction, retried as a whole on transient errors; their row counts."""
        def once() -> list[int]:
            with self.engine.begin() as conn:
                self.dialect.prepare_refresh_session(conn, self.config.refresh.tmp_table_size)
                conn = conn.execution_options(preserve_rowcount=True)  # psycopg's INSERT ... SELECT counts too
                return [conn.execute(text(s) if isinstance(s, str) else s, params or {}).rowcount for s in statements]
        return self._retry(what, once)

    def replace_month(self, month: dt.date, statements: Sequence[Delete | Insert]) -> Counter[str]:
        """One month of the live tiers in one transaction (``statements``, and the data version's bump with
        them); the rows each table gained or lost."""
        counts = self.execute(f"month {month:%Y-%m}", [*statements, version.bump(self.schema.data_version())],
                              {"month": month})
        change: Counter[str] = Counter()
        for statement, count in zip(statements, counts[:len(statements)], strict=True):
            table = statement.table
            assert isinstance(table, TableClause)
            change[table.name] += -count if isinstance(statement, Delete) else count
        return change

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._steps_lock:
                self.steps[name] = self.steps.get(name, 0.0) + elapsed

    def _count(self, tiers: Tiers) -> dict[str, int | None]:
        counts = {name: select(func.count()).select_from(t) for name, t in tiers.by_name().items()}
        return self._read("count rows", lambda conn: {name: conn.execute(q).scalar_one() for name, q in counts.items()})

    def _table_names(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    # --- full refresh -------------------------------------------------------------------------------
    def _full(self, run: Run, check: Callable[[], None], jobs: int = 1) -> None:
        live, shadow = self.schema.live(), self.schema.tiers(SHADOW_SUFFIX)
        spark = spark_engine.enabled(self.config)
        plan = spark_engine.plan(self) if spark else choose_plan(self.dialect, self.source)
        run.plan = plan.describe()
        (log.info if plan.chunked else log.warning)("plan: %s", run.plan)
        stamp = run.stamp
        with self.timed("prepare"):
            self._create_shadows(live, shadow)
        if spark:
            spark_engine.fill_shadows(self, shadow, stamp, check)
        else:
            with self.timed("months"):
                months = self._full_months(shadow, plan, stamp)
            self._full_chunks(shadow, months, stamp, plan.chunked, check, jobs)
        with self.timed("indexes"):
            self._retry("indexes", lambda: self._create_indexes(shadow))
        if statistics := self.dialect.statistics_statements(shadow.read_by_dashboards()):
            with self.timed("statistics"):
                self.execute("statistics", statistics)
        run.rows = self._count(shadow)
        check()
        with self.timed("swap"):  # the data version's shadow row goes in with the tiers (version.py)
            self._swap([*zip(live, shadow, strict=True),
                        (self.schema.data_version(), self.schema.data_version(SHADOW_SUFFIX))])
        log.info("swapped in: %s", ", ".join(f"{t} {n} rows" for t, n in run.rows.items()))

    def _create_shadows(self, live: Tiers, shadow: Tiers) -> None:
        # The probes come first: they wait for a dead run's rename that is still queued (module docstring).
        probes = [self.rollup.probe(t) for t in live]
        versions = self.schema.data_version(), self.schema.data_version(SHADOW_SUFFIX)
        leftovers = [t.name + suffix for t in [*live, versions[0]] for suffix in (SHADOW_SUFFIX, OLD_SUFFIX)]
        creates = [ddl(CreateTable(t), self.engine.dialect) for t in [*shadow, versions[1]]]  # indexes after the load
        self._refuse_foreign([*shadow, versions[1], *self._old_copies()], "dropping the leftovers of an earlier run")
        self.execute("prepare", [*probes, *(self.dialect.drop_table_if_exists(name) for name in leftovers), *creates,
                                 version.successor(versions[1], versions[0])])

    def _full_months(self, shadow: Tiers, plan: Plan, stamp: dt.datetime) -> list[dt.date]:
        if not plan.chunked:
            with self.timed("tier1"):
                log.info("tier1: one pass over the raw table")
                self.execute("tier1 (one pass)", [self.rollup.delete_all(shadow.asin),
                                                  self.rollup.tier1_insert(shadow.asin, stamp, by_month=False)])
            query = self.rollup.table_months(shadow.asin)
        else:
            query = self.rollup.source_months() if self.dialect.LOOSE_INDEX_SCAN \
                else self.rollup.source_months_by_lookups()
        return self._read("months", lambda conn: [_as_date(m) for m in conn.execute(query).scalars()])

    def _full_chunks(self, shadow: Tiers, months: list[dt.date], stamp: dt.datetime, chunked: bool,
                     check: Callable[[], None], jobs: int = 1) -> None:
        t1, t2, t3 = shadow
        steps = [("tier1", [self.rollup.delete_month(t1), self.rollup.tier1_insert(t1, stamp, by_month=True)])] \
            if chunked else []
        steps += [("tier2", [self.rollup.delete_month(t2), *self.rollup.tier2_inserts(t2, t1, stamp)]),
                  ("tier3", [self.rollup.delete_month(t3), self.rollup.tier3_insert(t3, t2, stamp)])]

        def month_steps(month: dt.date) -> None:
            for name, statements in steps:
                with self.timed(name):
                    self.execute(f"{name} {month:%Y-%m}", statements, {"month": month})
        self.progress.begin("full refresh", len(months))
        try:
            if jobs > 1:  # the shadow tiers' months are independent: several at once, one connection each
                self._parallel(months, jobs, check, month_steps)
                return
            for month in months:
                check()
                month_steps(month)
                self.progress.advance(f"{month:%Y-%m}")
        finally:
            self.progress.end()

    def _create_indexes(self, shadow: Tiers) -> None:
        """The shadow tiers' secondary indexes that do not exist yet (MySQL commits each one on its own)."""
        inspector = inspect(self.engine)
        missing = [index for table in shadow
                   for index in sorted_indexes(table)
                   if index.name not in {i["name"] for i in inspector.get_indexes(table.name)}]
        with self.engine.begin() as conn:
            for index in missing:
                conn.execute(text(ddl(CreateIndex(index), self.engine.dialect)))

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
        return [*self.schema.tiers(OLD_SUFFIX), self.schema.data_version(OLD_SUFFIX)]

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
        live = self.schema.live()
        statements = self.rollup.month_statements(list(live), run.stamp)
        spark = spark_engine.enabled(self.config)
        if months and not spark and not choose_plan(self.dialect, self.source).chunked:
            log.warning("the raw table has no covering index: each month reads the whole table. %s",
                        index_advice(self.dialect, self.source))
        # spark: Spark computes the months into staging tables first; each month then moves in one transaction
        months_work = spark_engine.staged(self, run, months, check) if spark else \
            nullcontext(lambda m: self.replace_month(m, statements))
        with months_work as work:
            self.progress.begin(f"{run.mode} refresh", len(months))
            try:
                with self.timed("months"):
                    changes: Counter[str] = Counter()
                    for change in self._parallel(months, jobs, check, work):
                        changes.update(change)  # update() keeps negative counts; + would drop them
            finally:
                self.progress.end()
        run.rows = self._rows_after(run, live, changes)

    def _rows_after(self, run: Run, live: Tiers, changes: Counter[str]) -> dict[str, int | None]:
        """Rows per tier after an incremental run without counting them (a COUNT(*) of every tier grows
        with the tiers): the previous run's figures plus this run's changes. Counted when the previous
        run did not succeed, since a failed or killed run may have committed months it did not record."""
        before = self._retry("run history", lambda: self.runs.previous(run))
        if before is None or before.status != SUCCEEDED or any(before.rows.get(n) is None for n in live.by_name()):
            return self._count(live)
        return {name: int(before.rows[name] or 0) + changes[table.name] for name, table in live.by_name().items()}

    def _parallel(self, months: Sequence[dt.date], jobs: int, check: Callable[[], None],
                  work: Callable[[dt.date], T]) -> list[T]:
        """Up to ``jobs`` months at once, each on its own connection; the lock checked before each.
        What ``work`` returned for each month, in the order they finished."""
        pending = list(months)
        results: list[T] = []
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="month") as pool:
            running: dict[Future[T], dt.date] = {}
            try:
                while pending or running:
                    while pending and len(running) < jobs:
                        check()
                        month = pending.pop(0)
                        running[pool.submit(work, month)] = month
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        month = running.pop(future)
                        results.append(future.result())
                        self.progress.advance(f"{month:%Y-%m}")
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return results


class _Tries:
    """One step's retries: the errors the database answered with, and the time left for it to come back
    (counted from the first lost connection)."""

    def __init__(self, budget: float) -> None:
        self.budget, self.answered = budget, 0
        self.away_since: float | None = None

    def budget_left(self) -> float:
        if self.away_since is None:
            self.away_since = time.monotonic()
        return max(0.0, self.budget - (time.monotonic() - self.away_since))


def _failure(state: RetryCallState) -> BaseException:
    exc = state.outcome.exception() if state.outcome is not None else None
    assert exc is not None  # only failed attempts are retried
    return exc


def _as_date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _describe(exc: BaseException | None) -> str:
    """One line: the database's own message without SQLAlchemy's statement dump."""
    if exc is None:
        return ""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc)
    return f"{type(orig or exc).__name__}: {text_.splitlines()[0] if text_ else ''}"[:1000]
