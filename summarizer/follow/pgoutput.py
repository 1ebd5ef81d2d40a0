"""PostgreSQL's ``pgoutput`` logical decoding messages (protocol version 1), decoded without a server.

``pgoutput`` is the output plugin PostgreSQL's own logical replication uses: built into every server
since PostgreSQL 10, its message format is documented ("Logical Replication Message Formats") and
stable, and it sends only the tables of a publication. Each message is one of:

* ``Begin`` / ``Commit`` around each committed transaction (the commit's LSN, its end and its time);
* ``Relation`` before a table's first change in a session and again after its definition changed:
  the table's schema, name, replica identity and columns (name, type OID, type modifier);
* ``Insert`` / ``Update`` / ``Delete`` with the row's values in text form (``None`` for NULL,
  :data:`UNCHANGED` for a TOASTed value the update did not touch), the old row under
  ``REPLICA IDENTITY FULL`` (``old_kind`` ``"O"``) or only its key (``"K"``);
* ``Truncate`` of some tables; anything else (origins, types) is :class:`Skipped`.

A position in the write-ahead log (an LSN) is a 64-bit integer, written ``X/Y`` in hexadecimal.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from enum import Enum

PG_EPOCH = dt.datetime(2000, 1, 1)  # PostgreSQL's timestamps count microseconds from here (UTC)

_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_BEGIN = struct.Struct("!QqI")        # final (commit) LSN, commit time, xid
_COMMIT = struct.Struct("!BQQq")      # flags, commit LSN, end LSN, commit time
_RELATION_HEAD = struct.Struct("!I")  # relation OID
_COLUMN_TAIL = struct.Struct("!Ii")   # type OID, type modifier


class Unchanged(Enum):
    """A TOASTed value an update left as it was: pgoutput sends a marker instead of the value."""

    TOAST = "unchanged-toast"


UNCHANGED = Unchanged.TOAST
Value = bytes | None | Unchanged


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    committed_at: dt.datetime  # UTC, naive
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int  # just after the commit record: where decoding resumes to skip this transaction
    committed_at: dt.datetime


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    typmod: int


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Insert:
    relation: int
    new: list[Value]


@dataclass(frozen=True)
class Update:
    relation: int
    old_kind: str | None  # 'O' the whole old row, 'K' its key only, None: not sent
    old: list[Value] | None
    new: list[Value]


@dataclass(frozen=True)
class Delete:
    relation: int
    old_kind: str
    old: list[Value]


@dataclass(frozen=True)
class Truncate:
    relations: tuple[int, ...]


@dataclass(frozen=True)
class Skipped:
    kind: str


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Skipped


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_value(text: str) -> int:
    """``'16/B374D848'`` -> its integer; ValueError when it is not an LSN."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not a PostgreSQL LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def pg_time(microseconds: int) -> dt.datetime:
    return PG_EPOCH + dt.timedelta(microseconds=microseconds)


def decode(message: bytes) -> Message:
    """One pgoutput message (the payload of an XLogData frame)."""
    kind = message[0]
    if kind == 0x49:  # 'I'
        (relation,) = _RELATION_HEAD.unpack_from(message, 1)
        return Insert(relation, _tuple(message, 6)[0])  # 'N' at 5
    if kind == 0x55:  # 'U'
        return _update(message)
    if kind == 0x44:  # 'D'
        (relation,) = _RELATION_HEAD.unpack_from(message, 1)
        return Delete(relation, chr(message[5]), _tuple(message, 6)[0])
    if kind == 0x42:  # 'B'
        final_lsn, when, xid = _BEGIN.unpack_from(message, 1)
        return Begin(final_lsn, pg_time(when), xid)
    if kind == 0x43:  # 'C'
        _flags, commit_lsn, end_lsn, when = _COMMIT.unpack_from(message, 1)
        return Commit(commit_lsn, end_lsn, pg_time(when))
    if kind == 0x52:  # 'R'
        return _relation(message)
    if kind == 0x54:  # 'T'
        (count,) = _INT32.unpack_from(message, 1)
        return Truncate(struct.unpack_from(f"!{count}I", message, 6))  # options byte at 5
    return Skipped(chr(kind))


def _update(message: bytes) -> Update:
    (relation,) = _RELATION_HEAD.unpack_from(message, 1)
    marker = chr(message[5])
    if marker == "N":
        return Update(relation, None, None, _tuple(message, 6)[0])
    old, pos = _tuple(message, 6)
    return Update(relation, marker, old, _tuple(message, pos + 1)[0])  # 'N' at pos


def _relation(message: bytes) -> Relation:
    (oid,) = _RELATION_HEAD.unpack_from(message, 1)
    schema, pos = _string(message, 5)
    name, pos = _string(message, pos)
    identity = chr(message[pos])
    (count,) = _INT16.unpack_from(message, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        column, pos = _string(message, pos + 1)  # flags byte (1: part of the key) first
        type_oid, typmod = _COLUMN_TAIL.unpack_from(message, pos)
        columns.append(Column(column, type_oid, typmod))
        pos += 8
    return Relation(oid, schema, name, identity, tuple(columns))


def _string(message: bytes, pos: int) -> tuple[str, int]:
    end = message.index(0, pos)
    return message[pos:end].decode(), end + 1


def _tuple(message: bytes, pos: int) -> tuple[list[Value], int]:
    """TupleData at ``pos``: the values, and the position after them."""
    (count,) = _INT16.unpack_from(message, pos)
    pos += 2
    values: list[Value] = []
    for _ in range(count):
        kind = message[pos]
        if kind == 0x74:  # 't': text
            (length,) = _INT32.unpack_from(message, pos + 1)
            values.append(message[pos + 5:pos + 5 + length])
            pos += 5 + length
        elif kind == 0x6E:  # 'n': NULL
            values.append(None)
            pos += 1
        elif kind == 0x75:  # 'u': unchanged TOASTed value
            values.append(UNCHANGED)
            pos += 1
        else:  # 'b' (binary) only comes when asked for; it is not
            raise ValueError(f"unexpected tuple value kind {chr(kind)!r} in a pgoutput message")
    return values, pos
