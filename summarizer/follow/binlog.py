"""MariaDB's (and MySQL's) change stream: the binary log in row format, read as a replica reads it.

The follower connects as a replica would (``COM_BINLOG_DUMP`` through the ``mysql-replication``
package, over PyMySQL) and reads the configured source tables' row events with whole before and after
images. What the server must have, and how to set it, is :meth:`BinlogStream.problems`:

* ``log_bin`` on, ``binlog_format = ROW``, ``binlog_row_image = FULL`` (every column of the row before and
  after a change, not only the changed ones), ``binlog_row_metadata = FULL`` (column names in the log, so
  each event says which column is which as it was written);
* the account: ``REPLICATION SLAVE`` (read the log) and ``BINLOG MONITOR`` (MariaDB 10.5 on; MySQL and
  older MariaDB: ``REPLICATION CLIENT``) to see the log's position and files.

A position is ``<binlog file>:<offset>`` just after a transaction's commit (its ``XID`` event). A full
refresh's snapshot position is ``binlog_snapshot_file`` and ``binlog_snapshot_position`` of a
``START TRANSACTION WITH CONSISTENT SNAPSHOT``: exactly the transactions committed after that snapshot
come after it. DDL that names a source table (``ALTER``, ``TRUNCATE``, ``RENAME``, ``DROP``) raises
:class:`~summarizer.follow.stream.SchemaChanged`: a TRUNCATE, for one, is logged as a statement, with no row
events the follower could count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..dialects import Dialect
from ..model import Source
from .stream import Op, RowChange, SchemaChanged, Snapshot, StreamGone, Transaction

log = logging.getLogger(__name__)

PURGED = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: the file or position asked for is not in the log any more
SETTINGS = {  # variable -> (wanted value, what to put in the server's configuration)
    "log_bin": ("1", "log_bin = binlog (in the [mariadbd] section of the server's configuration; needs a restart)"),
    "binlog_format": ("ROW", "binlog_format = ROW (SET GLOBAL binlog_format = 'ROW', and in the configuration)"),
    "binlog_row_image": ("FULL", "binlog_row_image = FULL (SET GLOBAL binlog_row_image = 'FULL', and in the "
                                 "configuration)"),
    "binlog_row_metadata": ("FULL", "binlog_row_metadata = FULL (SET GLOBAL binlog_row_metadata = 'FULL', and in "
                                    "the configuration; MariaDB 10.5 or MySQL 8.0.14 and later)"),
}
DDL = re.compile(r"^\s*(ALTER|TRUNCATE|RENAME|DROP|CREATE)\b", re.IGNORECASE)
# where a DDL statement names tables: after TABLE (and IF [NOT] EXISTS), TRUNCATE, TO, and in a comma list
TABLE_NAME = re.compile(r"(?:\bTRUNCATE(?:\s+TABLE)?\b|\bTABLES?\b(?:\s+IF\s+(?:NOT\s+)?EXISTS)?|\bTO\b|,)\s*"
                        r"(?:`?(\w+)`?\s*\.\s*)?`?(\w+)`?", re.IGNORECASE)
INDEX_ONLY = re.compile(r"^\s*(?:(?:ADD|DROP)\s+(?:UNIQUE\s+)?(?:INDEX|KEY)\b.*|ALGORITHM\s*=.*|LOCK\s*=.*)$",
                        re.IGNORECASE | re.DOTALL)
ALTER_TABLE = re.compile(r"^\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+(?:`?\w+`?\s*\.\s*)?`?\w+`?\s*(.*)$",
                         re.IGNORECASE | re.DOTALL)


def parse_position(position: str) -> tuple[str, int]:
    name, _, offset = position.rpartition(":")
    if not name or not offset.isdigit():
        raise ValueError(f"not a binary log position (file:offset): {position!r}")
    return name, int(offset)


def format_position(name: str, offset: int) -> str:
    return f"{name}:{offset}"


def derived_server_id(database: str) -> int:
    """A replica server id from the database name (two followers on one server must not share one)."""
    return 1_000_000 + int.from_bytes(hashlib.sha256(database.encode()).digest()[:3], "big")


def changed_source_table(query: str, tables: set[str], schema: str, session_schema: str) -> str | None:
    """The source table (of ``tables`` in ``schema``) whose rows or columns a DDL statement changes, if any.

    Adding or dropping an index changes neither (``init --source-indexes`` does it online): not a change."""
    if not DDL.match(query) or re.match(r"^\s*(CREATE|DROP)\s+(UNIQUE\s+)?INDEX\b", query, re.IGNORECASE):
        return None
    alter = ALTER_TABLE.match(query)
    if alter and all(INDEX_ONLY.match(clause) for clause in _clauses(alter.group(1))):
        return None
    for qualifier, name in TABLE_NAME.findall(query):
        if name in tables and (qualifier or session_schema) == schema:
            return str(name)
    return None


def _clauses(text: str) -> list[str]:
    """An ALTER TABLE's clauses: split at the commas outside parentheses."""
    clauses, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            clauses.append(current)
            current = ""
        else:
            current += char
    return [c for c in [*clauses, current] if c.strip()]


