"""Database servers of a test's own: a MariaDB and a PostgreSQL it may stop, restart and configure.

The shared test servers (``SUMMARIZER_TEST_*_URL``) must stay up for everyone; a test that takes
its server away (a restart in the middle of a refresh) or needs server options of its own (the
binary log, ``wal_level = logical``) starts one here instead: its own data directory and port on
loopback, with the options it gives. :func:`mariadb` and :func:`postgres` are context managers that
stop the server by its PID on the way out, whatever happened inside::

    with servers.mariadb("--log-bin=binlog") as server:
        url = server.url            # root, no password, database "test"
        server.restart(down=5.0)    # stopped, down for 5 s, started again on the same port and datadir

They need the server binaries (``mariadbd``, ``mariadb-install-db``; PostgreSQL 15's ``initdb`` and
``pg_ctl``); :func:`missing` says which are absent, for a test to skip with that reason.
PostgreSQL refuses to run as root: as root the helpers run it as the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

PG_BIN = Path(os.environ.get("SUMMARIZER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
DATABASE = "test"


def free_port() -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing(engine: str) -> str | None:
    """Why a server of ``engine`` ('mysql' or 'postgres') cannot be started here, or None."""
    needed = ["mariadbd", "mariadb-install-db"] if engine == "mysql" else [str(PG_BIN / "initdb"),
                                                                            str(PG_BIN / "pg_ctl")]
    absent = [name for name in needed if shutil.which(name) is None]
    return f"cannot start a server of the test's own: {', '.join(absent)} not found" if absent else None


def _wait_for_connection(url: URL, log: Path, alive: Callable[[], bool] | None = None) -> None:
    engine = create_engine(url, poolclass=NullPool)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except DBAPIError:
                if alive is not None and not alive():
                    raise RuntimeError(f"the server exited while starting:\n{_tail(log)}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer within {START_TIMEOUT}s:\n{_tail(log)}") from None
                time.sleep(0.1)
    finally:
        engine.dispose()


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


class Server:
    """One server on loopback; subclasses know how to create, start and stop their kind."""

    def __init__(self, root: Path, options: Sequence[str]) -> None:
        self.root, self.options, self.port = root, tuple(options), free_port()
        self.datadir = root / "data"
        self.log = root / "server.log"

    @property
    def url(self) -> URL:
        raise NotImplementedError

    def create(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def restart(self, down: float) -> None:
        """Stop the server, leave it down ``down`` seconds, start it again on the same port and datadir."""
        self.stop()
        time.sleep(down)
        self.start()


class MariaDBServer(Server):
    """``mariadbd`` run directly: started as a child process, stopped with SIGTERM (a clean shutdown)."""

    def __init__(self, root: Path, options: Sequence[str]) -> None:
        super().__init__(root, options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> URL:
        return make_url(f"mysql+pymysql://root@127.0.0.1:{self.port}/{DATABASE}")

    def _as_root(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root unless told

    def create(self) -> None:
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}",
                        "--auth-root-authentication-method=normal", "--skip-test-db", *self._as_root()],
                       check=True, capture_output=True, timeout=START_TIMEOUT)
        self.start()
        engine = create_engine(self.url.set(database=""), poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {DATABASE}"))
        engine.dispose()

    def start(self) -> None:
        command = ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                   f"--socket={self.root / 'mysqld.sock'}", f"--pid-file={self.root / 'mysqld.pid'}",
                   "--bind-address=127.0.0.1", "--skip-name-resolve", f"--log-error={self.log}",
                   "--innodb-buffer-pool-size=32M", *self._as_root(), *self.options]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        _wait_for_connection(self.url.set(database=""), self.log, self.running)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the server's PID and wait for it to exit (SIGKILL if it does not in time)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class PostgresServer(Server):
    """A cluster made by ``initdb`` and run by ``pg_ctl`` (as the ``postgres`` OS user when we are root)."""

    @property
    def url(self) -> URL:
        return make_url(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], check=True, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=START_TIMEOUT)

    def create(self) -> None:
        if os.geteuid() == 0:  # the postgres user must own the cluster's directory
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        self.start()

    def start(self) -> None:
        settings = ["-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1", "-k", str(self.root),
                    "-c", "fsync=off", *self.options]
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log), "-w",
                  "-o", " ".join(settings), "start")
        _wait_for_connection(self.url, self.log)

    def _pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (or ``immediate``); SIGKILL to the postmaster's PID if that fails."""
        pid = self._pid()
        if pid is None:
            return
        try:
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")
        except subprocess.SubprocessError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _serving(server: Server) -> Iterator[Server]:
    try:
        server.create()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def mariadb(*options: str) -> contextlib.AbstractContextManager[Server]:
    """A fresh MariaDB server with ``options`` (``--log-bin=...``, ...) added to ``mariadbd``'s command line."""
    return _serving(MariaDBServer(Path(tempfile.mkdtemp(prefix="summarizer-mariadb-")), options))


def postgres(*options: str) -> contextlib.AbstractContextManager[Server]:
    """A fresh PostgreSQL cluster with ``options`` (``-c``, ``wal_level=logical``, ...) added to ``postgres``'s."""
    return _serving(PostgresServer(Path(tempfile.mkdtemp(prefix="summarizer-postgres-")), options))
