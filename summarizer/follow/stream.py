"""The contract between the follower and a database's change stream.

A :class:`ChangeStream` reads the server's own log of committed changes (MariaDB's binary log in row
format, a PostgreSQL logical replication slot) without triggers and without touching the writers. It
yields whole committed :class:`Transaction` objects in commit order, each carrying the opaque stream
position *after* it: the follower stores that position in the same transaction as the deltas it
applied, and a restarted follower reads again from the stored position, so no change is lost or
applied twice.

Row values arrive as Python values of the column's type: ``Decimal`` for DECIMAL/NUMERIC (never a
float), ``datetime.date`` for DATE, ``datetime.datetime`` for DATETIME/TIMESTAMP, ``int`` and ``str``.
Only the source tables the configuration names (raw, products, brands, categories) are reported;
everything else in the stream is skipped by the stream itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sqlalchemy.engine import Connection


class Op(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class RowChange:
    """One row's change in a source table: the whole row before (update, delete) and after (insert, update)."""

    table: str  # the source table's name as configured
    op: Op
    before: Mapping[str, object] | None
    after: Mapping[str, object] | None


@dataclass(frozen=True)
class Transaction:
    """One committed transaction's changes to the source tables, in the order they were made.

    ``changes`` may be empty: the stream moved past changes to other tables only. Where the stream
    :attr:`~ChangeStream.stores_empty`, its position is stored like any other (a PostgreSQL slot keeps
    the server's WAL until a position after it is stored)."""

    changes: Sequence[RowChange]
    position: str  # the stream position just after this transaction: where to resume
    committed_at: dt.datetime | None  # the server's commit time (UTC, naive), for the lag


@dataclass(frozen=True)
class Snapshot:
    """A consistent snapshot a full refresh reads the source tables in, and where following resumes after it.

    ``join`` starts another connection's transaction on the same snapshot (before it reads anything), for a
    refresh that reads with several connections; None when only the first connection can read it
    (MariaDB's consistent snapshot belongs to one session; PostgreSQL exports its snapshot)."""

    position: str
    join: Callable[[Connection], None] | None = None


class StreamGone(Exception):
    """The stored position can no longer be read (binary log purged, slot dropped), or the stream met a change
    it cannot turn into row changes (a TRUNCATE of a source table): resync needed."""


class SchemaChanged(Exception):
    """A source table's columns changed under the follower; following stops with this message."""


class ChangeStream(Protocol):
    """A database's change stream, opened for the configured source tables."""

    #: True when the server keeps its log for this reader until a later position is stored (a PostgreSQL
    #: slot): the follower then stores a position past other tables' changes too (a Transaction without
    #: changes), where otherwise it only reads on from there. False for MariaDB's binary log, which its own
    #: expiry keeps (and where storing would log a change of its own to pass over, and so on).
    stores_empty: bool

    def problems(self) -> list[str]:
        """What the server lacks for following (a setting, a privilege), each with how to set it; [] when ready."""

    def current_position(self) -> str:
        """The position of the newest committed change now: following from here skips everything before."""

    def read(self, since: str, *, max_changes: int, wait: float,
             stored: str | None = None) -> Iterator[Transaction]:
        """Committed transactions after ``since``, oldest first, until about ``max_changes`` row changes
        were yielded or nothing new arrived for ``wait`` seconds. Raises :class:`StreamGone` when
        ``since`` is no longer available. ``stored`` (default: ``since``) is the newest position the
        follower has committed: the stream may let the server release what lies at or before it, and
        nothing after it (a reader that reads ahead passes where it stands as ``since``)."""

    def snapshot(self, conn: Connection) -> AbstractContextManager[Snapshot]:
        """Start ``conn``'s transaction on a consistent snapshot (before it reads anything), with the position
        to follow from afterwards: exactly the changes that snapshot did not see come after it. A full
        refresh that reads the source tables in this snapshot (in ``conn``, and in the connections it lets
        :attr:`Snapshot.join` while the block lasts) records the position, and the follower resumes from
        there (the handover)."""

    def waiting(self, since: str) -> int | None:
        """How much is waiting after ``since`` (changes, bytes or events; None when the stream cannot tell)."""

    def close(self) -> None:
        """Release the connection (a slot or binlog position stays where the follower stored it)."""
