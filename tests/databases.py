"""The databases the tests run on, and a Summarizer or an environment pointed at one.

* :func:`server_urls_from_environment` finds the MariaDB and PostgreSQL servers:
  ``SUMMARIZER_TEST_MYSQL_URL`` / ``SUMMARIZER_TEST_POSTGRES_URL``, else a throwaway container through
  testcontainers where a Docker engine answers, else the reason the engine's tests are skipped;
* :func:`scratch_database` creates a database of its own on a server and drops it afterwards;
* :func:`make_app` builds a :class:`~summarizer.Summarizer` in-process, :func:`env_for` the environment
  of a ``summarizer`` command, both on a URL and with ``SECTION_KEY=value`` settings.

The fixtures that use these live in ``conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from summarizer import Summarizer, load_config

ENGINES = ["sqlite", "mysql", "postgres"]
ENV = {"mysql": "SUMMARIZER_TEST_MYSQL_URL", "postgres": "SUMMARIZER_TEST_POSTGRES_URL"}


def server_urls_from_environment() -> tuple[dict[str, URL | str], list[Any]]:
    """engine -> server URL or the reason it is not available; and the containers started for them."""
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
    return urls, containers


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def _start_container(engine: str):
    if engine == "mysql":
        from testcontainers.mysql import MySqlContainer
        return MySqlContainer("mariadb:10.11", dialect="pymysql").start()
    from testcontainers.postgres import PostgresContainer
    return PostgresContainer("postgres:15", driver="psycopg").start()


def scratch_database(server: URL, name: str) -> Iterator[URL]:
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # the server may have restarted
    quote = admin.dialect.identifier_preparer.quote
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quote(name)}"))
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            if server.get_backend_name() == "postgresql":  # a database with replication slots cannot be dropped
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
                deadline = time.monotonic() + 10  # a terminated WAL sender lets its slot go a moment later
                while conn.execute(text("SELECT count(*) FROM pg_replication_slots WHERE database = :name AND "
                                        "active"), {"name": name}).scalar() and time.monotonic() < deadline:
                    time.sleep(0.1)
                conn.execute(text("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                  "WHERE database = :name AND NOT active"), {"name": name})
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote(name)}"))
        admin.dispose()


def settings_env(url: URL | str | None, **settings: str) -> dict[str, str]:
    """Only the summarizer variables for ``url`` (None: no URL) and ``settings`` (``section_key=value``)."""
    env = {}
    if url is not None:
        env["SUMMARIZER_DATABASE_URL"] = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    env.update({f"SUMMARIZER_{k.upper()}": v for k, v in settings.items()})
    return env


def make_app(url: URL, tmp_path: Path, **settings: str) -> Summarizer:
    """A Summarizer on ``url``; ``settings`` as SECTION_KEY=value environment overrides."""
    env = settings_env(url, **settings)
    env.setdefault("SUMMARIZER_REFRESH_RETRY_INITIAL_WAIT", "0.05")
    return Summarizer(load_config(tmp_path / "absent.ini", env))


def env_for(url: URL, **settings: str) -> dict[str, str]:
    """Environment for a ``summarizer`` subprocess on ``url``."""
    return {**os.environ, **settings_env(url, **settings)}


@contextmanager
def database_user(url: URL, password: str, *, owner: bool) -> Iterator[URL]:
    """An account of its own on ``url``'s database, logging in with ``password``: its ``owner`` (may do
    everything there), or a reader (SELECT on every table, nothing else). Dropped afterwards."""
    name = f"{'owner' if owner else 'ro'}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    mysql = url.get_backend_name() != "postgresql"
    if mysql:
        grant = f"GRANT {'ALL' if owner else 'SELECT'} ON `{url.database}`.* TO '{name}'@'%'"
        setup = [f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'", grant]
        teardown = [f"DROP USER '{name}'@'%'"]
    else:
        reader = ["REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                  f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}"]
        grants = [f'ALTER DATABASE "{url.database}" OWNER TO {name}'] if owner else reader
        setup = [f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", *grants]
        teardown = [f"REASSIGN OWNED BY {name} TO CURRENT_USER", f"DROP OWNED BY {name}", f"DROP ROLE {name}"]
    with admin.connect() as conn:
        for statement in setup:
            conn.execute(text(statement))
    try:
        yield url.set(username=name, password=password)
    finally:
        with admin.connect() as conn:
            for statement in teardown:
                conn.execute(text(statement))
        admin.dispose()
