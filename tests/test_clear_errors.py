"""One ``Error:`` line and the right exit code, never a traceback: missing privileges, URLs the drivers refuse,
a Redis URL that cannot work, a plain ``mysql://``. Through the command, on real servers: in-process
(``clirun.invoke``), but ``serve`` as a real process, which a regression would leave listening."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL

from .clirun import invoke, run_cli
from .databases import database_user
from .oracle import load, random_dataset
from .test_secrets import free_port


def summarizer(*args: str, url: URL | str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return invoke(url, *args, cwd=cwd)


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line the command wrote to stderr, after checking the exit code and that no traceback came."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def tables(url: URL) -> list[str]:
    engine = create_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def load_data(url: URL, seed: int) -> None:
    engine = create_engine(url)
    try:
        load(engine, random_dataset(seed=seed, rows=100))
    finally:
        engine.dispose()


def as_admin(url: URL, *statements: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_a_read_only_user_is_told_which_privilege_is_missing(server_url, tmp_path):
    load_data(server_url, 5)
    mysql = server_url.get_backend_name() != "postgresql"
    with database_user(server_url, "ro", owner=False) as ro:
        before = tables(server_url)
        for args in (["init"], ["init", "--source-indexes"]):
            line = error_line(summarizer(*args, url=ro, cwd=tmp_path), 1)
            assert f"init: the database user {_account(ro, mysql)} lacks a privilege" in line
            assert ("CREATE command denied" if mysql else "permission denied for schema public") in line
            assert (f"GRANT SELECT, CREATE, ALTER, DROP, INDEX, INSERT, UPDATE, DELETE ON {ro.database}.* TO"
                    if mysql else f"GRANT USAGE, CREATE ON SCHEMA public TO {ro.username}") in line
            assert tables(server_url) == before
        assert summarizer("init", url=server_url, cwd=tmp_path).returncode == 0  # the administrator's init
        if not mysql:  # the summary tables made since
            as_admin(server_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ro.username}")
        line = error_line(summarizer("refresh", url=ro, cwd=tmp_path), 1)
        assert "refresh: the database user" in line and "lacks a privilege" in line and "GRANT" in line
        assert ("INSERT command denied" if mysql else "permission denied for table summarizer_runs") in line


def _account(url: URL, mysql: bool) -> str:
    return f"'{url.username}'@'%'" if mysql else str(url.username)


def test_postgres_source_index_needs_the_tables_owner(postgres_url, tmp_path):
    load_data(postgres_url, 5)
    with database_user(postgres_url, "ro", owner=False) as ro:
        as_admin(postgres_url, f"GRANT CREATE ON SCHEMA public TO {ro.username}")
        line = error_line(summarizer("init", "--source-indexes", url=ro, cwd=tmp_path), 1)
        assert "must be owner of table financials" in line and "only a table's owner" in line


@pytest.mark.parametrize("option", ["charset=nonesuch", "connect_timeout=abc"])
def test_options_the_driver_refuses_are_a_configuration_error(server_url, tmp_path, option):
    if server_url.get_backend_name() == "postgresql" and option.startswith("charset"):
        option = "nonesuch=1"  # libpq's spelling of an option it does not know
    url = f"{server_url.render_as_string(hide_password=False)}?{option}"
    line = error_line(summarizer("init", url=url, cwd=tmp_path), 2)
    assert "[database]" in line and "'url'" in line and "the driver refused the URL" in line
    assert option in line
    assert tables(server_url) == []


def test_an_unknown_database_scheme_is_a_configuration_error(tmp_path):
    line = error_line(summarizer("init", url="foo+bar://u@127.0.0.1/db", cwd=tmp_path), 2)
    assert "unsupported database 'foo'" in line and "mysql+pymysql://" in line


def test_a_driver_that_is_not_installed_is_named(mysql_url, tmp_path):
    url = mysql_url.set(drivername="mysql+mysqldb")
    line = error_line(summarizer("status", url=url, cwd=tmp_path), 2)
    assert "driver mysql+mysqldb is not installed" in line and "mysql+pymysql://" in line


def test_plain_mysql_and_postgresql_urls_use_the_installed_drivers(server_url, tmp_path):
    plain = server_url.set(drivername=server_url.get_backend_name())  # mysql:// or postgresql://
    load_data(server_url, 6)
    result = summarizer("init", url=plain, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "summarizer_runs" in tables(server_url)
    assert summarizer("refresh", "--quiet", url=plain, cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("redis_url", ["foo://127.0.0.1/0", "redis://127.0.0.1:abc/0",
                                       "redis://127.0.0.1/0?socket_timeout=abc"])
def test_serve_refuses_an_unusable_redis_url_before_it_listens(tmp_path, redis_url):
    port = free_port()
    result = run_cli(f"sqlite:///{tmp_path / 'x.db'}", "serve", "--port", str(port), cwd=tmp_path,
                     api_redis_url=redis_url)
    line = error_line(result, 2)
    assert "section [api], key 'redis_url'" in line and "not a usable Redis URL" in line
    assert "Uvicorn running" not in result.stderr + result.stdout
