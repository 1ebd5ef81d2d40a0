"""Helpers for the tests that start real ``summarizer`` processes and watch the database from outside.

* :func:`start` / :func:`run` start ``python -m summarizer ...`` with the environment of
  ``conftest.env_for``; :class:`Proc` collects its stderr line by line while it runs.
* :class:`Watcher` is a second MySQL/MariaDB session: it finds the refresh's sessions in the
  processlist, kills them, and holds the locks that make a refresh wait where a test wants it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .conftest import env_for

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


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "summarizer", *args]


def environment(url: URL, settings: dict[str, str]) -> dict[str, str]:
    settings = {"refresh_retry_initial_wait": "0.05", **settings}
    env = env_for(url, **settings)
    env.pop("SUMMARIZER_CONFIG", None)
    return env


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


def run(url: URL, *args: str, cwd: Path, timeout: float = 60.0, **settings: str) -> subprocess.CompletedProcess[str]:
    """``summarizer ARGS`` to the end."""
    return subprocess.run(command(*args), cwd=cwd, env=environment(url, settings), text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


class Watcher:
    """A MySQL/MariaDB session of the test's own, beside the refresh's (autocommit unless it begins one)."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.conn = self.engine.connect()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()

    def connection(self) -> Connection:
        """Another session on the same database (closed by the caller)."""
        return self.engine.connect()

    def sessions(self, info_like: str = "%", state_like: str = "%") -> list[tuple[int, str, str]]:
        """(id, state, statement) of the other sessions on this database running a matching statement."""
        rows = self.conn.execute(text(
            "SELECT ID, COALESCE(STATE, ''), COALESCE(INFO, '') FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND INFO LIKE :info AND COALESCE(STATE, '') LIKE :state"),
            {"info": info_like, "state": state_like}).all()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def wait_for_session(self, info_like: str, state_like: str = "%", count: int = 1,
                         timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Ids of ``count`` sessions running a statement like ``info_like`` in state ``state_like``."""
        found = wait_until(lambda: len(s := self.sessions(info_like, state_like)) >= count and s,
                           f"{count} session(s) running {info_like!r} in state {state_like!r}", timeout)
        return [session[0] for session in found]

    def wait_until_gone(self, info_like: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: not self.sessions(info_like), f"no session running {info_like!r}", timeout)

    def kill(self, session_id: int) -> None:
        self.conn.execute(text(f"KILL CONNECTION {int(session_id)}"))

    def lock_holder(self, name: str) -> int | None:
        value = self.conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": name}).scalar()
        return int(value) if value is not None else None

    @contextmanager
    def lock_tables(self, *tables: str) -> Iterator[Connection]:
        """``LOCK TABLES t WRITE`` on a session of its own: every other reader of ``t`` waits until the exit."""
        conn = self.connection()
        try:
            conn.execute(text("LOCK TABLES " + ", ".join(f"`{t}` WRITE" for t in tables)))
            yield conn
        finally:
            conn.execute(text("UNLOCK TABLES"))
            conn.close()

    @contextmanager
    def holding_row(self, table: str, month: object) -> Iterator[Connection]:
        """An open transaction holding a row lock on the last row of ``month`` in a summary tier.

        READ COMMITTED and the month's last row: only that row is locked, so a statement on an
        earlier month never touches the lock.
        """
        conn = self.connection()
        try:
            conn.execute(text("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"))
            conn.execute(text("START TRANSACTION"))
            conn.execute(text(f"SELECT * FROM `{table}` WHERE month = :month ORDER BY month DESC, "
                              f"{self._rest_of_key(table)} LIMIT 1 FOR UPDATE"), {"month": month}).all()
            yield conn
        finally:
            conn.execute(text("ROLLBACK"))
            conn.close()

    def _rest_of_key(self, table: str) -> str:
        columns = self.conn.execute(text(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = :t AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION"), {"t": table}).scalars()
        return ", ".join(f"`{c}` DESC" for c in columns if c != "month")

    @contextmanager
    def reading(self, table: str) -> Iterator[Connection]:
        """An open transaction that has read ``table``: its metadata lock makes a RENAME of it wait."""
        conn = self.connection()
        try:
            conn.execute(text("START TRANSACTION"))
            conn.execute(text(f"SELECT COUNT(*) FROM `{table}`")).scalar()
            yield conn
        finally:
            conn.execute(text("COMMIT"))
            conn.close()
