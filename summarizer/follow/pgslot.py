"""The PostgreSQL change stream: a logical replication slot decoded by ``pgoutput``, read over the replication protocol.

A position is ``<slot>@<LSN>:<columns>``: the follower's slot, the end of the last transaction it
stored, and a fingerprint of the source tables' columns then. The slot travels in the position, so
the handover of a full refresh (a new slot, created with the refresh's snapshot) needs nothing
else; the fingerprint lets a restarted follower know that a table changed since its position even
when the stream after it shows only the new columns. Slot names: ``<slot_prefix>_<8 hex digits>``.

How the slot and the follower's state table stay consistent:

* ``read(since, stored=...)`` first acknowledges ``stored`` (default ``since``) to the server (the slot's
  ``confirmed_flush_lsn`` moves there, and the WAL before it may go): it is a position the follower has
  committed (its reader thread reads ahead, passing where it stands as ``since``),
  so a crash between its commit and the acknowledgement just leaves the slot behind, and the next
  ``read`` starts decoding at ``since`` (the server skips every transaction that committed before
  it), so nothing is yielded twice; a slot already *past* ``since`` has lost changes: StreamGone.
* The stream continues across ``read`` calls while each starts where the previous one stopped; any
  other ``since`` (a restart, a batch rolled back) opens a new stream there.
* A read is quiet (returns) only once the server has sent all it decoded of the WAL flushed by then
  (asked with a status update that requests a keepalive): a new session starts decoding at the slot's
  restart point, often far back, and the first changes may take longer than ``wait`` to come. Until
  then an idle wait yields a Transaction without changes at the position already reached ("not quiet").
* When nothing of the source tables commits for a while, other tables' WAL still accumulates behind
  the slot: an idle ``read`` then yields a Transaction without changes whose position lies past it
  (``heartbeat_bytes``), for the follower to store like any other.
* Reading from a slot drops this follower's other slots that lie at or before the position read
  (the old slot after a handover, or the slot a failed full refresh left behind).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from ..model import Source
from . import pgcatalog
from .pgdecode import Decoded, TransactionDecoder
from .pgoutput import lsn_text, lsn_value
from .pgreplication import SlotStream, connect, database_errors
from .stream import SchemaChanged, Snapshot, StreamGone, Transaction

log = logging.getLogger(__name__)

PLUGIN = "pgoutput"
SLOT_BUSY_SECONDS = 10.0  # how long a slot held by another process is waited for
OBJECT_IN_USE = "55006"  # "replication slot ... is active for PID ..."
HEARTBEAT_BYTES = 16 * 2**20  # one WAL segment: how far other tables' WAL may run ahead before an idle read says so
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_SNAPSHOT = re.compile(r"[0-9A-F]+(-[0-9A-F]+)+")
_POSITION = re.compile(r"([a-z0-9_]+)@([0-9A-F]{1,8}/[0-9A-F]{1,8}):([0-9a-f]+)")


@dataclass(frozen=True)
class ExportedSnapshot:
    """A snapshot exported with a new slot: connections that begin on it see exactly what precedes ``position``."""

    position: str
    name: str

    def begin(self, conn: Connection) -> None:
        """Start ``conn``'s transaction on this snapshot; it must not have read anything yet."""
        if conn.in_transaction():
            raise ValueError("a connection must begin on the snapshot before it reads anything")
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{self.name}'")


