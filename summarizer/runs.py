"""The run history (``summarizer_runs``) and freshness.

A run is inserted as ``running`` once it holds the lock and updated when it ends. A row still
``running`` while nobody holds the lock belongs to a process that died: the next run that takes the
lock marks it ``interrupted``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Row, Table, insert, select, update

from . import __version__, logs
from .secrets import redact


class Mode(StrEnum):
    """What a refresh rebuilds: everything, or the months given, changed since a time, or changed since the last run."""

    FULL = "full"
    MONTHS = "months"
    SINCE = "since"
    CHANGED = "changed"


class RunStatus(StrEnum):
    """A run's status in the run history (the same strings in the table and in JSON)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


FULL, MONTHS, SINCE, CHANGED = Mode
RUNNING, SUCCEEDED, FAILED, INTERRUPTED = RunStatus


def utcnow() -> dt.datetime:
    """Naive UTC: the form every timestamp summarizer writes takes (the run history keeps microseconds)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class Run:
    id: int
    mode: str
    months: str | None
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    data_as_of: dt.datetime | None = None
    rows: dict[str, int | None] = field(default_factory=dict)
    plan: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    host: str = ""
    pid: int = 0
    version: str = ""

    @classmethod
    def from_row(cls, row: Row[Any]) -> Run:
        m = row._mapping
        return cls(id=m["id"], mode=m["mode"], months=m["months"], status=m["status"],
                   started_at=m["started_at"], finished_at=m["finished_at"], data_as_of=m["data_as_of"],
                   rows={tier: m[f"rows_{tier}"] for tier in ("asin", "brand", "category")},
                   plan=m["plan"], steps=json.loads(m["steps"] or "{}"), host=m["host"], pid=m["pid"],
                   version=m["version"], error=redact(m["error"]) if m["error"] else None)

    @property
    def stamp(self) -> dt.datetime:
        """The ``refreshed_at`` the run writes into the tiers: its start, to the second (as DATETIME keeps it)."""
        return self.started_at.replace(microsecond=0)

    def describe(self) -> str:
        return (f"run {self.id} ({self.mode}) on host {self.host} pid {self.pid}, "
                f"started {self.started_at:%Y-%m-%d %H:%M:%S} UTC")

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("started_at", "finished_at", "data_as_of"):  # naive UTC in the database; say so
            data[key] = data[key].replace(tzinfo=dt.UTC).isoformat() if data[key] else None
        data["duration_seconds"] = self.duration()
        return data

    def duration(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class RunLog:
    """Reads and writes the run history table; every write is its own short transaction."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine, self.table = engine, table

    def start(self, mode: Mode, months: str | None, data_as_of: dt.datetime | None) -> Run:
        values = {"mode": str(mode), "months": months, "status": str(RUNNING), "started_at": utcnow(),
                  "data_as_of": data_as_of, "host": socket.gethostname(), "pid": os.getpid(),
                  "version": __version__}
        with self.engine.begin() as conn:
            run_id = conn.execute(insert(self.table).values(values)).inserted_primary_key[0]  # type: ignore[index]
        logs.current_run_id = int(run_id)  # every log line from here on carries it (logs.RunFields)
        return Run(id=int(run_id), **values)  # type: ignore[arg-type]

    def finish(self, run: Run, status: RunStatus, error: str | None = None) -> None:
        run.status, run.error, run.finished_at = str(status), redact(error) if error else error, utcnow()
        values = {"status": str(status), "finished_at": run.finished_at, "error": run.error, "plan": run.plan,
                  "steps": json.dumps({k: round(v, 3) for k, v in run.steps.items()})}
        values.update({f"rows_{tier}": count for tier, count in run.rows.items()})
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.id == run.id).values(values))

    def mark_interrupted(self, except_id: int | None = None) -> list[int]:
        """Runs left ``running`` by a process that died (called while holding the lock)."""
        t = self.table
        query = select(t.c.id).where(t.c.status == RUNNING)
        if except_id is not None:
            query = query.where(t.c.id != except_id)
        with self.engine.begin() as conn:
            ids = [row[0] for row in conn.execute(query)]
            if ids:
                conn.execute(update(t).where(t.c.id.in_(ids)).values(
                    status=INTERRUPTED, finished_at=utcnow(),
                    error="interrupted: the process stopped before finishing (found by a later run)"))
        return ids

    def is_running(self, run: Run) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(self.table.c.status).where(self.table.c.id == run.id)).scalar() == RUNNING

    def previous(self, run: Run) -> Run | None:
        """The run recorded just before ``run``."""
        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.id < run.id).order_by(t.c.id.desc()).limit(1)).first()
        return Run.from_row(row) if row else None

    def latest(self, limit: int = 10) -> list[Run]:
        t = self.table
        with self.engine.connect() as conn:
            return [Run.from_row(r) for r in conn.execute(select(t).order_by(t.c.id.desc()).limit(limit))]

    def last_with_status(self, status: RunStatus, modes: tuple[Mode, ...] = ()) -> Run | None:
        t = self.table
        query = select(t).where(t.c.status == status)
        if modes:
            query = query.where(t.c.mode.in_(modes))
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(t.c.id.desc()).limit(1)).first()
        return Run.from_row(row) if row else None

    def last_success(self, modes: tuple[Mode, ...] = ()) -> Run | None:
        """The newest successful run (of one of ``modes``, if given)."""
        return self.last_with_status(SUCCEEDED, modes)

    def holder(self) -> Run | None:
        """The run that most likely holds the lock: the newest still marked running."""
        return self.last_with_status(RUNNING)
