"""No password or token in any output: errors, logs, status, run records, metrics, HTTP bodies.

A known password is set in every place a secret can live (the database URL in the environment and in
config.ini, the [database] fields, the Redis URL's netloc and ``?password=``, a Spark Connect
``;token=``); the real commands run, some made to fail; every output is searched for it. Every
password here contains ``Pw0rd``, so a partly echoed one (``tPw0rd@host``) is caught as well.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from summarizer.config import load_config, url_problem
from summarizer.logs import setup_logging
from summarizer.secrets import redact, redact_url
from summarizer.serve.http import create_app
from summarizer.serve.read import DASHBOARD, HEALTH, META

from .clirun import invoke, run_cli_env
from .databases import database_user
from .oracle import load, random_dataset
from .test_api_http import Http, _wait_until_up

PASSWORD = "S3cretPw0rd"
FRAGMENT = "Pw0rd"  # in every password below
USER, DATABASE = "secretsuser", "secretsdb"

# typed by hand, each is refused with exit 2 (or, where the URL is valid after all, exit 1 from the server)
TYPOS = {
    "one slash": ("mysql+pymysql:/secretsuser:S3cretPw0rd@127.0.0.1/secretsdb", 2),
    "no slashes": ("mysql+pymysql:secretsuser:S3cretPw0rd@127.0.0.1/secretsdb", 2),
    "no colon": ("mysql+pymysql//secretsuser:S3cretPw0rd@127.0.0.1/secretsdb", 2),
    "port not a number": ("mysql+pymysql://secretsuser:S3cretPw0rd@127.0.0.1:abc/secretsdb", 2),
    "space in the password": ("mysql+pymysql://secretsuser:S3cret Pw0rd@127.0.0.1/secretsdb", 2),
    "unknown scheme": ("foo+bar://secretsuser:S3cretPw0rd@127.0.0.1/secretsdb", 2),
    "@ in the password": ("mysql+pymysql://secretsuser:S3cr@tPw0rd@127.0.0.1/secretsdb", 2),
    "/ in the password": ("mysql+pymysql://secretsuser:S3cr/tPw0rd@127.0.0.1:1/secretsdb", 69),
}


def summarizer(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli_env(env, *args, cwd=cwd)


def in_process(*args: str, url: str | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``summarizer ARGS`` through ``clirun.invoke``: for what fails before connecting, or on connecting."""
    return invoke(url, *args, cwd=cwd)


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")}
    return env | variables


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        assert FRAGMENT not in output, output


@pytest.mark.parametrize("typo", TYPOS, ids=list(TYPOS))
@pytest.mark.parametrize("where", ["environment", "config.ini"])
def test_a_mistyped_url_is_refused_without_its_password(tmp_path, typo, where):
    url, code = TYPOS[typo]
    if where == "environment":
        result = in_process("init", url=url, cwd=tmp_path)
    else:
        (tmp_path / "c.ini").write_text(f"[database]\nurl = {url}\n")
        result = in_process("--config", "c.ini", "status", cwd=tmp_path)
    line = assert_one_error_line(result, code)
    assert_no_secret(result.stdout, result.stderr)
    assert "[database]" in line and "url" in line if code == 2 else "cannot connect" in line
    assert "secretsuser:***@" in line or "mysql+pymysql:***@" in line  # still says which URL, masked


def test_the_database_fields_never_show_the_password(tmp_path):
    fields = f"[database]\nhost = 127.0.0.1\nuser = {USER}\npassword = {PASSWORD}\ndatabase = {DATABASE}\n"
    (tmp_path / "bad.ini").write_text(fields + "port = abc\n")
    line = assert_one_error_line(in_process("--config", "bad.ini", "init", cwd=tmp_path), 2)
    assert "key 'port'" in line and "abc" in line and FRAGMENT not in line
    (tmp_path / "down.ini").write_text(fields + f"port = {free_port()}\n")
    line = assert_one_error_line(in_process("--config", "down.ini", "status", cwd=tmp_path), 69)
    assert f"{USER}:***@127.0.0.1" in line and FRAGMENT not in line


def test_a_spark_connect_token_is_masked(mysql_url, tmp_path):
    db = mysql_url.render_as_string(hide_password=False)
    result = in_process("refresh", "--spark-master", f"sc:/127.0.0.1:1/;token={PASSWORD}", url=db, cwd=tmp_path)
    line = assert_one_error_line(result, 2)
    assert "token=***" in line and "not a Spark master URL" in line
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize("url", ["sqlite:////tmp/My Data/x.db", "postgresql+psycopg://u@[::1]:5432/db",
                                 "mysql+pymysql://u:p%40ss%20word@h:3306/db?charset=utf8mb4", "mysql://u@h/db"])
def test_urls_that_work_are_not_refused(url):
    assert url_problem(url) is None


def test_redact_masks_what_it_cannot_parse_and_keeps_the_rest():
    assert redact_url("mysql+pymysql://u:S3cretPw0rd@h:3306/db?charset=utf8mb4") == \
        "mysql+pymysql://u:***@h:3306/db?charset=utf8mb4"
    assert redact("redis://:S3cretPw0rd@h/4 and redis://h/4?password=S3cretPw0rd&db=1") == \
        "redis://:***@h/4 and redis://h/4?password=***&db=1"
    assert redact('{"password": "S3cretPw0rd"}') == '{"password": "***"}'
    untouched = "Access denied for user 'u'@'h' (using password: YES) at 10:30:00"
    assert redact(untouched) == untouched


