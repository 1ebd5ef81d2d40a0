"""Prometheus text-format metrics of the last refresh, for node_exporter's textfile collector.

``refresh --metrics-file PATH`` (and ``schedule --metrics-file PATH``) rewrite the file after every
run, also after a failed or interrupted one; a run skipped because another holds the lock leaves it
alone (the run holding the lock writes its own). The file is written beside its final name and
moved into place with ``os.replace``, so the collector never reads half a file. Metrics::

    summarizer_last_run_success                   1 if the last run succeeded, else 0
    summarizer_last_run_status{status}            1 for the status the last run ended in, 0 for the others
    summarizer_last_run_info{mode,version}        1, labelled with the last run's mode
    summarizer_last_run_id                        id in summarizer_runs (absent if it never got one)
    summarizer_last_run_timestamp_seconds         when the last run ended (Unix time)
    summarizer_last_run_duration_seconds          how long it took
    summarizer_last_run_step_seconds{step}        seconds per step (prepare, tier1, ..., swap, months)
    summarizer_last_success_timestamp_seconds     when the last successful run ended
    summarizer_tier_rows{tier}                    rows per tier as of the last successful run

An alert on ``time() - summarizer_last_success_timestamp_seconds > 26 * 3600`` catches both a failing
and a silently stopped nightly job.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import SQLAlchemyError

from . import __version__
from .errors import LockHeld, SummarizerError
from .runs import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, Run

if TYPE_CHECKING:
    from .facade import Summarizer

log = logging.getLogger(__name__)
STATUSES = (SUCCEEDED, FAILED, INTERRUPTED)
LAST_SUCCESS = "summarizer_last_success_timestamp_seconds"


@dataclass(frozen=True)
class Outcome:
    """What the metrics file says: the last run, and the last success (maybe an earlier run)."""

    mode: str
    status: str
    finished_at: float
    duration: float
    run_id: int | None = None
    steps: Mapping[str, float] = field(default_factory=dict)
    last_success_at: float | None = None
    rows: Mapping[str, int | None] = field(default_factory=dict)


def _gauge(registry: CollectorRegistry, name: str, help_: str, samples: list[tuple[Mapping[str, str], float]]) -> None:
    """One gauge family in ``registry``; none when there is nothing to say (an absent metric, not a made-up 0)."""
    if not samples:
        return
    gauge = Gauge(name, help_, sorted(samples[0][0]), registry=registry)
    for labels, value in samples:
        (gauge.labels(**labels) if labels else gauge).set(value)


def registry(outcome: Outcome) -> CollectorRegistry:
    """The metrics of ``outcome`` in a registry of their own (never the process-wide default one)."""
    o, found = outcome, CollectorRegistry(auto_describe=False)
    _gauge(found, "summarizer_last_run_success", "1 if the last refresh succeeded, else 0.",
           [({}, float(o.status == SUCCEEDED))])
    _gauge(found, "summarizer_last_run_status", "1 for the status the last refresh ended in.",
           [({"status": s}, float(o.status == s)) for s in STATUSES])
    _gauge(found, "summarizer_last_run_info", "The last refresh's mode and summarizer's version.",
           [({"mode": o.mode, "version": __version__}, 1.0)])
    _gauge(found, "summarizer_last_run_id", "Id of the last refresh in the run history table.",
           [({}, float(o.run_id))] if o.run_id is not None else [])
    _gauge(found, "summarizer_last_run_timestamp_seconds", "When the last refresh ended (Unix time).",
           [({}, o.finished_at)])
    _gauge(found, "summarizer_last_run_duration_seconds", "How long the last refresh took.", [({}, o.duration)])
    _gauge(found, "summarizer_last_run_step_seconds", "Seconds the last refresh spent in each step.",
           [({"step": step}, seconds) for step, seconds in o.steps.items()])
    _gauge(found, LAST_SUCCESS, "When the last successful refresh ended (Unix time).",
           [({}, o.last_success_at)] if o.last_success_at is not None else [])
    _gauge(found, "summarizer_tier_rows", "Rows per summary tier as of the last successful refresh.",
           [({"tier": tier}, float(n)) for tier, n in o.rows.items() if n is not None])
    return found


def exposition(outcome: Outcome) -> str:
    """The Prometheus text exposition of ``outcome``."""
    return generate_latest(registry(outcome)).decode("utf-8")


def write_file(path: Path, outcome: Outcome) -> None:
    """``write_to_textfile``: written beside ``path``, then renamed over it in one step; readable by all."""
    write_to_textfile(str(path), registry(outcome))
    os.chmod(path, 0o644)  # node_exporter usually runs as another user; the umask may have said otherwise


def _unix(value: dt.datetime | None) -> float | None:
    """summarizer's timestamps are naive UTC."""
    return value.replace(tzinfo=dt.UTC).timestamp() if value is not None else None


