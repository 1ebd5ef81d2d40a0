"""The run lock: one refresh at a time, whoever starts it.

MySQL/MariaDB and PostgreSQL hold a named lock (``GET_LOCK``, an advisory lock) on a connection of
its own, opened outside the pool and kept for the whole run: a pool's reset or recycling would not
release such a lock, and would hand the locked session to other work. Closing that connection (or
the process dying) releases the lock. Before every step the refresh calls :meth:`RunLock.check`,
which takes the lock again on a new connection if its connection was lost, or stops the run if
another run took the lock meanwhile. The lock's connection sits idle while the steps run, so it
lifts the server's idle timeout for its own session (``wait_timeout``, ``idle_session_timeout``).

``GET_LOCK`` names are global to a MySQL server, so the name is qualified with the database: two
databases on one server refresh independently. (PostgreSQL advisory locks are per database already.)

SQLite uses a file lock beside the database file, with the database file's mode and group; the kernel
drops it when the process dies. A lock file deleted or replaced during a run is noticed by the check.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Protocol

from filelock import FileLock, Timeout
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from .dialects import Dialect, sqlite_path
from .errors import RefreshFailed

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
MAX_LOCK_NAME = 64  # MySQL's limit for GET_LOCK names


class RunLock(Protocol):
    def acquire(self, wait: float) -> bool: ...
    def check(self, still_ours: Callable[[], bool]) -> None: ...
    def release(self) -> None: ...


def make_lock(dialect: Dialect, name: str) -> RunLock:
    if dialect.name == "sqlite":
        path = sqlite_path(dialect.engine.url)
        return FileRunLock(f"{path}.summarizer-lock", path) if path else ThreadRunLock(name)
    return DatabaseRunLock(dialect, lock_name(dialect, name))


def lock_name(dialect: Dialect, name: str) -> str:
    """The configured name qualified with the database, at most 64 characters."""
    qualified = f"{name}.{dialect.engine.url.database or ''}"
    if len(qualified) <= MAX_LOCK_NAME:
        return qualified
    digest = hashlib.sha256(qualified.encode()).hexdigest()[:16]
    return f"{qualified[:MAX_LOCK_NAME - 17]}.{digest}"


def _poll(attempt: Callable[[], bool], wait: float) -> bool:
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        if attempt():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


class DatabaseRunLock:
    """A named lock held by one dedicated connection."""

    def __init__(self, dialect: Dialect, name: str) -> None:
        self.dialect, self.name = dialect, name
        self.conn: Connection | None = None
        self._engine: Engine | None = None
        self._checking = threading.Lock()  # steps in several threads may find the connection lost at once

    @property
    def engine(self) -> Engine:
        """Connections of their own, never pooled: closing one ends its session and its lock."""
        if self._engine is None:
            self._engine = create_engine(self.dialect.engine.url, poolclass=NullPool)
        return self._engine

    def acquire(self, wait: float) -> bool:
        return _poll(self._try, wait)

    def _try(self) -> bool:
        conn = self.conn or self.engine.connect()
        sql, params = self.dialect.try_lock_sql(self.name)
        try:
            if self.conn is None:
                for statement in self.dialect.lock_session_statements():
                    conn.execute(text(statement))
            got = bool(conn.execute(text(sql), params).scalar())
            conn.commit()  # end the implicit transaction; the lock belongs to the session
        except BaseException:
            conn.close()
            raise
        if got:
            self.conn = conn
        elif self.conn is None:
            conn.close()
        return got

    def check(self, still_ours: Callable[[], bool]) -> None:
        """Raise RefreshFailed unless this run still holds the lock (taking it again if it can).

        While the database is away this raises its connection error: the caller retries."""
        with self._checking:
            self._check(still_ours)

    def _check(self, still_ours: Callable[[], bool]) -> None:
        if self.conn is not None and self._holds():
            return
        if self.conn is not None:  # said once, not on every try while the database is away
            log.warning("the run lock's connection was lost; taking the lock again")
        self._discard()
        if not self._try():
            raise RefreshFailed("lost the run lock (its connection dropped) and another run holds it now; "
                                "stopping without touching the live tables")
        try:
            ours = still_ours()
        except BaseException:
            self._discard()  # asked again on the next try, before the lock counts as ours
            raise
        if not ours:
            raise RefreshFailed("lost the run lock (its connection dropped) and another run took over "
                                "meanwhile; stopping without touching the live tables")
        log.warning("took the run lock again")

    def _holds(self) -> bool:
        assert self.conn is not None
        sql, params = self.dialect.holds_lock_sql(self.name)
        try:
            held = bool(self.conn.execute(text(sql), params).scalar())
            self.conn.commit()
            return held
        except DBAPIError:
            return False

    def _discard(self) -> None:
        if self.conn is not None:
            try:
                self.conn.invalidate()
                self.conn.close()
            except DBAPIError:
                pass
            self.conn = None

    def release(self) -> None:
        if self.conn is not None:
            sql, params = self.dialect.release_lock_sql(self.name)
            try:
                self.conn.execute(text(sql), params)
                self.conn.commit()
                self.conn.close()
            except DBAPIError:
                self._discard()  # the server releases the lock with the session
            self.conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class FileRunLock:
    """An exclusive lock on a file beside the SQLite database, shared by every OS user who may write it.

    The lock file takes the database file's permission bits and group, so another user who can write
    the database (through its group, say) can open the lock file and take the lock too. Its
    :meth:`check` notices a lock file deleted or replaced under the run, and then behaves as the server
    locks do on a lost connection: it takes the lock again on the new file, or stops the run when
    another run holds it or took over meanwhile.
    """

    def __init__(self, path: str, database: str | None = None) -> None:
        self.path, self.database = path, database
        self.lock = self._new_lock()
        self._identity: tuple[int, int] | None = None

    def _new_lock(self) -> FileLock:
        mode = _database_mode(self.database)
        return FileLock(self.path) if mode is None else FileLock(self.path, mode=mode)

    def acquire(self, wait: float) -> bool:
        try:
            self.lock.acquire(timeout=max(wait, 0.0), poll_interval=POLL_SECONDS)
        except Timeout:
            return False
        except PermissionError as exc:
            raise RefreshFailed(f"cannot open the run lock file {self.path} ({exc.strerror}): it must be writable "
                                "by every user who refreshes this database; when no refresh runs, delete it (it "
                                "is made again with the database file's mode and group)") from None
        self._identity = _identity(self.path)
        _follow_group(self.path, self.database)
        return True

    def check(self, still_ours: Callable[[], bool]) -> None:
        """Raise RefreshFailed unless this run still holds the lock on the file at its path (re-taking it if it can)."""
        if self.lock.is_locked and self._identity is not None and _identity(self.path) == self._identity:
            return
        log.warning("the run lock file %s was deleted or replaced; taking the lock again", self.path)
        self.release()
        self.lock = self._new_lock()
        if not self.acquire(0):
            raise RefreshFailed("lost the run lock (its file was deleted or replaced) and another run holds it now; "
                                "stopping without touching the live tables")
        if not still_ours():
            raise RefreshFailed("lost the run lock (its file was deleted or replaced) and another run took over "
                                "meanwhile; stopping without touching the live tables")
        log.warning("took the run lock again")

    def release(self) -> None:
        self.lock.release()
        self._identity = None


def _database_mode(database: str | None) -> int | None:
    """The read/write bits of the database file (the lock file gets the same), or None without one."""
    try:
        return stat.S_IMODE(os.stat(database).st_mode) & 0o666 if database else None
    except OSError:
        return None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _follow_group(path: str, database: str | None) -> None:
    """Give the lock file the database file's group (possible when we own it and belong to that group)."""
    if database is None:
        return
    try:
        group = os.stat(database).st_gid
        if os.stat(path).st_gid != group:
            os.chown(path, -1, group)
    except OSError as exc:  # not ours, or not our group: the mode still lets the group's members in
        log.debug("cannot give the run lock file %s the database's group: %s", path, exc)


_THREAD_LOCKS: dict[str, threading.Lock] = {}


class ThreadRunLock:
    """For an in-memory SQLite database, which only this process can see."""

    def __init__(self, name: str) -> None:
        self.lock = _THREAD_LOCKS.setdefault(name, threading.Lock())

    def acquire(self, wait: float) -> bool:
        return self.lock.acquire(timeout=max(wait, 0.0)) if wait > 0 else self.lock.acquire(blocking=False)

    def check(self, still_ours: Callable[[], bool]) -> None:
        return None

    def release(self) -> None:
        self.lock.release()