# --- the commands against a real server, the password set everywhere ----------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[str, list[str]]]:
    """``summarizer serve`` on a free port: (base URL, its output lines once stopped)."""
    port = free_port()
    output: list[str] = []
    log = (cwd / f"serve-{port}.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "summarizer", "serve", "--port", str(port)], env=env,
                              cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, server, timeout=30)
        yield base, output
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        output.append((cwd / f"serve-{port}.log").read_text())


def test_no_output_of_any_command_holds_the_password(server_url, tmp_path):
    outputs: list[str] = []
    with database_user(server_url, PASSWORD, owner=True) as url:
        engine = create_engine(url)
        load(engine, random_dataset(seed=13, rows=200))
        redis_url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/4?password={PASSWORD}"  # no Redis there
        env = clean_env(SUMMARIZER_DATABASE_URL=url.render_as_string(hide_password=False),
                        SUMMARIZER_API_REDIS_URL=redis_url, SUMMARIZER_SPARK_MASTER=f"sc://127.0.0.1:1/;token={PASSWORD}",
                        SUMMARIZER_REFRESH_RETRY_INITIAL_WAIT="0.05")
        metrics = tmp_path / "summarizer.prom"
        for args, code in ((["init", "--source-indexes"], 0), (["refresh", "--metrics-file", str(metrics)], 0),
                           (["status"], 0), (["status", "--json"], 0), (["verify"], 0), (["verify", "--json"], 0)):
            result = summarizer(*args, env=env, cwd=tmp_path)
            assert result.returncode == code, (args, result.stderr)
            outputs += [result.stdout, result.stderr]
        # a refresh that fails and is recorded: raw rows use the all-marketplaces label
        failing = env | {"SUMMARIZER_SUMMARY_ALL_MARKETPLACE": "US"}
        result = summarizer("refresh", "--metrics-file", str(metrics), env=failing, cwd=tmp_path)
        assert result.returncode == 1 and "Error: refresh failed" in result.stderr, result.stderr
        outputs += [result.stdout, result.stderr, metrics.read_text()]
        result = summarizer("status", "--check", "--json", env=env, cwd=tmp_path)
        assert result.returncode == 1 and "failed" in result.stdout
        outputs += [result.stdout, result.stderr]
        with serving(env, tmp_path) as (base, served):
            for path in (f"/api/{DASHBOARD}?from=2024-01&to=2024-03", f"/api/{META}", f"/api/{HEALTH}"):
                response = httpx.get(base + path)
                assert response.status_code in (200, 503), response.text
                outputs.append(response.text)
        outputs += served
        assert "Redis cache at redis://:***@127.0.0.1" in served[0] and "password=***" in served[0], served[0]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM summarizer_runs")).all()
        outputs.append(json.dumps([list(map(str, row)) for row in rows]))
        engine.dispose()
    assert_no_secret(*outputs)


def test_the_503_body_names_no_connection_detail(tmp_path):
    port = free_port()
    url = f"mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    with serving(clean_env(SUMMARIZER_DATABASE_URL=url), tmp_path) as (base, served):
        bodies = []
        for path in (f"/api/{DASHBOARD}?from=2024-01&to=2024-02", f"/api/{META}", f"/api/{HEALTH}"):
            response = httpx.get(base + path)
            assert response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"
            bodies.append(response.text)
    for body in bodies:
        for detail in (USER, DATABASE, str(port), "127.0.0.1", FRAGMENT, "pymysql"):
            assert detail not in body, (detail, body)
    assert f"{USER}:***@127.0.0.1:{port}/{DATABASE}" in served[0]  # the operator learns which database
    assert_no_secret(*served)


def test_api_run_records_show_no_connection_detail(mysql_url, app_factory):
    app = app_factory(mysql_url)
    load(app.dialect.engine, random_dataset(seed=14, rows=50))
    app.init()
    run = app.runs.start("full", None, None)
    host, port, user, database = mysql_url.host, mysql_url.port or 3306, mysql_url.username, mysql_url.database
    leaked = (f"refresh failed: cannot connect to mysql+pymysql://{user}:{PASSWORD}@{host}:{port}/{database}: "
              f"(2003, \"Can't connect to MySQL server on '{host}' ([Errno 111] Connection refused)\")")
    app.runs.finish(run, "failed", leaked)  # as a run recorded by an older version might hold it
    with app.dialect.engine.begin() as conn:  # and as written before the error was masked
        conn.execute(text("UPDATE summarizer_runs SET error = :error WHERE id = :id"), {"error": leaked, "id": run.id})
    body = Http(create_app(app)).get(f"/api/{META}").text
    assert "Can't connect to MySQL server on '<host>'" in body, body
    for detail in (f"'{host}'", f":{port}/", f"/{database}", f"{user}:", FRAGMENT):
        assert detail not in body, (detail, body)
    assert FRAGMENT not in (app.status().runs[0].error or "")  # status masks the password too


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_mask_the_configured_password_in_either_format(tmp_path, capsys, fmt):
    password = 'Qu"ote\\Pw0rd'  # JSON escapes it: the escaped spelling is masked too
    load_config(tmp_path / "absent.ini", {"SUMMARIZER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                                          "SUMMARIZER_DATABASE_PASSWORD": password})
    setup_logging(quiet=False, verbose=False, fmt=fmt)
    try:
        logging.getLogger("summarizer.test").warning("connecting with %s", password, extra={"detail": password})
        logging.getLogger("summarizer.test").error("failed", exc_info=RuntimeError(f"driver said {password}"))
    finally:
        setup_logging(quiet=True, verbose=False)
    err = capsys.readouterr().err
    assert "connecting with ***" in err and "driver said ***" in err
    assert_no_secret(err)