class BinlogStream:
    """The binary log of the serving MariaDB/MySQL database, for the configured source tables."""

    stores_empty = False  # the server's expiry keeps the binary log, whatever a replica has read

    def __init__(self, dialect: Dialect, source: Source, server_id: int = 0) -> None:
        self.dialect, self.source = dialect, source
        url = dialect.engine.url
        self.schema = str(url.database or "")
        self.tables = {t.name for t in (source.financials, source.products, source.brands, source.categories)}
        self.server_id = server_id or derived_server_id(self.schema)
        self.settings: dict[str, Any] = {"host": url.host or "127.0.0.1", "port": int(url.port or 3306),
                                         "user": url.username or "", "password": url.password or ""}
        self._reader: Any = None
        self._at: str | None = None  # the position the open reader stands at (after its last transaction)

    # --- what the server needs ----------------------------------------------------------------------
    def problems(self) -> list[str]:
        found = []
        with self.dialect.engine.connect() as conn:
            values = conn.execute(text("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, "
                                       "@@binlog_row_metadata")).one()
            for (name, (wanted, how)), value in zip(SETTINGS.items(), values, strict=True):
                if str(value).upper() != wanted:
                    found.append(f"the server's {name} is {value}, following needs {wanted}: set {how}")
            found += self._missing_privileges(conn)
        return found

    def _missing_privileges(self, conn: Connection) -> list[str]:
        grants = " ".join(str(row[0]).upper() for row in conn.execute(text("SHOW GRANTS")))
        global_grants = " ".join(g for g in re.findall(r"GRANT (.*?) ON \*\.\* TO", grants))
        account = self.dialect.whoami(conn)[0]
        have = set(re.split(r",\s*", global_grants))
        if "ALL PRIVILEGES" in have:
            return []
        wanted = [("REPLICATION SLAVE", ("REPLICATION SLAVE", "REPLICATION REPLICA"), "read the binary log"),
                  ("BINLOG MONITOR", ("BINLOG MONITOR", "REPLICATION CLIENT"), "see its position and files")]
        return [f"the account {account} lacks {name} (to {why}): as an administrator run: "
                f"GRANT {name} ON *.* TO {account}" + (" (MySQL and MariaDB before 10.5: REPLICATION CLIENT)"
                                                         if name == "BINLOG MONITOR" else "")
                for name, aliases, why in wanted if not have & set(aliases)]

    # --- positions --------------------------------------------------------------------------------------
    def current_position(self) -> str:
        with self.dialect.engine.connect() as conn:
            row = conn.execute(text("SHOW MASTER STATUS")).first()
        if row is None:
            raise StreamGone("the server's binary log is off (log_bin): following needs it")
        return format_position(str(row[0]), int(row[1]))

    def snapshot_position(self, conn: Connection) -> str:
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        status: dict[str, Any] = {str(k): v for k, v in conn.exec_driver_sql(
            "SHOW STATUS LIKE 'binlog_snapshot_%%'").all()}
        return format_position(str(status["Binlog_snapshot_file"]), int(status["Binlog_snapshot_position"]))

    @contextlib.contextmanager
    def snapshot(self, conn: Connection) -> Iterator[Snapshot]:
        """The session's own consistent snapshot: no other connection can join it."""
        yield Snapshot(self.snapshot_position(conn))

    def waiting(self, since: str) -> int | None:
        """Bytes of binary log after ``since`` (every table's changes, not only the source tables')."""
        name, offset = parse_position(since)
        with self.dialect.engine.connect() as conn:
            files = [(str(r[0]), int(r[1])) for r in conn.execute(text("SHOW BINARY LOGS"))]
        names = [f for f, _ in files]
        if name not in names:
            return None
        return max(0, sum(size for f, size in files[names.index(name):]) - offset)

    # --- reading ------------------------------------------------------------------------------------------
    def read(self, since: str, *, max_changes: int, wait: float,
             stored: str | None = None) -> Iterator[Transaction]:
        """The binary log keeps what the server's expiry keeps, whatever a replica read: ``stored`` is not needed."""
        if self._reader is None or self._at != since:
            self._open(since, wait)
        yielded = 0
        changes: list[RowChange] = []
        try:
            for event in self._events():
                kind = type(event).__name__
                if kind == "HeartbeatLogEvent":
                    if not changes:
                        return
                    continue
                if kind in ("WriteRowsEvent", "UpdateRowsEvent", "DeleteRowsEvent"):
                    changes += self._row_changes(event, kind)
                    continue
                if kind == "QueryEvent":
                    transaction = self._query(event, changes)
                elif kind == "XidEvent":
                    transaction = self._transaction(event, changes)
                else:
                    continue
                if transaction is None:
                    continue
                changes = []
                self._at = transaction.position
                yield transaction
                yielded += len(transaction.changes)
                if yielded >= max_changes:
                    return
        except GeneratorExit:  # the caller has what it wants: the reader stands after the last transaction
            raise
        except BaseException:
            self.close()  # a half-read transaction: read it again from the last whole one
            raise

    def _events(self) -> Iterator[Any]:
        import pymysql

        while True:
            try:
                event = self._reader.fetchone()
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] == PURGED:
                    raise StreamGone(f"the binary log at {self._at} is gone from the server ({exc.args[1]}): the "
                                     "changes after it cannot be read any more. Run `summarizer follow --resync` "
                                     "(a full refresh that hands its own position over)") from None
                raise
            if event is None:  # non-blocking reader at the end of the log
                return
            yield event

    def _open(self, since: str, wait: float) -> None:
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import (
            HeartbeatLogEvent,
            QueryEvent,
            RotateEvent,
            XidEvent,
        )
        from pymysqlreplication.row_event import (
            DeleteRowsEvent,
            UpdateRowsEvent,
            WriteRowsEvent,
        )

        self.close()
        name, offset = parse_position(since)
        self._reader = BinLogStreamReader(
            connection_settings=dict(self.settings), server_id=self.server_id, log_file=name, log_pos=offset,
            resume_stream=True, blocking=True, slave_heartbeat=max(wait, 0.01), only_schemas=[self.schema],
            only_tables=sorted(self.tables), enable_logging=False,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent, RotateEvent,
                         HeartbeatLogEvent])
        self._at = since

    def _row_changes(self, event: Any, kind: str) -> list[RowChange]:
        if event.table not in self.tables or event.schema != self.schema:
            return []
        if kind == "WriteRowsEvent":
            return [RowChange(event.table, Op.INSERT, None, row["values"]) for row in event.rows]
        if kind == "DeleteRowsEvent":
            return [RowChange(event.table, Op.DELETE, row["values"], None) for row in event.rows]
        return [RowChange(event.table, Op.UPDATE, row["before_values"], row["after_values"]) for row in event.rows]

    def _transaction(self, event: Any, changes: list[RowChange]) -> Transaction:
        committed = dt.datetime.fromtimestamp(event.timestamp, dt.UTC).replace(tzinfo=None)
        return Transaction(changes, format_position(self._reader.log_file, self._reader.log_pos), committed)

    def _query(self, event: Any, changes: list[RowChange]) -> Transaction | None:
        query = event.query.strip() if isinstance(event.query, str) else str(event.query)
        if query.upper() == "BEGIN":
            return None
        if query.upper() == "COMMIT":  # a transaction of a non-transactional engine
            return self._transaction(event, changes)
        session = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        table = changed_source_table(query, self.tables, self.schema, session)
        if table is not None:
            raise SchemaChanged(f"the source table {table} was changed by DDL in the stream ({query[:200]}): "
                                "the follower cannot count that change row by row and has stopped. After the "
                                "change, check [source] and run `summarizer follow --resync`")
        return self._transaction(event, changes)  # other DDL commits on its own: a transaction boundary

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception as exc:  # the connection may be the thing that failed
                log.debug("closing the binary log reader: %s", exc)
            self._reader = None
        self._at = None
