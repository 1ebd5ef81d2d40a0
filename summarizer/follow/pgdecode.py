"""pgoutput messages -> :class:`~summarizer.follow.stream.Transaction` objects of the source tables.

One :class:`TransactionDecoder` per streaming session (pgoutput describes each table once per session,
in a ``Relation`` message before its first change). It checks every such description against the
table's columns when following began: a column added, dropped, renamed or retyped, or a replica
identity that is no longer FULL, raises :class:`~summarizer.follow.stream.SchemaChanged` before any
change of that table is handed on. Values become Python values of their column's type with
psycopg's own loaders (``Decimal`` for NUMERIC, straight from its text, never through a float).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import postgres
from psycopg.abc import AdaptContext
from psycopg.adapt import Transformer
from psycopg.pq import Format

from .pgcatalog import SourceTable
from .pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    Truncate,
    Update,
    Value,
    decode,
)
from .stream import Op, RowChange, SchemaChanged, StreamGone


@dataclass(frozen=True)
class Decoded:
    """A committed transaction: its changes to the source tables, where it ends, when it committed."""

    changes: tuple[RowChange, ...]
    end_lsn: int
    committed_at: dt.datetime


class _Table:
    """A source table as this session's Relation message described it: its names and its loaders."""

    def __init__(self, configured: str, relation: Relation, context: AdaptContext | None) -> None:
        self.configured = configured
        self.names = [column.name for column in relation.columns]
        self.loader = Transformer(context)
        self.loader.set_loader_types([column.type_oid for column in relation.columns], Format.TEXT)

    def row(self, values: list[Value], old: list[Value] | None = None) -> dict[str, object]:
        if UNCHANGED in values:  # an update leaves a TOASTed value out: it is the old row's
            if old is None:
                raise SchemaChanged(f"{self.configured}: an update came without its old row")
            values = [o if v is UNCHANGED else v for v, o in zip(values, old, strict=True)]
        return dict(zip(self.names, self.loader.load_sequence(values), strict=True))  # type: ignore[arg-type]


class TransactionDecoder:
    """Feeds on pgoutput messages in order; hands back each committed transaction once its Commit arrives."""

    def __init__(self, tables: Sequence[SourceTable], context: AdaptContext | None = None) -> None:
        self._expected = {(t.schema, t.name): t for t in tables}
        self._by_oid = {t.oid: t for t in tables}
        self._context = context
        self._tables: dict[int, _Table | None] = {}  # relation OID -> the source table, None: not one of ours
        self._changes: list[RowChange] = []
        self.open = False  # inside a transaction (Begin seen, Commit not yet)

    def feed(self, payload: bytes) -> Decoded | None:
        message = decode(payload)
        if isinstance(message, Insert | Update | Delete):
            table = self._tables.get(message.relation)
            if table is not None:
                self._changes.append(_change(table, message))
            elif message.relation not in self._tables:
                raise ValueError(f"pgoutput sent a change of relation {message.relation} before describing it")
            return None
        return self._control(message)

    def _control(self, message: Message) -> Decoded | None:
        if isinstance(message, Begin):
            self.open, self._changes = True, []
        elif isinstance(message, Commit):
            self.open = False
            return Decoded(tuple(self._changes), message.end_lsn, message.committed_at)
        elif isinstance(message, Relation):
            self._tables[message.oid] = self._describe(message)
        elif isinstance(message, Truncate):
            self._truncated(message)
        return None

    def _describe(self, relation: Relation) -> _Table | None:
        table = self._expected.get((relation.schema, relation.name))
        if table is None:
            renamed = self._by_oid.get(relation.oid)
            if renamed is not None:  # its changes would otherwise pass unnoticed under the new name
                raise SchemaChanged(f"source table {renamed.configured} was renamed to "
                                    f"{relation.schema}.{relation.name} under the follower")
            return None
        if relation.columns != table.columns:
            raise SchemaChanged(f"the columns of source table {table.configured} changed under the follower: "
                                f"{_columns(table.columns)} when following began, now {_columns(relation.columns)}")
        if relation.replica_identity != "f":
            raise SchemaChanged(f"source table {table.configured} no longer has REPLICA IDENTITY FULL: its updates "
                                f"and deletes come without the whole old row")
        return _Table(table.configured, relation, self._context)

    def _truncated(self, message: Truncate) -> None:
        names = [t.configured for oid in message.relations if (t := self._tables.get(oid)) is not None]
        if names:
            raise StreamGone(f"{', '.join(names)} was truncated: a TRUNCATE carries no rows to subtract, so the "
                             f"tiers must be rebuilt from a full refresh (summarizer follow --resync)")


def _change(table: _Table, message: Insert | Update | Delete) -> RowChange:
    if isinstance(message, Insert):
        return RowChange(table.configured, Op.INSERT, None, table.row(message.new))
    if message.old_kind != "O" or message.old is None:  # under FULL the old row always comes
        raise SchemaChanged(f"a change of source table {table.configured} came without its whole old row "
                            f"(its REPLICA IDENTITY is no longer FULL)")
    before = table.row(message.old)
    if isinstance(message, Delete):
        return RowChange(table.configured, Op.DELETE, before, None)
    return RowChange(table.configured, Op.UPDATE, before, table.row(message.new, message.old))


def _columns(columns: Sequence[Column]) -> str:
    """``(asin text, value numeric(38,4))``: the names and the types, as the server spells them."""
    return "(" + ", ".join(f"{c.name} {_type_name(c)}" for c in columns) + ")"


def _type_name(column: Column) -> str:
    info = postgres.types.get(column.type_oid)
    if info is None:
        return f"type {column.type_oid}"
    if info.name == "numeric" and column.typmod >= 4:  # typmod = (precision << 16 | scale) + 4
        return f"numeric({(column.typmod - 4) >> 16},{(column.typmod - 4) & 0xFFFF})"
    if info.name in ("varchar", "bpchar") and column.typmod >= 4:  # typmod = length + 4
        return f"{info.name}({column.typmod - 4})"
    return info.name
