"""A PostgreSQL replication connection: a logical slot streamed over the replication protocol.

psycopg 3 opens such a connection (``replication=database``) and runs replication commands
(``CREATE_REPLICATION_SLOT``, ``START_REPLICATION``) with the simple query protocol; it has no API
for the stream itself, so this module speaks it over libpq's copy functions (``pgconn``):

* the server sends CopyData frames: ``w`` (XLogData: a pgoutput message and the WAL positions) and
  ``k`` (keepalive: the end of the WAL it has decoded, and whether it wants an answer now);
* the client sends ``r`` (standby status update): the position it has durably *flushed*, which
  becomes the slot's ``confirmed_flush_lsn``; the server keeps the WAL after that position and
  ends a connection that stays silent for ``wal_sender_timeout`` (60 s by default).

Errors are raised as SQLAlchemy's ``DBAPIError`` subclasses, as every other database error of
summarizer is, so that the retry rules of ``dialects.py`` apply to them unchanged.
"""

from __future__ import annotations

import contextlib
import selectors
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy.exc import DBAPIError

from .pgcatalog import APPLICATION_NAME
from .pgoutput import lsn_text

PG_EPOCH_UNIX = 946_684_800  # 2000-01-01 UTC, where PostgreSQL counts its clock from
STREAMING = "START_REPLICATION (streaming)"  # what a streaming error names as its statement
FEEDBACK_EVERY = 10.0  # seconds between status updates: well inside the server's wal_sender_timeout
# output as the decoders expect it, whatever the server's defaults: ISO dates, UTC timestamps
SESSION_OPTIONS = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3"

_XLOG_END = struct.Struct("!Q")      # 'w', start of the data, *end of WAL on the server*, send time, the message
_KEEPALIVE = struct.Struct("!Qq?")   # after 'k': end of WAL, send time, reply requested
_STATUS = struct.Struct("!cQQQq?")   # 'r', written, flushed, applied, client time, reply requested


def wrap(exc: psycopg.Error, statement: str) -> DBAPIError:
    """A psycopg error as SQLAlchemy's (OperationalError, ProgrammingError, ...), a lost connection marked so."""
    lost = isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None
    wrapped = DBAPIError.instance(statement, None, exc, psycopg.Error, connection_invalidated=lost)
    assert isinstance(wrapped, DBAPIError)  # a psycopg.Error always becomes one
    return wrapped


@contextlib.contextmanager
def database_errors(statement: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise wrap(exc, statement) from exc


def connect(connect_args: Mapping[str, Any]) -> psycopg.Connection[Any]:
    """A replication connection with the session options the decoders rely on."""
    args = {"application_name": APPLICATION_NAME, **connect_args}
    args["options"] = f"{SESSION_OPTIONS} {args.get('options', '')}".strip()
    with database_errors("connect (replication=database)"):
        return psycopg.connect(**args, replication="database", autocommit=True)


class SlotStream:
    """``START_REPLICATION`` of one logical slot from one position: pgoutput messages, with the acknowledgements."""

    def __init__(self, connect_args: Mapping[str, Any], slot: str, start: int, options: str) -> None:
        self.slot, self.start = slot, start
        self.server_end = start  # how far the server has decoded and sent, from its frames and keepalives
        self._flushed = start
        self._last_status = 0.0
        self.conn = connect(connect_args)
        statement = f'START_REPLICATION SLOT "{slot}" LOGICAL {lsn_text(start)} ({options})'
        try:
            with database_errors(statement):
                self.conn.execute(statement)
        except BaseException:
            self.conn.close()
            raise
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.conn.pgconn.socket, selectors.EVENT_READ)
        self._send_status()

    def confirm(self, lsn: int) -> None:
        """Everything up to ``lsn`` is stored by the follower: the server may release the WAL before it."""
        if lsn > self._flushed:
            self._flushed = lsn
            self._send_status()

    def ask(self) -> None:
        """A status update that asks the server to reply at once (a keepalive saying how far it has sent)."""
        self._send_status(reply=True)

    def receive(self, timeout: float) -> bytes | None:
        """The next pgoutput message, or None when none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        pgconn = self.conn.pgconn
        while True:
            try:  # the hot path: one frame per change, so no context manager here
                size, frame = pgconn.get_copy_data(1)
            except psycopg.Error as exc:
                raise wrap(exc, STREAMING) from exc
            if size > 0:
                if frame[0] == 0x77:  # 'w': XLogData
                    end = _XLOG_END.unpack_from(frame, 9)[0]
                    if end > self.server_end:
                        self.server_end = end
                    return bytes(frame[25:])
                self._keepalive(frame)
                continue
            if size == -1:
                self._ended()
            if not self._wait(deadline):
                return None

    def _wait(self, deadline: float) -> bool:
        """Wait for input (sending a status update when one is due); False once ``deadline`` passed without any."""
        if time.monotonic() - self._last_status >= FEEDBACK_EVERY:
            self._send_status()
        left = deadline - time.monotonic()
        if self._selector.select(max(0.0, min(left, FEEDBACK_EVERY))):  # a zero timeout still looks at the socket
            with database_errors(STREAMING):
                self.conn.pgconn.consume_input()
            return True
        return left > 0

    def close(self) -> None:
        self._selector.close()
        self.conn.close()

    def _keepalive(self, frame: memoryview | bytes) -> None:
        if frame[0] == 0x6B:  # 'k'
            end, _sent, reply = _KEEPALIVE.unpack_from(frame, 1)
            self.server_end = max(self.server_end, end)
            if reply:
                self._send_status()

    def _send_status(self, reply: bool = False) -> None:
        now = int((time.time() - PG_EPOCH_UNIX) * 1_000_000)
        status = _STATUS.pack(b"r", self._flushed, self._flushed, self._flushed, now, reply)
        with database_errors("standby status update"):
            self.conn.pgconn.put_copy_data(status)
            self.conn.pgconn.flush()
        self._last_status = time.monotonic()

    def _ended(self) -> None:
        """The server ended the stream (the slot dropped, a shutdown): raise what it said."""
        result = self.conn.pgconn.get_result()
        statement = STREAMING
        if result is not None and result.error_message:
            raise wrap(pg_errors.error_from_result(result, encoding=self.conn.info.encoding), statement)
        raise wrap(psycopg.OperationalError("the server ended the replication stream"), statement)

