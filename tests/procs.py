"""Helpers for the tests that start real ``summarizer`` processes and watch the database from outside.

* :func:`start` starts ``python -m summarizer ...`` in the background, with the environment of
  ``clirun.environment``; :class:`Proc` collects its stderr line by line while it runs (a command run
  to the end is ``clirun.run_cli``).
* :func:`watcher` gives a second MariaDB or PostgreSQL session: it finds the refresh's sessions
  on the server, kills them, and holds the locks that make a refresh wait where a test wants it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from summarizer.dialects import PostgresDialect

from .clirun import command, environment

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0
FILLER = "#"  # what fills the pipe of a stalled process


def wait_until(predicate: Callable[[], T], what: str, timeout: float = DEFAULT_TIMEOUT, every: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# the statement that writes a tier: INSERT ... SELECT, or on PostgreSQL a full refresh's CREATE TABLE ... AS SELECT
TIER_WRITE = ("INSERT INTO%", "CREATE TABLE%")


class Proc:
    """A running ``summarizer`` process; its stderr is read into :attr:`lines` as it arrives."""

    def __init__(self, popen: subprocess.Popen[str], stderr: IO[str] | None = None) -> None:
        self.popen = popen
        self.lines: list[str] = []
        self.stdout = ""
        self._stderr = stderr or popen.stderr
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        if stderr is None:
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def resume(self) -> None:
        """Start reading the stderr of a process started with ``stalled=True``: its next write goes through."""
        self._reader.start()

    def _pump(self) -> None:
        assert self._stderr is not None
        for line in self._stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n").lstrip(FILLER))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The first stderr line matching ``pattern`` (a regex), waiting for it to be written."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = next((line for line in self.lines if re.search(pattern, line)), None)
                if match is not None:
                    return match
                if self._ended:
                    raise AssertionError(f"the process ended without writing {pattern!r}:\n{self.stderr}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no line matching {pattern!r} after {timeout}s:\n{self.stderr}")
                self._changed.wait(timeout=0.5)

    def signal(self, number: int) -> None:
        os.kill(self.popen.pid, number)

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=DEFAULT_TIMEOUT)
        if not self._reader.is_alive() and not self._ended:
            self.resume()
        self._reader.join(timeout=10)
        self.close()

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the exit; returns the exit code (stdout in :attr:`stdout`, stderr in :attr:`stderr`)."""
        assert self.popen.stdout is not None
        if not self._reader.is_alive() and not self._ended:
            self.resume()
        self.stdout = self.popen.stdout.read()
        code = self.popen.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self.close()
        return code

    def close(self) -> None:
        for stream in (self.popen.stdout, self._stderr):
            if stream is not None:
                stream.close()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def start(url: URL, *args: str, cwd: Path, stalled: bool = False, **settings: str) -> Proc:
    """``summarizer ARGS`` in the background; ``settings`` as SECTION_KEY=value environment overrides.

    ``stalled``: its stderr is a pipe filled up beforehand, so the process stops at its first log
    line (``run N started``, written once it holds the lock and has recorded its run) until
    :meth:`Proc.resume`. A deterministic pause, on any engine, at a point where it holds no database lock.
    """
    stderr: Any = subprocess.PIPE
    if stalled:
        reader, stderr = _full_pipe()
    popen = subprocess.Popen(command(*args), cwd=cwd, env=environment(url, settings), text=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
    if not stalled:
        return Proc(popen)
    os.close(stderr)
    return Proc(popen, os.fdopen(reader, "r"))


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: the first write to it blocks until the other end reads."""
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    for size in (4096, 1):
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(writer, FILLER.encode() * size)
    os.set_blocking(writer, True)
    return reader, writer


class Watcher:
    """A session of the test's own beside the refresh's (autocommit unless it begins one).

    It finds the refresh's sessions on the server, kills them, and holds the locks that make a
    refresh wait where a test wants it. :func:`watcher` gives the one for the URL's engine; the
    engines differ only in how they show and end sessions, below.
    """

    # (id, state, statement) of the other sessions on this database, for :meth:`sessions` to filter
    SESSIONS_SQL = ""
    TABLE_LOCK_WAIT = "%"  # the state of a session waiting for a table lock (a LIKE pattern)
    ROW_LOCK_WAIT = "%"    # the state of a session waiting for a row lock
    SWAP_STATEMENT = ""    # how the swap's statement begins (a LIKE pattern)
    POLL_EVERY = 0.05      # seconds between looks at the server

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.quote = self.engine.dialect.identifier_preparer.quote
        self.conn = self.engine.connect()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()

    def connection(self) -> Connection:
        """Another session on the same database (closed by the caller)."""
        return self.engine.connect()

    # --- what differs per engine ----------------------------------------------------------------
    def kill(self, session_id: int) -> None:
        """End another session from here, as an operator would."""
        raise NotImplementedError

    def lock_holder(self, name: str) -> int | None:
        """The session holding the run lock ``name``, if any."""
        raise NotImplementedError

    def take_lock(self, name: str) -> bool:
        """Take the run lock ``name`` on this session, as another run would."""
        raise NotImplementedError

    def has_written(self, session_id: int) -> bool:
        """Has that session's open transaction changed a row yet? (MariaDB's answer can be stale: poll
        it with :meth:`wait_until`.)"""
        raise NotImplementedError

    def _lock_table_sql(self, tables: Sequence[str]) -> tuple[str, str | None]:
        raise NotImplementedError

    # --- the same on every engine ---------------------------------------------------------------
    def sessions(self, info_like: str | tuple[str, ...] = "%", state_like: str = "%") -> list[tuple[int, str, str]]:
        """(id, state, statement) of the other sessions on this database running a statement like ``info_like``
        (one LIKE pattern, or any of several)."""
        patterns = (info_like,) if isinstance(info_like, str) else info_like
        params = {f"info{i}": pattern for i, pattern in enumerate(patterns)}
        matches = " OR ".join(f"info LIKE :{name}" for name in params)
        rows = self.conn.execute(text(f"SELECT * FROM ({self.SESSIONS_SQL}) s WHERE ({matches}) "
                                      "AND state LIKE :state"), {**params, "state": state_like}).all()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def wait_until(self, predicate: Callable[[], T], what: str, timeout: float = DEFAULT_TIMEOUT) -> T:
        """:func:`wait_until`, looking at the server no more often than it can show something new."""
        return wait_until(predicate, what, timeout, every=self.POLL_EVERY)

    def wait_for_session(self, info_like: str | tuple[str, ...], state_like: str = "%", count: int = 1,
                         timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Ids of ``count`` sessions running a statement like ``info_like`` in state ``state_like``."""
        found = self.wait_until(lambda: len(s := self.sessions(info_like, state_like)) >= count and s,
                                f"{count} session(s) running {info_like!r} in state {state_like!r}", timeout)
        return [session[0] for session in found or []]

    def wait_until_gone(self, info_like: str | tuple[str, ...], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_until(lambda: not self.sessions(info_like), f"no session running {info_like!r}", timeout)

    @contextmanager
    def lock_tables(self, *tables: str) -> Iterator[Connection]:
        """An exclusive lock on ``tables`` from a session of its own: every reader of them waits until the exit."""
        conn = self.connection()
        lock, unlock = self._lock_table_sql(tables)
        try:
            if unlock is None:
                conn.execute(text("BEGIN"))
            conn.execute(text(lock))
            yield conn
        finally:
            conn.execute(text(unlock or "ROLLBACK"))
            conn.close()

    @contextmanager
    def holding_row(self, table: str, month: object) -> Iterator[Connection]:
        """An open transaction holding a row lock on the last row of ``month`` in a summary tier.

        READ COMMITTED and the month's last row: only that row is locked, so a statement on an
        earlier month never touches the lock.
        """
        conn = self.connection()
        try:
            conn.execute(text("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"
                              if self.url.get_backend_name() == "postgresql"
                              else "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"))
            conn.execute(text("BEGIN"))
            conn.execute(text(f"SELECT * FROM {self.quote(table)} WHERE month = :month ORDER BY month DESC, "
                              f"{self._rest_of_key(table)} LIMIT 1 FOR UPDATE"), {"month": month}).all()
            yield conn
        finally:
            conn.execute(text("ROLLBACK"))
            conn.close()

    def _rest_of_key(self, table: str) -> str:
        columns = inspect(self.conn).get_pk_constraint(table)["constrained_columns"]
        return ", ".join(f"{self.quote(c)} DESC" for c in columns if c != "month")

    @contextmanager
    def reading(self, table: str) -> Iterator[Connection]:
        """An open transaction that has read ``table``: its lock makes a rename of the table wait."""
        conn = self.connection()
        try:
            conn.execute(text("BEGIN"))
            conn.execute(text(f"SELECT COUNT(*) FROM {self.quote(table)}")).scalar()
            yield conn
        finally:
            conn.execute(text("COMMIT"))
            conn.close()


class MySQLWatcher(Watcher):
    TABLE_LOCK_WAIT = "%metadata lock%"
    ROW_LOCK_WAIT = "%LOCK WAIT"  # the InnoDB transaction's state, after the processlist's
    SWAP_STATEMENT = "RENAME TABLE%"
    # information_schema.INNODB_TRX is a copy taken again only once nobody has read it for 0.1s:
    # polled more often, it never changes
    POLL_EVERY = 0.15
    SESSIONS_SQL = ("SELECT p.ID AS id, CONCAT(COALESCE(p.STATE, ''), ' / ', COALESCE(t.trx_state, '')) AS state, "
                    "COALESCE(p.INFO, '') AS info FROM information_schema.PROCESSLIST p "
                    "LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID "
                    "WHERE p.DB = DATABASE() AND p.ID <> CONNECTION_ID()")

    def kill(self, session_id: int) -> None:
        self.conn.execute(text(f"KILL CONNECTION {int(session_id)}"))

    def lock_holder(self, name: str) -> int | None:
        value = self.conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": name}).scalar()
        return int(value) if value is not None else None

    def take_lock(self, name: str) -> bool:
        return self.conn.execute(text("SELECT GET_LOCK(:name, 0)"), {"name": name}).scalar() == 1

    def has_written(self, session_id: int) -> bool:
        modified = self.conn.execute(text(
            "SELECT trx_rows_modified FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = :id"),
            {"id": session_id}).scalar()
        return bool(modified)

    def _lock_table_sql(self, tables: Sequence[str]) -> tuple[str, str | None]:
        return "LOCK TABLES " + ", ".join(f"{self.quote(t)} WRITE" for t in tables), "UNLOCK TABLES"


class PostgresWatcher(Watcher):
    TABLE_LOCK_WAIT = "Lock:relation"
    ROW_LOCK_WAIT = "Lock:t%"  # transactionid (the row's locker) or tuple (queued behind another waiter)
    SWAP_STATEMENT = "ALTER TABLE%RENAME TO%"
    SESSIONS_SQL = ("SELECT pid AS id, COALESCE(wait_event_type || ':' || wait_event, '') AS state, query AS info "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state = 'active'")

    def kill(self, session_id: int) -> None:
        assert self.conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": session_id}).scalar()

    def _key(self, name: str) -> int:
        return PostgresDialect(self.engine).lock_key(name)

    def lock_holder(self, name: str) -> int | None:
        value = self.conn.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = :key"), {"key": self._key(name)}).scalar()
        return int(value) if value is not None else None

    def take_lock(self, name: str) -> bool:
        return bool(self.conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key(name)}).scalar())

    def has_written(self, session_id: int) -> bool:
        return bool(self.conn.execute(text(
            "SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = :pid"), {"pid": session_id}).scalar())

    def _lock_table_sql(self, tables: Sequence[str]) -> tuple[str, str | None]:
        return f"LOCK TABLE {', '.join(self.quote(t) for t in tables)} IN ACCESS EXCLUSIVE MODE", None


def watcher(url: URL) -> Watcher:
    """A :class:`Watcher` for the server ``url`` names."""
    return PostgresWatcher(url) if url.get_backend_name() == "postgresql" else MySQLWatcher(url)
