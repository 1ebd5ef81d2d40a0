"""The full refresh's handover to the follower: tier 1 and the mapping read in one consistent snapshot.

While following is set up (``[follow] enabled``), a full refresh reads the raw table in one transaction
started on a consistent snapshot whose stream position the change stream reports
(:meth:`~summarizer.follow.stream.ChangeStream.snapshot`), and swaps in, with its tiers, the
follower's state row holding that position and the mirror of products, brands and categories as that
snapshot saw them. The follower then resumes from exactly the changes the snapshot did not see.

Each stream provides its snapshot: MariaDB's ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` reports
its binary log position and belongs to one session, so tier 1 is read month after month through it;
on PostgreSQL the refresh creates the follower's next replication slot, which exports the snapshot it
starts at, and with ``--jobs`` > 1 every connection reading a month begins on that snapshot
(``SET TRANSACTION SNAPSHOT``). The follower reads the new slot from the handed-over position on and
drops the old one.

The snapshot is read with plain SELECTs, which take no locks: on MariaDB an ``INSERT ... SELECT`` in
the REPEATABLE READ a snapshot needs would take shared locks on every raw row it reads and block the
writers for as long as it runs (measured: docs/follow.md). So the grouped tier-1 rows (never raw rows)
and the dimension rows are streamed out of the snapshot and written into the shadow tables through a
second connection, a few thousand rows per statement. Tiers 2 and 3 are then built from shadow tier 1
inside the database, as in every full refresh.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Select, Table, insert, select
from sqlalchemy.schema import CreateIndex, CreateTable

from .. import version
from ..ddl import ddl, sorted_indexes
from ..engines import Context
from ..model import OLD_SUFFIX, SHADOW_SUFFIX, FollowTables, Tiers
from ..months import as_date
from ..plan import RefreshPlan
from ..runs import utcnow
from . import statements as sql
from .stream import ChangeStream

log = logging.getLogger("summarizer.refresh")
ROWS_PER_WRITE = 5000


class Handover:
    """Fills a full refresh's shadow tier 1 and the follower's shadow tables from one snapshot."""

    def __init__(self, context: Context, stream: ChangeStream) -> None:
        self.context, self.stream = context, stream
        self.steps, self.rollup = context.steps, context.rollup
        self.engine = context.dialect.engine
        self.live, self.shadow = context.schema.follow(), context.schema.follow(SHADOW_SUFFIX)

    def pairs(self) -> list[tuple[Table, Table]]:
        """The follower's tables, swapped in with the tiers."""
        return list(zip(self.live, self.shadow, strict=True))

    def old_copies(self) -> list[Table]:
        return list(self.context.schema.follow(OLD_SUFFIX))

    def fill_shadows(self, shadow: Tiers, plan: RefreshPlan, stamp: dt.datetime, check: Callable[[], None],
                     jobs: int) -> dict[str, int] | None:
        dialect = self.context.dialect
        leftovers = [t.name + suffix for t in self.live for suffix in (SHADOW_SUFFIX, OLD_SUFFIX)]
        creates = [ddl(CreateTable(t), self.engine.dialect) for t in self.shadow]
        indexes = [ddl(CreateIndex(i), self.engine.dialect) for t in self.shadow for i in sorted_indexes(t)]
        with self.steps.timed("prepare"):
            self.steps.execute("follower tables", [*(dialect.drop_table_if_exists(n) for n in leftovers), *creates,
                                                   *indexes])
        with self.steps.timed("tier1"):
            position, months = self.steps.retry("snapshot", lambda: self._snapshot(shadow, plan, stamp, check, jobs))
        log.info("tier1: read in one snapshot at stream position %s (%d months)", position, len(months))
        data_version = self.steps.read("data version", lambda conn: int(
            conn.execute(version.current(self.context.schema.data_version(SHADOW_SUFFIX))).scalar_one()))
        self.steps.execute("follower state", [sql.first_state(self.shadow.state, position, data_version, utcnow())])
        self._upper_tiers(shadow, months, stamp, check)
        return None  # the refresh counts the tiers

    # --- the snapshot -----------------------------------------------------------------------------
    def _snapshot(self, shadow: Tiers, plan: RefreshPlan, stamp: dt.datetime, check: Callable[[], None],
                  jobs: int) -> tuple[str, list[dt.date]]:
        """Tier 1 and the mapping from one snapshot; the snapshot's position and its months. With ``jobs`` > 1
        and a snapshot other connections can join (PostgreSQL's exported one), months are read at once, each
        on a connection of its own begun on that snapshot; MariaDB's belongs to one session: one at a time."""
        targets = [shadow.asin, *self.shadow]
        self.steps.execute("clear the shadow tables", [sql.clear(t) for t in targets])
        with self.engine.connect() as snap, self.engine.connect() as write, self.stream.snapshot(snap) as snapshot:
            months = [as_date(m) for m in snap.execute(self.rollup.source_months()).scalars()]
            by_month = self.rollup.tier1_select(stamp, by_month=True)
            if plan.chunked and snapshot.join is not None and jobs > 1:
                join = snapshot.join

                def read_month(month: dt.date) -> None:
                    with self.engine.connect() as month_snap, self.engine.connect() as month_write:
                        join(month_snap)
                        self._copy(month_snap, month_write, by_month, shadow.asin, {"month": month})
                        month_snap.rollback()
                self.steps.parallel(months, jobs, check, read_month)
            elif plan.chunked:
                for month in months:
                    check()
                    self._copy(snap, write, by_month, shadow.asin, {"month": month})
            else:
                self._copy(snap, write, self.rollup.tier1_select(stamp, by_month=False), shadow.asin)
            for query, target in self._mapping_reads(self.shadow):
                self._copy(snap, write, query, target)
            snap.rollback()
        return snapshot.position, months

    def _mapping_reads(self, follow: FollowTables) -> list[tuple[Select[Any], Table]]:
        s = self.context.source
        products = select(s.products.c[s.product_asin.name].label("asin"),
                          s.products.c[s.product_brand.name].label("brand_id"))
        brands = select(s.brands.c[s.brand_id.name].label("brand_id"),
                        s.brands.c[s.brand_category.name].label("category_id"))
        categories = select(s.categories.c[s.category_id.name].label("category_id"))
        return [(products, follow.products), (brands, follow.brands), (categories, follow.categories)]

    @staticmethod
    def _copy(snap: Connection, write: Connection, query: Select[Any], target: Table,
              params: dict[str, Any] | None = None) -> None:
        """``query``'s rows (read in the snapshot) into ``target``, a few thousand per statement."""
        result = snap.execution_options(stream_results=True, yield_per=ROWS_PER_WRITE).execute(query, params or {})
        names = list(result.keys())
        statement = insert(target)
        for part in result.partitions():
            write.execute(statement, [dict(zip(names, row, strict=True)) for row in part])
        write.commit()

    # --- tiers 2 and 3 ----------------------------------------------------------------------------
    def _upper_tiers(self, shadow: Tiers, months: list[dt.date], stamp: dt.datetime,
                     check: Callable[[], None]) -> None:
        _, t2, t3 = shadow
        statements = {"tier2": [self.rollup.delete_month(t2), *self.rollup.tier2_inserts(t2, shadow.asin, stamp)],
                      "tier3": [self.rollup.delete_month(t3), self.rollup.tier3_insert(t3, t2, stamp)]}
        for month in months:
            check()
            for name, work in statements.items():
                with self.steps.timed(name):
                    self.steps.execute(f"{name} {month:%Y-%m}", work, {"month": month})
