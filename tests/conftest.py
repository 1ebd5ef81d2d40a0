"""The fixtures and hooks of the tests: the engines they run on: SQLite always, the servers from the environment.

``SUMMARIZER_TEST_MYSQL_URL`` / ``SUMMARIZER_TEST_POSTGRES_URL`` name a server; each test gets a
database of its own there, dropped afterwards. Without the variable a throwaway container is started
through testcontainers where a Docker engine answers; else the engine's tests are skipped, saying why.
CI sets both variables, so nothing is skipped there. The helpers behind the fixtures are plain
modules: ``databases.py`` (servers, scratch databases, ``make_app``, ``env_for``) and ``clirun.py``.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

from summarizer import Summarizer

from .clirun import forget_secrets
from .databases import ENGINES, make_app, scratch_database, server_urls_from_environment
from .setups import Refreshed, load_and_refresh


@pytest.fixture(autouse=True)
def no_leaked_log_handlers() -> Iterator[None]:
    """A test (or command) that sets up logging leaves a root handler on a stream closed after it: remove it,
    or every later log line is a "Logging error"; pytest's own handlers stay."""
    root = logging.getLogger()
    known, level = set(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in known]:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def fresh_secrets() -> Iterator[None]:
    """Each test starts with no remembered passwords: one learnt by an earlier test would mask for this one."""
    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture(scope="session")
def server_urls() -> Iterator[dict[str, URL | str]]:
    """engine -> server URL, or the reason it is not available (tests/databases.py)."""
    urls, containers = server_urls_from_environment()
    yield urls
    for container in containers:
        container.stop()


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


@pytest.fixture
def refreshed_on(app_factory: Any) -> Any:
    """``refreshed_on(url, seed=..., rows=..., source_indexes=..., settings={...})``: a Summarizer on ``url``
    with a random dataset loaded, init and a full refresh run (tests/setups.py); closed after the test."""

    def make(url: URL, *, settings: dict[str, str] | None = None, source_indexes: bool = False,
             **dataset: Any) -> Refreshed:
        return load_and_refresh(app_factory(url, **(settings or {})), source_indexes=source_indexes, **dataset)
    return make


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
