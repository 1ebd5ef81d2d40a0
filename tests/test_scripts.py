"""scripts/: the setup script, the crontab lines and the systemd units, each run for real."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from summarizer.schedule import cron_trigger, zone

from .databases import env_for, make_app
from .oracle import expected_tiers, load, random_dataset
from .test_schedule import WEDNESDAY, SwapBlocker, fires, wait_for_orphaned_swap

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SUMMARIZER = Path(sys.executable).parent / "summarizer"   # the console script pip installed
INSTALLED = "/opt/summarizer/venv/bin/summarizer"
CONFIG = "/etc/summarizer/config.ini"
METRICS = "/var/lib/prometheus/node-exporter/summarizer.prom"


def run(argv: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env or dict(os.environ), timeout=180, **kwargs)


def loaded(url, tmp_path):
    app = make_app(url, tmp_path)
    data = random_dataset(seed=21, rows=300, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    return app, data


def config_file(tmp_path: Path, url, **extra: str) -> Path:
    path = tmp_path / "config.ini"
    lines = ["[database]", f"url = {url.render_as_string(hide_password=False)}", "[source]",
             *(f"{k} = {v}" for k, v in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def installed(command: str, tmp_path: Path, config: Path) -> str:
    """An example command with this checkout's paths in place of the installed ones."""
    assert INSTALLED in command and CONFIG in command and METRICS in command, command
    return (command.replace(INSTALLED, shlex.join([sys.executable, "-m", "summarizer"]))
            .replace(CONFIG, str(config)).replace(METRICS, str(tmp_path / "summarizer.prom")))


# --- scripts/setup ------------------------------------------------------------------------------
def test_setup_help_and_bad_arguments():
    help_ = run([str(SCRIPTS / "setup"), "--help"])
    assert help_.returncode == 0 and help_.stdout.startswith("Usage: scripts/setup")
    for option in ("--config", "--source-indexes", "--summarizer", "--help"):
        assert option in help_.stdout
    bad = run([str(SCRIPTS / "setup"), "--frobnicate"])
    assert bad.returncode == 2 and "setup: unknown argument: --frobnicate" in bad.stderr
    assert run([str(SCRIPTS / "setup"), "--config"]).returncode == 2


