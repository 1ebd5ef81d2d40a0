"""The database engine: the tiers computed by the serving database itself, with rollup.py's SQL.

A full refresh fills the shadow tiers month by month (tier 1 from the raw table, then tier 2 from
tier 1 and tier 3 from tier 2), each month of the three tiers one transaction that deletes what it is
about to insert; without a covering index on the raw table tier 1 is one pass over it instead. On
PostgreSQL with one job (``--jobs 1``, the default), or without the covering index, each shadow tier is
one ``CREATE TABLE ... AS SELECT`` over every month instead (its SELECT may run with parallel workers,
where the planner finds that cheaper); with more jobs the months run in parallel as elsewhere, which
was faster there (docs/performance.md). An incremental refresh replaces each month of the live tiers in
one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Delete, Executable, Insert
from sqlalchemy.sql.expression import TableClause

from ..ddl import check_source
from ..model import Tiers
from ..months import as_date
from ..plan import RefreshPlan, choose_plan, index_advice
from ..rawmonths import read_months
from ..runs import Mode
from .base import Context, MonthWork

log = logging.getLogger("summarizer.refresh")

DATABASE = "database"


class DatabaseEngine:
    """The tiers computed with INSERT ... SELECT in the serving database."""

    VALUE_PRECISION_CAP = 0
    REPORTS_DUPLICATES_AS_FAILURE = False

    def __init__(self, context: Context) -> None:
        self.context = context
        self.steps, self.rollup = context.steps, context.rollup

    def preflight(self, mode: Mode) -> None:
        check_source(self.context.dialect, self.context.source)

    def reads_source_here(self) -> bool:
        return True

    def plan(self) -> RefreshPlan:
        return choose_plan(self.context.dialect, self.context.source)

    def fill_shadows(self, shadow: Tiers, plan: RefreshPlan, stamp: dt.datetime, check: Callable[[], None],
                     jobs: int) -> dict[str, int]:
        """Fills the shadow tiers; the rows each holds, from the statements' row counts (no COUNT(*) after)."""
        self._written: Counter[str] = Counter()
        self._written_lock = threading.Lock()  # months may run in several threads
        if self.context.dialect.CREATE_TABLE_AS and (jobs == 1 or not plan.chunked):
            self._tiers_as_select(shadow, stamp)
            return {name: self._written[table.name] for name, table in shadow.by_name().items()}
        with self.steps.timed("months"):
            months = self._full_months(shadow, plan, stamp)
        self._full_chunks(shadow, months, stamp, plan.chunked, check, jobs)
        return {name: self._written[table.name] for name, table in shadow.by_name().items()}

    def _tiers_as_select(self, shadow: Tiers, stamp: dt.datetime) -> None:
        """PostgreSQL: each shadow tier by one CREATE TABLE ... AS SELECT over all months, whose SELECT may run
        with parallel workers (an INSERT ... SELECT's never does), tier by tier, one transaction each."""
        for name, statements in self.rollup.tiers_as_select(list(shadow), stamp):
            with self.steps.timed(name):
                log.info("%s: one CREATE TABLE ... AS SELECT over every month", name)
                counts = self.steps.execute(f"{name} (create as select)", statements)
            with self._written_lock:
                self._written[statements[1].table.name] += counts[1]

    def _execute_counted(self, what: str, statements: Sequence[Executable], params: dict[str, object] | None = None,
                         *, timed_as: Sequence[str] = ()) -> None:
        """``statements`` in one transaction; each INSERT's rows added to its table's count, each DELETE's taken."""
        counts = self.steps.execute(what, statements, params, timed_as=timed_as)
        with self._written_lock:
            for statement, count in zip(statements, counts, strict=True):
                if isinstance(statement, Insert | Delete) and isinstance(statement.table, TableClause):
                    self._written[statement.table.name] += -count if isinstance(statement, Delete) else count

    @contextmanager
    def months(self, months: Sequence[dt.date], stamp: dt.datetime,
               check: Callable[[], None]) -> Iterator[MonthWork]:
        context = self.context
        statements = self.rollup.month_statements(list(context.schema.live()), stamp)
        if months and not self.plan().chunked:
            log.warning("the raw table has no covering index: each month reads the whole table. %s",
                        index_advice(context.dialect, context.source))
        data_version = context.schema.data_version()
        yield lambda month: self.steps.replace_month(month, statements, data_version)

    def _full_months(self, shadow: Tiers, plan: RefreshPlan, stamp: dt.datetime) -> list[dt.date]:
        if not plan.chunked:
            with self.steps.timed("tier1"):
                log.info("tier1: one pass over the raw table")
                self._execute_counted("tier1 (one pass)", [
                    self.rollup.delete_all(shadow.asin), self.rollup.tier1_insert(shadow.asin, stamp, by_month=False)])
            query = self.rollup.table_months(shadow.asin)
            return self.steps.read("months", lambda conn: [as_date(m) for m in conn.execute(query).scalars()])
        return self.steps.read("months", lambda conn: read_months(conn, self.context.dialect, self.rollup))

    def _full_chunks(self, shadow: Tiers, months: list[dt.date], stamp: dt.datetime, chunked: bool,
                     check: Callable[[], None], jobs: int = 1) -> None:
        t1, t2, t3 = shadow
        steps = [("tier1", [self.rollup.delete_month(t1), self.rollup.tier1_insert(t1, stamp, by_month=True)])] \
            if chunked else []
        steps += [("tier2", [self.rollup.delete_month(t2), *self.rollup.tier2_inserts(t2, t1, stamp)]),
                  ("tier3", [self.rollup.delete_month(t3), self.rollup.tier3_insert(t3, t2, stamp)])]

        statements = [s for _, tier in steps for s in tier]
        names = [name for name, tier in steps for _ in tier]

        def month_steps(month: dt.date) -> None:  # the month's three tiers in one transaction: one commit
            self._execute_counted(f"month {month:%Y-%m}", statements, {"month": month}, timed_as=names)
        progress = self.steps.progress
        progress.begin("full refresh", len(months))
        try:
            if jobs > 1:  # the shadow tiers' months are independent: several at once, one connection each
                self.steps.parallel(months, jobs, check, month_steps)
                return
            for month in months:
                check()
                month_steps(month)
                progress.advance(f"{month:%Y-%m}")
        finally:
            progress.end()
