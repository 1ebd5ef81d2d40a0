"""Running the ``summarizer`` command from a test: as a real process, or in-process through click.

* :func:`run_cli` runs ``python -m summarizer ARGS`` to the end in a subprocess (about 2.5 s each):
  for what needs the real command, its exit status, signals or another process.
* :func:`invoke` runs the same command line in this process with click's ``CliRunner`` (milliseconds):
  for the many cases that check only the exit code and the message of a command that fails, or does
  little, before any real work. :func:`in_process` is the same with click's own ``Result`` and the
  environment as given.

Both take the database URL and ``section_key=value`` settings as environment overrides, and return a
``subprocess.CompletedProcess`` (``returncode``, ``stdout``, ``stderr``), so a test reads the same
whichever way it ran. :func:`invoke` gives each run a clean environment (only the summarizer
variables it is given), a working directory of its own, and puts back what the command changes in the
process: logging, the secrets it learnt to mask, the hook for tracebacks; it also closes the
database engine the command opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from click.testing import CliRunner, Result
from sqlalchemy.engine import URL

from summarizer import cli, logs, secrets

from .databases import settings_env

DEFAULTS = {"refresh_retry_initial_wait": "0.05"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "summarizer", *args]


def environment(url: URL | str | None, settings: dict[str, str]) -> dict[str, str]:
    """The subprocess environment: this process's without its summarizer settings (the test servers'
    ``SUMMARIZER_TEST_*`` stay), plus the URL (None: none) and ``settings``."""
    return {**_without_settings(os.environ), **settings_env(url, **{**DEFAULTS, **settings})}


def _without_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not _is_setting(k)}


def _is_setting(name: str) -> bool:
    return name.startswith("SUMMARIZER_") and not name.startswith("SUMMARIZER_TEST_")


def run_cli(url: URL | str | None, *args: str, cwd: Path | None = None, timeout: float = 120.0,
            **settings: str) -> subprocess.CompletedProcess[str]:
    """``python -m summarizer ARGS`` to the end, in ``cwd``."""
    return run_cli_env(environment(url, settings), *args, cwd=cwd, timeout=timeout)


def run_cli_env(env: Mapping[str, str], *args: str, cwd: Path | None = None,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """:func:`run_cli` with the whole environment given (e.g. ``databases.env_for``)."""
    return subprocess.run(command(*args), cwd=cwd, env=env, text=True,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def invoke(url: URL | str | None, *args: str, cwd: Path | None = None, timeout: float = 120.0,
           **settings: str) -> subprocess.CompletedProcess[str]:
    """``summarizer ARGS`` in this process, as a fresh process would run it (``url`` None: none configured)."""
    return invoke_env(settings_env(url, **{**DEFAULTS, **settings}), *args, cwd=cwd, timeout=timeout)


def invoke_env(env: Mapping[str, str], *args: str, cwd: Path | None = None,
               timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """:func:`invoke` given the environment a subprocess would get (its summarizer variables are used).

    An unexpected exception ends up on stderr with exit 1, as it would from ``python -m summarizer``; so
    does running past ``timeout`` seconds (a command that should have failed at once and serves or
    schedules instead), rather than hanging the suite.
    """
    with _working_directory(cwd):
        result = in_process(args, _invoke_environment(_only_settings(env)), timeout=timeout)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += secrets.redact("".join(traceback.format_exception(*result.exc_info)))
    return subprocess.CompletedProcess(["summarizer", *args], result.exit_code, result.stdout, stderr)


def in_process(args: Sequence[str], env: dict[str, str | None], *, timeout: float = 120.0,
               catch_exceptions: bool = True) -> Result:
    """``summarizer ARGS`` through ``CliRunner`` with ``env`` over this process's environment, in the
    current directory; what the command changes in the process is put back afterwards."""
    with _restored_process_state(), _closing_summarizers(), _alarm(timeout):
        return CliRunner().invoke(cli.cli, list(args), env=env, prog_name="summarizer",
                                  catch_exceptions=catch_exceptions)


def _only_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if _is_setting(k)}


def _invoke_environment(wanted: dict[str, str]) -> dict[str, str | None]:
    """``CliRunner`` overlays its ``env`` on this process's: unset every other summarizer variable."""
    unset: dict[str, str | None] = {name: None for name in os.environ if _is_setting(name)}
    return {**unset, **wanted}


@contextlib.contextmanager
def _working_directory(cwd: Path | None) -> Iterator[None]:
    """``cwd``, else an empty directory of its own (so no ./config.ini is picked up)."""
    if cwd is not None:
        with contextlib.chdir(cwd):
            yield
        return
    with tempfile.TemporaryDirectory(prefix="summarizer-invoke-") as empty, contextlib.chdir(empty):
        yield


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """A TimeoutError raised in the command after ``seconds`` (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"the command ran past {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _restored_process_state() -> Iterator[None]:
    """Logging, the secrets to mask, the traceback hook and the current run: as they were before.

    The secrets start empty, as in a new process: one learnt by an earlier test must not mask for this one.
    """
    loggers = _logger_state()
    last_resort = logging.lastResort.formatter if logging.lastResort is not None else None
    excepthook, run_id = sys.excepthook, logs.current_run_id
    remembered, connection = set(secrets._remembered), dict(secrets._connection)
    forget_secrets()
    try:
        yield
    finally:
        _put_back_loggers(loggers)
        if logging.lastResort is not None:
            logging.lastResort.setFormatter(last_resort)
        sys.excepthook, logs.current_run_id = excepthook, run_id
        forget_secrets()
        with secrets._lock:
            secrets._remembered.update(remembered)
            secrets._connection.update(connection)


def forget_secrets() -> None:
    """Empty the secrets module's memory of passwords and connection details (process-wide state)."""
    with secrets._lock:
        secrets._remembered.clear()
        secrets._connection.clear()


def _logger_state() -> dict[str, tuple[Any, ...]]:
    named = {name: value for name, value in logging.root.manager.loggerDict.items()
             if isinstance(value, logging.Logger)}
    return {name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
            for name, logger in {"": logging.root, **named}.items()}


def _put_back_loggers(state: dict[str, tuple[Any, ...]]) -> None:
    for name, value in logging.root.manager.loggerDict.items():
        if isinstance(value, logging.Logger):
            level, handlers, propagate, disabled = state.get(name, (logging.NOTSET, [], True, False))
            value.setLevel(level)
            value.handlers[:] = handlers
            value.propagate, value.disabled = propagate, disabled
    level, handlers, _, _ = state[""]
    logging.root.setLevel(level)
    logging.root.handlers[:] = handlers


@contextlib.contextmanager
def _closing_summarizers() -> Iterator[None]:
    """Close the Summarizer (and its engine's pool) each command context opened, as the process exit would."""
    contexts: list[cli.Context] = []
    original = cli.Context.__init__

    def remember_context(self: cli.Context, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        contexts.append(self)

    try:
        with mock.patch.object(cli.Context, "__init__", remember_context):
            yield
    finally:
        for context in contexts:
            if "summarizer" in vars(context):
                context.summarizer.close()