@pytest.mark.parametrize("db_url", ["sqlite", "mysql"], indirect=True)
def test_setup_checks_inits_refreshes_verifies_and_prints_counts(db_url, tmp_path):
    app, data = loaded(db_url, tmp_path)
    config = config_file(tmp_path, db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")}
    result = run([str(SCRIPTS / "setup"), "--config", str(config), "--source-indexes",
                  "--summarizer", str(SUMMARIZER)], env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {tier: len(r) for tier, r in expected_tiers(data).items()}
    assert f"rows: asin {rows['asin']}, brand {rows['brand']}, category {rows['category']}" in result.stdout
    assert "every tier matches the raw data" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("== step")] == [
        "== step 1: check the configuration and the connection",
        "== step 2: create the tables (summarizer init --source-indexes)",
        "== step 3: first full refresh (summarizer refresh)",
        "== step 4: verify every tier against the raw table (summarizer verify)"]
    assert "== next steps" in result.stdout and f"--config {config} status --check" in result.stdout
    assert app.verify().ok and app.runs.last_success() is not None
    leading = [i["column_names"][:2] for i in inspect(app.dialect.engine).get_indexes("financials")]
    assert ["month", "asin"] in leading                    # --source-indexes added the covering index
    again = run([str(SCRIPTS / "setup"), "--config", str(config), "--summarizer", str(SUMMARIZER)], env)
    assert again.returncode == 0 and "init: nothing to do" in again.stdout   # safe to run twice
    app.close()


def test_setup_fails_loudly_and_says_at_which_step(tmp_path):
    setup = [str(SCRIPTS / "setup"), "--summarizer", str(SUMMARIZER)]
    missing = run([*setup, "--config", str(tmp_path / "nope.ini")])
    assert missing.returncode == 2 and f"config file {tmp_path / 'nope.ini'} not found" in missing.stderr
    assert run([str(SCRIPTS / "setup"), "--summarizer", str(tmp_path)]).returncode == 2

    unreachable = run(setup, env_for(UNREACHABLE))
    assert unreachable.returncode == 69
    assert "cannot connect to mysql+pymysql://root@127.0.0.1:1/test" in unreachable.stderr
    assert "setup FAILED at step 1 (check the configuration and the connection): exit 69" in unreachable.stderr

    url = make_sqlite(tmp_path)                             # a database without the source tables
    no_source = run(setup, env_for(url))
    assert no_source.returncode == 2 and "table financials does not exist" in no_source.stderr
    assert "setup FAILED at step 1" in no_source.stderr and "== step 2" not in no_source.stdout
    assert inspect_tables(url) == []                        # nothing was created


UNREACHABLE = make_url("mysql+pymysql://root@127.0.0.1:1/test")


def make_sqlite(tmp_path: Path):
    return make_url(f"sqlite:///{tmp_path / 'empty.db'}")


def inspect_tables(url) -> list[str]:
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


# --- scripts/crontab.example ----------------------------------------------------------------------
def crontab_jobs() -> list[tuple[str, str]]:
    """(five time fields, command) of every job line, the commented-out optional ones included."""
    jobs = []
    for line in (SCRIPTS / "crontab.example").read_text().splitlines():
        line = re.sub(r"^#(?=[0-9*@])", "", line)           # a disabled job line: '#*/15 * * * * ...'
        if line.strip() and not line.startswith("#"):
            fields = line.split(None, 5)
            jobs.append((" ".join(fields[:5]), fields[5]))
    return jobs


def test_crontab_lines_are_valid_and_their_commands_run(tmp_path):
    jobs = crontab_jobs()
    assert [when for when, _ in jobs] == ["0 3 * * *", "*/15 * * * *"]
    for when, _ in jobs:
        cron_trigger(when, zone("UTC"))
    assert [f.hour for f in fires(jobs[0][0], WEDNESDAY, 2)] == [3, 3]
    url = make_sqlite(tmp_path)
    app, _ = loaded(url, tmp_path)
    app.init()
    config = config_file(tmp_path, url, updated_at_column="updated_at")
    for _, command in jobs:                                 # the nightly full one, then the --changed one
        result = run(["/bin/sh", "-c", installed(command, tmp_path, config)])
        assert result.returncode == 0, result.stderr
    assert [(r.mode, r.status) for r in app.runs.latest()] == [("changed", "succeeded"), ("full", "succeeded")]
    assert "summarizer_last_run_success 1" in (tmp_path / "summarizer.prom").read_text()
    app.close()


# --- scripts/summarizer-refresh.service and .timer ------------------------------------------------
def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string((SCRIPTS / name).read_text())
    return parser


def test_systemd_units_have_what_they_need():
    service, timer = unit("summarizer-refresh.service"), unit("summarizer-refresh.timer")
    assert service["Unit"]["Description"] and timer["Unit"]["Description"]
    s = service["Service"]
    assert s["Type"] == "oneshot" and s["KillSignal"] == "SIGINT" and "75" in s["SuccessExitStatus"].split()
    argv = shlex.split(s["ExecStart"])
    assert argv[0] == INSTALLED and argv[argv.index("--config") + 1] == CONFIG and "refresh" in argv
    t = timer["Timer"]
    assert t["OnCalendar"] == "*-*-* 03:00:00 UTC" and t["Persistent"] == "true"
    assert t["Unit"] == "summarizer-refresh.service" and timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units_and_the_calendar(tmp_path):
    assert SUMMARIZER.exists(), f"{SUMMARIZER}: the console script (pip install -e .)"
    service = (SCRIPTS / "summarizer-refresh.service").read_text().replace(INSTALLED, str(SUMMARIZER))
    (tmp_path / "summarizer-refresh.service").write_text(service)
    shutil.copy(SCRIPTS / "summarizer-refresh.timer", tmp_path)
    result = run(["systemd-analyze", "verify", "summarizer-refresh.service", "summarizer-refresh.timer"],
                 cwd=tmp_path)
    assert result.returncode == 0 and "summarizer-refresh" not in result.stderr + result.stdout, result.stderr
    calendar = run(["systemd-analyze", "calendar", unit("summarizer-refresh.timer")["Timer"]["OnCalendar"]])
    assert calendar.returncode == 0 and re.search(r"Next elapse: .* 03:00:00 UTC", calendar.stdout)


def test_the_service_command_runs_and_its_kill_signal_records_the_run_interrupted(mysql_url, tmp_path):
    """ExecStart for real; then `systemctl stop` mid-run (KillSignal) while the swap waits for a reader."""
    app, _ = loaded(mysql_url, tmp_path)
    app.init()
    config = config_file(tmp_path, mysql_url)
    service = unit("summarizer-refresh.service")["Service"]
    command = installed(service["ExecStart"], tmp_path, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMARIZER_")}
    assert run(shlex.split(command), env).returncode == 0
    assert "summarizer_last_run_success 1" in (tmp_path / "summarizer.prom").read_text()

    blocker = SwapBlocker(mysql_url)
    env.update(SUMMARIZER_REFRESH_SWAP_LOCK_TIMEOUT="1", SUMMARIZER_REFRESH_SWAP_ATTEMPTS="100")
    proc = subprocess.Popen(shlex.split(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(150):
            if blocker.waiting() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert blocker.waiting(), "the refresh never reached its swap"
        proc.send_signal(getattr(signal, service["KillSignal"]))
        try:
            _, stderr = proc.communicate(timeout=90)  # seconds here; generous for a machine running many suites at once
        except subprocess.TimeoutExpired as exc:
            said = exc.stderr.decode() if isinstance(exc.stderr, bytes) else str(exc.stderr)
            raise AssertionError(f"the refresh did not stop within 90 s of {service['KillSignal']}; it said: "
                                 f"{said[-3000:]}") from None
        wait_for_orphaned_swap(blocker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reap it here, not in a later test's garbage collection
        blocker.release()
        blocker.close()
    assert proc.returncode != 0 and "Traceback" not in stderr
    last = app.runs.latest(1)[0]
    assert last.status == "interrupted" and "signal" in (last.error or "")
    assert "summarizer_last_run_status{status=\"interrupted\"} 1" in (tmp_path / "summarizer.prom").read_text()
    assert app.verify().ok
    app.close()
