"""Engines for the behaviour tests: SQLite always; MariaDB and PostgreSQL from the environment.

``SUMMARIZER_TEST_MYSQL_URL`` / ``SUMMARIZER_TEST_POSTGRES_URL`` name a server; each test gets a
database of its own there, dropped afterwards. Without the variable a throwaway container is started
through testcontainers where a Docker engine answers; else the engine's tests are skipped, saying why.
CI sets both variables, so nothing is skipped there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from summarizer import Summarizer, load_config

ENGINES = ["sqlite", "mysql", "postgres"]
ENV = {"mysql": "SUMMARIZER_TEST_MYSQL_URL", "postgres": "SUMMARIZER_TEST_POSTGRES_URL"}


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def server_urls() -> Iterator[dict[str, URL | str]]:
    """engine -> server URL, or the reason it is not available."""
    urls: dict[str, URL | str] = {}
    containers = []
    docker = None
    for engine, variable in ENV.items():
        if os.environ.get(variable):
            urls[engine] = make_url(os.environ[variable])
            continue
        docker = _docker_available() if docker is None else docker
        if not docker:
            urls[engine] = f"{variable} is not set and no Docker engine answers for testcontainers"
            continue
        container = _start_container(engine)
        containers.append(container)
        urls[engine] = make_url(container.get_connection_url())
    yield urls
    for container in containers:
        container.stop()


def _start_container(engine: str):
    if engine == "mysql":
        from testcontainers.mysql import MySqlContainer
        return MySqlContainer("mariadb:10.11", dialect="pymysql").start()
    from testcontainers.postgres import PostgresContainer
    return PostgresContainer("postgres:15", driver="psycopg").start()


def scratch_database(server: URL, name: str) -> Iterator[URL]:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    quote = admin.dialect.identifier_preparer.quote
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quote(name)}"))
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            if server.get_backend_name() == "postgresql":
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote(name)}"))
        admin.dispose()


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, server_urls: dict[str, URL | str]) -> Iterator[URL]:
    """A fresh, empty database on each engine."""
    engine = request.param
    if engine == "sqlite":
        yield make_url(f"sqlite:///{tmp_path / 'test.db'}")
        return
    yield from _server_database(engine, server_urls)


def _server_database(engine: str, server_urls: dict[str, URL | str]) -> Iterator[URL]:
    server = server_urls[engine]
    if isinstance(server, str):
        pytest.skip(server)
    yield from scratch_database(server, f"summarizer_t_{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=["mysql", "postgres"])
def server_url(request: pytest.FixtureRequest, server_urls: dict[str, URL | str]) -> Iterator[URL]:
    """A fresh database on each server engine: for what needs other sessions (locks, kills), not SQLite's file."""
    yield from _server_database(request.param, server_urls)


@pytest.fixture
def postgres_url(server_urls: dict[str, URL | str]) -> Iterator[URL]:
    """A fresh PostgreSQL database, for the tests that are about PostgreSQL in particular."""
    yield from _server_database("postgres", server_urls)


@pytest.fixture
def mysql_url(server_urls: dict[str, URL | str]) -> Iterator[URL]:
    """A fresh MariaDB/MySQL database, for the tests that are about MySQL in particular."""
    yield from _server_database("mysql", server_urls)


def make_app(url: URL, tmp_path: Path, **settings: str) -> Summarizer:
    """A Summarizer on ``url``; ``settings`` as SECTION_KEY=value environment overrides."""
    env = {"SUMMARIZER_DATABASE_URL": url.render_as_string(hide_password=False)}
    env.update({f"SUMMARIZER_{k.upper()}": v for k, v in settings.items()})
    env.setdefault("SUMMARIZER_REFRESH_RETRY_INITIAL_WAIT", "0.05")
    return Summarizer(load_config(tmp_path / "absent.ini", env))


def env_for(url: URL, **settings: str) -> dict[str, str]:
    """Environment for a ``summarizer`` subprocess on ``url``."""
    env = dict(os.environ)
    env["SUMMARIZER_DATABASE_URL"] = url.render_as_string(hide_password=False)
    env.update({f"SUMMARIZER_{k.upper()}": v for k, v in settings.items()})
    return env


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[object]:
    made: list[Summarizer] = []

    def factory(url: URL, **settings: str) -> Summarizer:
        app = make_app(url, tmp_path, **settings)
        made.append(app)
        return app
    yield factory
    for app in made:
        app.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """One line per skip reason (a missing server skips a hundred tests for one reason); ``-ra`` lists each."""
    if set(config.option.reportchars or "") & {"a", "A", "s"}:
        return
    reasons = Counter(_skip_reason(report) for report in terminalreporter.stats.get("skipped", []))
    if reasons:
        terminalreporter.write_sep("=", "skipped (pytest -ra lists each test)")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:>4} skipped: {reason}")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Apply the mysql, postgres and slow markers (tests/markers.py says how each is decided)."""
    from .markers import apply

    apply(items)
