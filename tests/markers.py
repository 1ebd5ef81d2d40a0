"""The markers pyproject.toml declares, applied at collection so that ``-m`` selects what it says.

* ``mysql`` / ``postgres``: the test runs on that server (an ``*_url`` fixture, or ``db_url`` /
  ``server_url`` parametrised with that engine);
* ``slow``: the test starts real processes (``python -m summarizer`` through ``clirun.run_cli`` or
  ``procs``, a scheduler, a server, Spark) or is in a module that exists for such tests; in-process
  runs (``clirun.invoke``) are not slow. Detected from the test's source, and from the
  source of the module's own helpers it calls, so a new test needs no decorator to be classified.

The quick local loop is then ``pytest -m 'not slow'`` (SQLite and in-process tests only when no
server URL is set), documented in docs/development.md.
"""

from __future__ import annotations

import functools
import inspect
import re
from types import ModuleType

import pytest

SERVER_FIXTURES = {"mysql_url": "mysql", "postgres_url": "postgres"}
PARAMETRISED = ("db_url", "server_url", "follow_server")
SLOW_MODULES = {"test_bench", "test_demo", "test_faults", "test_follow", "test_lock", "test_monitoring",
                "test_schedule", "test_scripts", "test_spark"}
PROCESS = re.compile(r"\b(subprocess|sys\.executable|Popen|procs\.|run_cli\w*\()")
CALL = re.compile(r"\b([A-Za-z_]\w*)\(")


def apply(items: list[pytest.Item]) -> None:
    for item in items:
        for engine in _engines(item):
            item.add_marker(engine)
        if _slow(item):
            item.add_marker("slow")


def _engines(item: pytest.Item) -> set[str]:
    fixtures = set(getattr(item, "fixturenames", ()))
    engines = {engine for name, engine in SERVER_FIXTURES.items() if name in fixtures}
    params = getattr(getattr(item, "callspec", None), "params", {})
    return engines | {params[name] for name in PARAMETRISED if params.get(name) in ("mysql", "postgres")}


def _slow(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    function = getattr(item, "function", None)
    if module is None or function is None:
        return False
    if module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.get_closest_marker("spark"):
        return True
    source, helpers = _source(function), _process_helpers(module)
    used = set(CALL.findall(source)) | set(getattr(item, "fixturenames", ()))
    return bool(PROCESS.search(source)) or bool(used & helpers)


@functools.cache
def _process_helpers(module: ModuleType) -> frozenset[str]:
    """Names of the module's own functions (and fixtures) whose body starts a process."""
    names = set()
    for name, value in vars(module).items():
        wrapped = getattr(value, "__wrapped__", value)
        if inspect.isfunction(wrapped) and wrapped.__module__ == module.__name__ and PROCESS.search(_source(wrapped)):
            names.add(name)
    return frozenset(names)


def _source(function: object) -> str:
    try:
        return inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""