def previous_success(path: Path) -> float | None:
    """The last-success timestamp an earlier write left in ``path``, for when the database is down."""
    try:
        families = list(text_string_to_metric_families(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    values = [s.value for f in families for s in f.samples if s.name == LAST_SUCCESS]
    return values[0] if values else None


def collect(app: Summarizer, path: Path, mode: str, status: str, started: float, run: Run | None) -> Outcome:
    """The outcome of a refresh that began at ``started`` (Unix time).

    A successful run is its own last success. A failed one raises without handing back its record: the
    newest record of this process that began no earlier than ``started`` is it, and the last success
    comes from the run history, or, if the database cannot be read, from the file's previous version.
    """
    now = time.time()
    if run is not None:
        return _outcome(mode, status, now, now - started, own=run, last=run)
    try:
        own, last = _own_latest(app, started), app.runs.last_success()
    except (SummarizerError, SQLAlchemyError) as exc:
        log.warning("metrics: cannot read the run history (%s); keeping the last success from %s", exc, path)
        return Outcome(mode, status, now, now - started, last_success_at=previous_success(path))
    return _outcome(mode, status, now, now - started, own=own, last=last)


def _outcome(mode: str, status: str, now: float, took: float, own: Run | None, last: Run | None) -> Outcome:
    return Outcome(mode=own.mode if own else mode, status=status, finished_at=now, duration=took,
                   run_id=own.id if own else None, steps=dict(own.steps) if own else {},
                   last_success_at=_unix(last.finished_at) if last else None, rows=last.rows if last else {})


def _own_latest(app: Summarizer, started: float) -> Run | None:
    newest = app.runs.latest(1)
    if not newest:
        return None
    run = newest[0]
    ours = run.pid == os.getpid() and (_unix(run.started_at) or 0) >= int(started) and run.status != RUNNING
    return run if ours else None


def observed(app: Summarizer, path: Path | None, mode: str, refresh: Callable[[], Run]) -> Run:
    """Call ``refresh``; then write the metrics file at ``path`` (if any), whatever the outcome.

    Only a held lock writes nothing: that run never started, and the one holding the lock reports.
    """
    if path is None:
        return refresh()
    started = time.time()
    try:
        run = refresh()
    except LockHeld:
        raise
    except BaseException as exc:
        status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
        _write(path, collect(app, path, mode, status, started, None))
        raise
    _write(path, collect(app, path, mode, SUCCEEDED, started, run))
    return run


def _write(path: Path, outcome: Outcome) -> None:
    try:
        write_file(path, outcome)
    except OSError as exc:
        log.error("cannot write the metrics file %s: %s", path, exc)


def target(text: str) -> Path:
    """``--metrics-file``: a path whose directory exists and is writable (checked before any work)."""
    path = Path(text)
    if path.is_dir():
        raise ValueError(f"{text} is a directory; give a file name such as {path / 'summarizer.prom'}")
    if not path.parent.is_dir():
        raise ValueError(f"directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"directory {path.parent} is not writable")
    return path
