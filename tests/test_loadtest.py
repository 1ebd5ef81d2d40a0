"""The load test at tiny size, so it cannot rot: every question answered in every phase, by every route.

No timing is asserted: the figures are whatever the machine gives; only that each question was asked
and answered without error, each phase has its percentiles, and the refreshes during the refresh
phase succeeded.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.loadtest import QUESTIONS, Space, parse_args, run, server_timing

from .databases import settings_env
from .oracle import load, random_dataset

ROOT = Path(__file__).resolve().parent.parent


def loaded(url, app_factory) -> None:
    app = app_factory(url)
    load(app.dialect.engine, random_dataset(seed=5, huge=app.dialect.EXACT_DECIMAL))
    app.init()
    app.refresh()


def assert_phases(report: dict, via: str, kinds: list[str]) -> None:
    assert [p["kind"] for p in report["phases"]] == kinds and report["via"] == via
    for phase in report["phases"]:
        assert not phase["problems"], phase["problems"]
        assert set(phase["questions"]) == set(QUESTIONS)
        for name, q in phase["questions"].items():
            assert q["n"] > 0 and q["errors"] == 0, (phase["name"], name, q)
            assert all(math.isfinite(q[k]) and q[k] > 0 for k in ("p50_ms", "p99_ms", "db_p50_ms")), q
            if via == "http":
                assert q["server_p50_ms"] > 0 and "queue_p50_ms" in q
        assert len(phase["load_after"]) == 3
    refresh = [p for p in report["phases"] if p["kind"] == "refresh"]
    assert all(p["refreshes"] and all(r["exit"] == 0 for r in p["refreshes"]) for p in refresh)


@pytest.mark.parametrize("via", ["http", "sql", "reader"])
def test_every_question_answered_idle_and_during_a_refresh(db_url, app_factory, monkeypatch, via):
    if via != "http" and db_url.get_backend_name() == "sqlite":
        pytest.skip("sql and reader are the same code on every engine; sqlite runs http")
    loaded(db_url, app_factory)
    for key, value in settings_env(db_url).items():
        monkeypatch.setenv(key, value)
    args = parse_args(["--via", via, "--phases", "idle:1,refresh:2", "--seconds", "1", "--refresh", "once",
                       "--months", "3", "--threads", "2", "--seed", "3"])
    before = dict(os.environ)
    report = run(args, echo=lambda _line: None)
    assert dict(os.environ) == before, "the run changed the caller's environment (the cache off for later tests)"
    assert_phases(report, via, ["idle", "refresh"])
    assert report["space"]["months"] >= 3 and report["space"]["brands"] > 1


def test_script_writes_the_json(db_url, app_factory, tmp_path):
    if db_url.get_backend_name() != "sqlite":
        pytest.skip("the script's own code is the same on every engine")
    loaded(db_url, app_factory)
    out = tmp_path / "load.json"
    env = {**os.environ, **settings_env(db_url)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.loadtest", "--via", "sql", "--phases", "idle:2",
                           "--seconds", "1", "--months", "2", "--json-out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "idle, 2 clients" in done.stdout and "one brand" in done.stdout
    assert_phases(json.loads(out.read_text()), "sql", ["idle"])


def test_questions_are_drawn_from_the_space():
    space = Space(months=tuple(f"2024-{m:02d}" for m in range(1, 13)), brands=(1, 2), categories=(7,),
                  marketplaces=("US",), metrics=("revenue",), window=3)
    asks = [space.draw(q, random.Random(q)) for q in range(3)]
    assert [a.endpoint for a in asks] == ["dashboard-data", "profitability-data", "dashboard-data"]
    assert dict(asks[1].items)["category_id"] == "7" and dict(asks[2].items)["marketplace"] == "US"
    first, last = dict(asks[0].items)["from"], dict(asks[0].items)["to"]
    assert int(last[5:]) - int(first[5:]) == 2


def test_server_timing_header_is_parsed():
    assert server_timing("queue;dur=0.2, db;dur=1.5, total;dur=3") == {"queue": 0.2, "db": 1.5, "total": 3.0}
    assert server_timing("") == {}


@pytest.mark.parametrize("argv", [["--phases", "busy:2"], ["--phases", "idle:0"], ["--seconds", "0"],
                                  ["--threads", "0"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)