class PgSlotStream:
    """The :class:`~summarizer.follow.stream.ChangeStream` of a PostgreSQL database (15 or later)."""

    stores_empty = True  # the slot keeps the WAL after the stored position: a heartbeat's position is stored

    def __init__(self, engine: Engine, source: Source, *, slot_prefix: str = "summarizer_follow",
                 publication: str = "summarizer_follow", heartbeat_bytes: int = HEARTBEAT_BYTES) -> None:
        for what, name in (("slot prefix", slot_prefix), ("publication", publication)):
            if not _NAME.fullmatch(name) or len(name) > 54:
                raise ValueError(f"{what} {name!r}: lower-case letters, digits and _, at most 54 characters")
        self.engine, self.publication, self.slot_prefix = engine, publication, slot_prefix
        self.heartbeat_bytes = heartbeat_bytes
        self.busy_seconds = SLOT_BUSY_SECONDS
        self._names = [t.name for t in (source.financials, source.products, source.brands, source.categories)]
        self._ours = f"^{slot_prefix}_[0-9a-f]{{8}}$"
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # SQLAlchemy's adapters; the stream loads values with psycopg's own
        self._connect_args: dict[str, Any] = dict(params)
        self._quote = engine.dialect.identifier_preparer.quote
        self._session: _Session | None = None

    # --- what the server must provide ---------------------------------------------------------------
    def problems(self) -> list[str]:
        with self.engine.connect() as conn:
            found = pgcatalog.problems(conn, self._names, self.publication, self._ours, self._quote)
        return found or self._replication_refused()

    def setup_statements(self) -> list[str]:
        """What :meth:`prepare_source` would run: REPLICA IDENTITY FULL where missing, then the publication."""
        with self.engine.connect() as conn:
            return pgcatalog.setup_statements(conn, self._names, self.publication, self._quote)

    def prepare_source(self, lock_timeout: int = 5) -> list[str]:
        """Run :meth:`setup_statements` in one transaction (only on the user's explicit request); returns them."""
        with self.engine.begin() as conn:
            statements = pgcatalog.setup_statements(conn, self._names, self.publication, self._quote)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(lock_timeout)}s'")
            for statement in statements:
                conn.exec_driver_sql(statement)
        return statements

    # --- positions ------------------------------------------------------------------------------------
    def current_position(self) -> str:
        """The newest of this follower's slots (one is created when there is none) at the end of the WAL now."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = conn.execute(text(
                "SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name ~ :ours "
                "AND database = current_database() ORDER BY confirmed_flush_lsn DESC, slot_name LIMIT 1"),
                {"ours": self._ours}).one_or_none()
            if row is None:
                slot = self._new_slot_name()
                lsn = lsn_value(conn.execute(text(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot(:slot, :plugin)"),
                    {"slot": slot, "plugin": PLUGIN}).scalar_one())
            else:
                now = lsn_value(conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one())
                slot, lsn = str(row[0]), max(lsn_value(row[1]), now)
            return _position(slot, lsn, self._fingerprint(conn))

    def waiting(self, since: str) -> int | None:
        """Bytes of WAL written after ``since`` (an upper bound of what is waiting); None when the slot is gone."""
        slot, lsn, _ = self._parse(since)
        with self.engine.connect() as conn:
            behind = conn.execute(text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), CAST(:lsn AS pg_lsn)) "
                                       "FROM pg_replication_slots WHERE slot_name = :slot"),
                                  {"slot": slot, "lsn": lsn_text(lsn)}).scalar_one_or_none()
        return None if behind is None else max(0, int(behind))

    # --- reading --------------------------------------------------------------------------------------
    def read(self, since: str, *, max_changes: int, wait: float,
             stored: str | None = None) -> Iterator[Transaction]:
        slot, lsn, columns = self._parse(since)
        session = self._session_at(slot, lsn, columns)
        kept, kept_lsn, _ = self._parse(stored) if stored is not None else (slot, lsn, columns)
        try:
            if kept == slot:  # a position stored in another slot (a handover's new one) is confirmed there
                session.stream.confirm(min(kept_lsn, lsn))
            yielded = 0
            while yielded < max_changes:
                decoded = session.next(wait)
                if decoded is None:
                    if session.caught_up(self._flushed_wal()):
                        break
                    # quiet, but not because nothing is waiting: the server is still decoding (a session
                    # begins at the slot's restart point, often far back). Not quiet yet: say so, and wait on
                    yield Transaction((), _position(slot, session.yielded, columns), None)
                    continue
                yielded += len(decoded.changes)
                yield Transaction(decoded.changes, _position(slot, decoded.end_lsn, columns), decoded.committed_at)
            else:
                return
            beat = session.heartbeat(self.heartbeat_bytes)
            if beat is not None:
                yield Transaction((), _position(slot, beat, columns), None)
        except GeneratorExit:
            raise  # the follower stopped early: the session stays where it yielded last
        except DBAPIError:
            self._end_session()
            with contextlib.suppress(DBAPIError):  # a slot dropped or invalidated under the stream ends it so
                self._check_slot(slot, lsn)
            raise
        except BaseException:
            self._end_session()
            raise

    def snapshot_position(self, conn: Connection) -> str:
        with self.exported_snapshot() as snapshot:
            snapshot.begin(conn)
            return snapshot.position

    @contextlib.contextmanager
    def snapshot(self, conn: Connection) -> Iterator[Snapshot]:
        """A new slot's exported snapshot, begun on ``conn``; other connections join it while the block lasts."""
        with self.exported_snapshot() as exported:
            exported.begin(conn)
            yield Snapshot(exported.position, exported.begin)

    @contextlib.contextmanager
    def exported_snapshot(self) -> Iterator[ExportedSnapshot]:
        """A new slot and the snapshot it was created at, importable until the block ends (by several connections)."""
        slot = self._new_slot_name()
        conn = connect(self._connect_args)
        try:
            statement = f'CREATE_REPLICATION_SLOT "{slot}" LOGICAL {PLUGIN} EXPORT_SNAPSHOT'
            with database_errors(statement):
                row = conn.execute(statement).fetchone()
            assert row is not None and _SNAPSHOT.fullmatch(str(row[2])), row
            lsn, name = lsn_value(str(row[1])), str(row[2])
            with self.engine.connect() as seen:  # the columns as the snapshot sees them
                ExportedSnapshot("", name).begin(seen)
                columns = self._fingerprint(seen)
            yield ExportedSnapshot(_position(slot, lsn, columns), name)
        finally:
            conn.close()  # the snapshot lives until the exporting connection runs another command or closes

    def close(self) -> None:
        self._end_session()

    # --- the session ------------------------------------------------------------------------------------
    def _session_at(self, slot: str, lsn: int, columns: str) -> _Session:
        session = self._session
        if session is not None and session.slot == slot and session.yielded == lsn:
            return session
        self._end_session()
        tables = self._prepare(slot, lsn, columns)
        stream = self._start(slot, lsn)
        self._session = _Session(slot, lsn, stream, TransactionDecoder(tables, stream.conn))
        return self._session

    def _start(self, slot: str, lsn: int) -> SlotStream:
        """START_REPLICATION; a slot still held by a reader that just died (its WAL sender has not noticed yet)
        is waited for a little, and one held longer is another follower's: the server's error then says so."""
        options = f"proto_version '1', publication_names '\"{self.publication}\"'"
        patience = time.monotonic() + self.busy_seconds
        while True:
            try:
                return SlotStream(self._connect_args, slot, lsn, options)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == OBJECT_IN_USE and time.monotonic() < patience:
                    log.info("the replication slot %s is still held by another process; waiting for it", slot)
                    time.sleep(0.2)
                    continue
                with contextlib.suppress(DBAPIError):
                    self._check_slot(slot, lsn)
                raise

    def _prepare(self, slot: str, lsn: int, columns: str) -> list[pgcatalog.SourceTable]:
        """Check the slot, drop the superseded ones, and check the source tables against the position's columns."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            self._check_slot(slot, lsn, conn)
            self._drop_superseded(conn, slot, lsn)
            tables, missing = pgcatalog.source_tables(conn, self._names)
        if missing:
            raise SchemaChanged(f"source table {', '.join(missing)} no longer exists")
        changed = pgcatalog.changed_tables(tables, columns)
        if changed:
            raise SchemaChanged(f"the columns of source table {', '.join(changed)} changed after the stored position "
                                f"{lsn_text(lsn)}: the tiers must be rebuilt (summarizer follow --resync)")
        not_full = [name for t in tables for name in t.not_full(self._quote)]
        if not_full:
            raise SchemaChanged(f"{', '.join(not_full)} has no REPLICA IDENTITY FULL (a new partition?), so its "
                                f"updates and deletes would come without the whole old row: run ALTER TABLE ... "
                                f"REPLICA IDENTITY FULL on it, as summarizer follow --check says")
        return tables

    def _fingerprint(self, conn: Connection) -> str:
        tables, missing = pgcatalog.source_tables(conn, self._names)
        if missing:
            raise SchemaChanged(f"source table {', '.join(missing)} not found")
        return pgcatalog.fingerprint(tables)

    def _check_slot(self, slot: str, lsn: int, conn: Connection | None = None) -> None:
        """StreamGone when ``slot`` can no longer give what follows ``lsn``."""
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.engine.connect())
            row = conn.execute(text("SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots "
                                    "WHERE slot_name = :slot AND database = current_database()"),
                               {"slot": slot}).one_or_none()
        resync = "summarizer follow --resync rebuilds the tiers and follows from there"
        if row is None:
            raise StreamGone(f"the replication slot {slot} is gone (dropped?), and with it the changes after the "
                             f"stored position {lsn_text(lsn)}: {resync}")
        if row[1] == "lost":
            raise StreamGone(f"the replication slot {slot} lost the WAL after {lsn_text(lsn)} (it fell further behind "
                             f"than max_slot_wal_keep_size allows): {resync}")
        if row[0] is not None and lsn_value(row[0]) > lsn:
            raise StreamGone(f"the replication slot {slot} was advanced to {row[0]}, past the stored position "
                             f"{lsn_text(lsn)}: the changes in between are gone; {resync}")

    def _drop_superseded(self, conn: Connection, slot: str, lsn: int) -> None:
        stale = conn.execute(text(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name ~ :ours AND database = current_database() "
            "AND slot_name <> :slot AND NOT active AND confirmed_flush_lsn <= CAST(:lsn AS pg_lsn)"),
            {"ours": self._ours, "slot": slot, "lsn": lsn_text(lsn)}).scalars().all()
        for name in stale:
            with contextlib.suppress(DBAPIError):  # taken or dropped meanwhile: left to the next read
                conn.execute(text("SELECT pg_drop_replication_slot(:slot)"), {"slot": name})
                log.info("dropped the replication slot %s: the follower reads %s from %s on", name, slot, lsn_text(lsn))

    def _end_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):
                session.stream.close()

    def _flushed_wal(self) -> int:
        with self.engine.connect() as conn:
            return lsn_value(conn.execute(text("SELECT pg_current_wal_flush_lsn()::text")).scalar_one())

    def _new_slot_name(self) -> str:
        return f"{self.slot_prefix}_{secrets.token_hex(4)}"

    def _parse(self, position: str) -> tuple[str, int, str]:
        """``<slot>@<LSN>:<columns>`` -> its parts (ValueError when it is not one; StreamGone: not our slot)."""
        match = _POSITION.fullmatch(position)
        if match is None:
            raise ValueError(f"not a PostgreSQL stream position (<slot>@<LSN>:<columns>): {position!r}")
        slot, lsn, columns = match.groups()
        if not re.fullmatch(self._ours, slot):
            raise StreamGone(f"the stored position {position} names the slot {slot}, which is not one of this "
                             f"follower's ({self.slot_prefix}_...): summarizer follow --resync starts anew")
        return slot, lsn_value(lsn), columns

    def _replication_refused(self) -> list[str]:
        """The one check the catalog cannot make: a replication connection, as the stream opens it."""
        try:
            connect(self._connect_args).close()
        except DBAPIError as exc:
            return [f"a replication connection (replication=database) is refused: {str(exc.orig).strip()}; "
                    f"pg_hba.conf must let this user connect to this database (a logical replication connection "
                    f"matches the same lines as a normal one)"]
        return []


class _Session:
    """One stream of a slot from one position, with its decoder; ``yielded``: where the follower's next read starts."""

    def __init__(self, slot: str, start: int, stream: SlotStream, decoder: TransactionDecoder) -> None:
        self.slot, self.start, self.stream, self.decoder = slot, start, stream, decoder
        self.yielded = start  # the end of the last transaction (or heartbeat) handed to the follower
        self.passed = start   # the end of the last transaction seen, handed over or not (no source changes)

    def next(self, wait: float) -> Decoded | None:
        """The next transaction with source changes, or None when none completed within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            payload = self.stream.receive(max(0.0, deadline - time.monotonic()))
            if payload is None:
                return None
            decoded = self.decoder.feed(payload)
            if decoded is None or decoded.end_lsn <= self.passed:  # at or before since: stored already
                continue
            self.passed = decoded.end_lsn
            if decoded.changes:
                self.yielded = decoded.end_lsn
                return decoded

    def caught_up(self, flushed: int) -> bool:
        """Whether the server has sent all it decoded of the WAL up to ``flushed``; when not, asks it to say how
        far it is (its reply comes as a keepalive that the next receive reads)."""
        if max(self.passed, self.stream.server_end) >= flushed:
            return True
        self.stream.ask()
        return False

    def heartbeat(self, threshold: int) -> int | None:
        """A position past other tables' WAL when it ran ``threshold`` bytes ahead (and no transaction is open)."""
        ahead = max(self.passed, self.stream.server_end)
        if self.decoder.open or ahead <= self.yielded or ahead - self.yielded < threshold:
            return None
        self.yielded = self.passed = ahead
        return ahead


def _position(slot: str, lsn: int, columns: str) -> str:
    return f"{slot}@{lsn_text(lsn)}:{columns}"

