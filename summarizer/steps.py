"""The step machinery every tier engine is given: retries, timing, statements, months in parallel, progress.

Every step is safe to repeat, so a step that hits a transient error (deadlock, lock wait timeout,
lost connection) is retried as a whole: data steps are one transaction that deletes what it is
about to insert; DDL steps (which MySQL commits statement by statement) only do what is still
missing.

While the database cannot be reached (a restart), a step keeps trying for ``retry_budget_seconds``
however many attempts that takes; ``retry_attempts`` bounds the errors the database answers with.
A restart ends the run lock's session too, so a step tried again after a lost connection first calls
:attr:`Steps.relock` (set by the refresh once it holds the lock), which takes the lock again or stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Delete, Executable, Insert, Table, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import TableClause
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from . import version
from .config import Config
from .dialects import Dialect
from .errors import DatabaseUnavailable
from .model import Tiers
from .text import first_line

log = logging.getLogger("summarizer.refresh")  # the refresh's log lines, whichever module runs the step
T = TypeVar("T")


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


class Steps:
    """Runs a refresh's steps against one database: retried, timed, in parallel where asked."""

    def __init__(self, dialect: Dialect, config: Config, progress: Progress | None = None) -> None:
        self.dialect, self.config = dialect, config
        self.engine = dialect.engine
        self.progress = progress or LogProgress()
        self.timings: dict[str, float] = {}
        self._timings_lock = threading.Lock()  # months may run in several threads (--jobs)
        self.relock: Callable[[], None] | None = None  # takes the run lock again after a lost connection

    # --- retrying ---------------------------------------------------------------------------------
    def retry(self, what: str, work: Callable[[], T], *, lock_timeouts: bool = True, relock: bool = True,
              budget: float | None = None) -> T:
        """``work()``, tried again after transient database errors; after a lost connection the run lock is
        taken again first (unless ``relock`` is false). ``budget``: how long the database may stay away."""
        budget = self.config.refresh.retry_budget_seconds if budget is None else budget
        reconnecting = False

        def attempt() -> T:
            nonlocal reconnecting
            if reconnecting and relock and self.relock is not None:
                self.relock()  # the restart that cut this step's connection ended the lock's session too
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
                                      f"([refresh] retry_budget_seconds): {first_line(exc, named=True)}") from exc

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

        def wait_for(state: RetryCallState) -> float:
            return min(backoff(state), tries.budget_left()) if away(state) else backoff(state)

        def before_sleep(state: RetryCallState) -> None:
            assert state.next_action is not None
            if away(state):
                log.warning("%s: transient error, retry in %.1fs: the database cannot be reached "
                            "(%.0fs of %gs left): %s", what, state.next_action.sleep, tries.budget_left(), budget,
                            first_line(_failure(state), named=True))
                return
            log.warning("%s: transient error, retry %d of %d in %.1fs: %s", what, tries.answered,
                        cfg.retry_attempts - 1, state.next_action.sleep, first_line(_failure(state), named=True))

        # Only errors that can succeed on a second try; every step is safe to repeat (module docstring).
        return Retrying(retry=retry_if_exception(transient), stop=stop, wait=wait_for,
                        before_sleep=before_sleep, reraise=True)

    # --- running statements -------------------------------------------------------------------------
    def read(self, what: str, read: Callable[[Connection], T]) -> T:
        """``read(conn)`` on a pooled connection, tried again after transient database errors."""
        def once() -> T:
            with self.engine.connect() as conn:
                return read(conn)
        return self.retry(what, once)

    def execute(self, what: str, statements: Sequence[Executable | str],
                params: dict[str, Any] | None = None, *, timed_as: Sequence[str] = ()) -> list[int]:
        """Run ``statements`` in one transaction, retried as a whole on transient errors; their row counts.
        ``timed_as`` names a timing for each statement, which its seconds are added to."""
        def once() -> list[int]:
            with self.engine.begin() as conn:
                self.dialect.prepare_refresh_session(conn, self.config.refresh)
                conn = conn.execution_options(preserve_rowcount=True)  # psycopg's INSERT ... SELECT counts too
                counts = []
                for i, statement in enumerate(statements):
                    start = time.perf_counter()
                    counts.append(conn.execute(text(statement) if isinstance(statement, str) else statement,
                                               params or {}).rowcount)
                    if timed_as:
                        self._add_timing(timed_as[i], time.perf_counter() - start)
                return counts
        return self.retry(what, once)

    def replace_month(self, month: dt.date, statements: Sequence[Delete | Insert],
                      data_version: Table) -> Counter[str]:
        """One month of the live tiers in one transaction (``statements``, and the data version's bump with
        them); the rows each table gained or lost."""
        counts = self.execute(f"month {month:%Y-%m}", [*statements, version.bump(data_version)], {"month": month})
        change: Counter[str] = Counter()
        for statement, count in zip(statements, counts[:len(statements)], strict=True):
            table = statement.table
            assert isinstance(table, TableClause)
            change[table.name] += -count if isinstance(statement, Delete) else count
        return change

    def count(self, tiers: Tiers) -> dict[str, int | None]:
        counts = {name: select(func.count()).select_from(t) for name, t in tiers.by_name().items()}
        return self.read("count rows", lambda conn: {name: conn.execute(q).scalar_one() for name, q in counts.items()})

    # --- timing and months ----------------------------------------------------------------------------
    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._add_timing(name, time.perf_counter() - start)

    def _add_timing(self, name: str, seconds: float) -> None:
        with self._timings_lock:
            self.timings[name] = self.timings.get(name, 0.0) + seconds

    def parallel(self, months: Sequence[dt.date], jobs: int, check: Callable[[], None],
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
