"""Readers and the full refresh's swap: a reader between two statements holds no lock the swap waits for.

The read API answers a request with several statements (the data version, then the tier). Were they
one transaction, the reader would hold a metadata lock (MariaDB) or a table lock (PostgreSQL) on the
data version's table from the first statement to the last, and the swap, which renames that table
with the tiers, would wait for it while the reader's next statement waited for the swap: a deadlock,
answered with a 503. Here a real full refresh runs, swap included, while a reader is held between
its first statement and the next (in the cache lookup, which comes between them); it must finish
while the reader waits, and the reader's answer must then be right.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from summarizer.runs import SUCCEEDED, Run
from summarizer.serve.cache import MISS, CacheStats
from summarizer.serve.read import DASHBOARD, Reader

from .oracle import load, random_dataset
from .procs import wait_until, watcher
from .test_read_api import assert_matches, dashboard_found, expected_dashboard

# the swap gives up after 2 tries of 1 s: a swap blocked by a reader fails the refresh quickly
SETTINGS = {"refresh_swap_lock_timeout": "1", "refresh_swap_attempts": "2"}
ITEMS = [("from", "2024-01"), ("to", "2024-03")]


class RefreshInTheLookup:
    """A cache that misses, and on its first lookup runs a full refresh to the end before it answers."""

    backend = "memory"

    def __init__(self, app: Any) -> None:
        self.app, self.stats = app, CacheStats()
        self.runs: list[Run] = []

    def get(self, key: str) -> tuple[bytes | None, str]:
        if not self.runs:
            self.runs.append(self.app.refresh())  # the reader has read the data version: it is between statements
        return None, MISS

    def put(self, key: str, body: bytes) -> None:
        pass


def test_a_full_refresh_swaps_while_a_reader_is_between_statements(db_url, app_factory):
    app = app_factory(db_url, **SETTINGS)
    data = random_dataset(seed=7, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    cache = RefreshInTheLookup(app)
    reader = Reader(app, cache=cache)
    before = reader.version()
    answer = reader.answer(DASHBOARD, ITEMS)  # the refresh runs inside, between the reader's statements
    run = cache.runs[0]
    assert run.status == SUCCEEDED, f"the swap waited for the reader: {run.error}"
    assert answer.version == before and reader.version() == before + 1
    rows = json.loads(answer.body)["data"]
    months = reader.parse(DASHBOARD, ITEMS).months()
    want = expected_dashboard(data, months[0], months[-1])
    assert_matches(dashboard_found(rows), want, app.dialect.EXACT_DECIMAL, "the answer across the swap")


def test_readers_answer_through_refreshes(db_url, app_factory):
    """Four threads ask uncached questions while two full refreshes run: no error, every answer right."""
    app = app_factory(db_url, api_cache_bytes="0")
    data = random_dataset(seed=8, huge=app.dialect.EXACT_DECIMAL)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    reader = Reader(app)
    months = reader.parse(DASHBOARD, ITEMS).months()
    want = expected_dashboard(data, months[0], months[-1])
    done, errors, answers = threading.Event(), [], [0]

    def ask() -> None:
        while not done.is_set():
            try:
                found = dashboard_found(json.loads(reader.answer(DASHBOARD, ITEMS).body)["data"])
                assert_matches(found, want, app.dialect.EXACT_DECIMAL, "an answer during a refresh")
            except Exception as exc:  # noqa: BLE001 - any error is the failure this test looks for
                errors.append(repr(exc))
                return
            answers[0] += 1

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: answers[0] > 0 or errors, "a first answer")
        runs = [app.refresh() for _ in range(2)]
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    assert all(run.status == SUCCEEDED for run in runs), [run.error for run in runs]


def test_a_dead_pooled_connection_costs_no_failed_answer(server_url, app_factory):
    """The read engine does not ping before each request; an answer on a connection killed since is asked again."""
    app = app_factory(server_url)
    data = random_dataset(seed=9, huge=True)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    reader = Reader(app)
    reader.answer(DASHBOARD, ITEMS)
    with app.read_dialect.engine.connect() as conn:  # the pooled connection the next answer gets
        session = int(conn.exec_driver_sql(app.dialect.connection_id_sql()).scalar_one())
    watch = watcher(server_url)
    try:
        watch.kill(session)
    finally:
        watch.close()
    months = reader.parse(DASHBOARD, ITEMS).months()
    rows = json.loads(reader.answer(DASHBOARD, ITEMS).body)["data"]
    assert_matches(dashboard_found(rows), expected_dashboard(data, months[0], months[-1]), True, "after the kill")
