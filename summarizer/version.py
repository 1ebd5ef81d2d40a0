"""The data version: one number that changes in the same transaction as every change to the live tiers.

The read API keys its cache by it, so it must never stay the same while the tiers change, whatever
point a refresh is killed at. It lives in a one-row table (``[summary] data_version_table``, created
by ``init``):

* each month an incremental refresh replaces (database engine or Spark) adds :func:`bump` to that
  month's transaction: the month and the new number commit together or not at all;
* a full refresh copies the row into a shadow table beside the shadow tiers, one higher
  (:func:`successor`), and swaps it in *with* the tiers: in the same transaction on PostgreSQL and
  SQLite, and in the same multi-table ``RENAME TABLE`` on MySQL/MariaDB, where a swap is DDL that
  commits on its own and no ``UPDATE`` could share its transaction. A reader that sees the new tiers
  sees the new number, even when the refresh is killed right after the swap.

Anything else that changes the live tiers (a change-stream follower, say) runs :func:`bump` in its
own transaction, holding the run lock like a refresh, so no two writers ever hand out the same number.

The first number is the time ``init`` ran, in milliseconds: a database whose summaries are dropped
and initialised again starts above any number it handed out before, so a shared cache (Redis) never
serves an answer computed from the earlier tables. Statements here are pure builders.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Insert, Select, Table, Update, insert, select, update

ROW_ID = 1


def current(table: Table) -> Select[Any]:
    """The data version (no row: nothing, read as 0)."""
    return select(table.c.version).where(table.c.id == ROW_ID)


def bump(table: Table) -> Update:
    """The next data version: run it in the transaction that changes the live tiers."""
    return update(table).where(table.c.id == ROW_ID).values(version=table.c.version + 1)


def seed(table: Table, start: int | None = None) -> Insert:
    """The row ``init`` writes into a new (or emptied) data version table."""
    return insert(table).values(id=ROW_ID, version=first_version() if start is None else start)


def successor(shadow: Table, live: Table) -> Insert:
    """The shadow copy a full refresh swaps in with its tiers: the live row, one higher."""
    return insert(shadow).from_select(["id", "version"], select(live.c.id, live.c.version + 1))


def first_version() -> int:
    """Milliseconds since 1970: above any number an earlier set of these tables reached (module docstring)."""
    return int(time.time() * 1000)
