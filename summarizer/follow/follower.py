"""The follower: reads committed changes from the stream and applies them to the tiers in batches.

The stream is read ahead in a thread of its own (``prefetch.py``) while a batch is applied. Each batch
is one transaction that applies the deltas (``batch.py``), moves the stored stream position
to the batch's last transaction, and bumps the data version (the read API's cache key). A follower
killed at any moment resumes from the stored position: a batch committed is never read again, one not
committed is read again whole.

Living with the full refresh. The follower takes the run lock only while it applies a batch (reading
the stream needs no lock), so a refresh gets the lock between two batches, and the follower waits
while the refresh runs. The refresh hands over: it swaps in, with its tiers, a state row holding the
stream position its snapshot saw. The follower notices a stored position that is not the one it read
from, drops what it read and reads on from the handed-over one. If the data version is not the one its
last batch wrote, something else changed the tiers (an incremental refresh, a refresh without the
handover): it stops and says to resync rather than guess.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from .. import version
from ..config import Config
from ..dialects import Dialect
from ..errors import DatabaseUnavailable, FollowFailed, SummarizerError
from ..lock import RunLock, make_lock
from ..model import Schema, Source
from ..runs import utcnow
from ..steps import Steps
from ..text import first_line
from . import statements as sql
from .batch import Applied, BatchWriter
from .deltas import sort_out
from .prefetch import Prefetch
from .stream import ChangeStream, SchemaChanged, StreamGone, Transaction

log = logging.getLogger(__name__)
REPORT_SECONDS = 10.0   # how often an idle follower writes its report (waiting, rate) into the state row
RATE_WINDOW = 60.0      # the throughput is row changes per second over this window
LOCK_POLL = 1.0         # how long one wait for the run lock lasts before the stop flag is looked at again


@dataclass
class State:
    """The stored state row: where the tiers are exact, and the data version they had there."""

    position: str
    data_version: int
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> State:
        m = dict(row._mapping)
        return cls(str(m["position"]), int(m["data_version"]), m)


@dataclass
class Throughput:
    """Row changes applied over the last minute."""

    window: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, changes: int) -> None:
        now = time.monotonic()
        self.window.append((now, changes))
        while self.window and self.window[0][0] < now - RATE_WINDOW:
            self.window.popleft()

    def rate(self) -> Decimal:
        if not self.window:
            return Decimal(0)
        span = max(time.monotonic() - self.window[0][0], 1.0)
        return Decimal(sum(n for _, n in self.window) / span).quantize(Decimal("0.1"))


class Follower:
    """Follows one database's change stream for one configuration."""

    def __init__(self, dialect: Dialect, config: Config, schema: Schema, source: Source, stream: ChangeStream,
                 resync: Callable[[], object]) -> None:
        self.dialect, self.config, self.schema, self.source = dialect, config, schema, source
        self.stream, self.resync = stream, resync
        self.engine = dialect.engine
        self.steps = Steps(dialect, config)
        self.writer = BatchWriter(dialect, schema, source)
        self.state_table, self.data_version = schema.follow().state, schema.data_version()
        self.stop = threading.Event()
        cfg = config.follow
        self.prefetch = Prefetch(stream, max_changes=int(cfg.batch_changes), wait=float(cfg.idle_seconds))
        self.throughput = Throughput()
        self.stored: State | None = None
        self.reading: str | None = None  # where the stream stands: the stored position, or past empty transactions
        self.applied = 0
        self._reported = 0.0
        self._waiting_lock = False

    # --- the loop -----------------------------------------------------------------------------
    def run(self, *, once: bool = False) -> int:
        """Follow until :attr:`stop` is set (or, ``once``, until nothing is waiting); the row changes applied."""
        problems = self.steps.retry("follow check", self.stream.problems)
        if problems:
            raise FollowFailed("the server is not ready for following: " + "; ".join(problems))
        try:
            self._start()
            while not self.stop.is_set():
                transactions = self.steps.retry("read the change stream", self._read, relock=False)
                if transactions is None:  # the stream is quiet: everything committed so far is applied
                    self._report_idle()
                    if once:
                        break
                elif transactions:
                    self._apply(transactions)
        except (StreamGone, SchemaChanged) as exc:
            self._record_error(str(exc))
            raise FollowFailed(str(exc)) from None
        except FollowFailed as exc:
            self._record_error(str(exc))
            raise
        except Exception as exc:
            if not self.dialect.is_disconnect(exc):  # the stream's driver errors are not SQLAlchemy's
                raise
            budget = float(self.config.refresh.retry_budget_seconds)
            raise DatabaseUnavailable(f"the change stream could not be read for {budget:g}s ([refresh] "
                                      f"retry_budget_seconds): {first_line(exc, named=True)}") from exc
        finally:
            self.prefetch.stop()
        return self.applied

    def _start(self) -> None:
        state = self._read_state()
        if state is None:
            log.info("following starts: a full refresh hands its stream position over first")
            self.resync()
            state = self._read_state()
            if state is None:
                raise FollowFailed("the full refresh did not hand a stream position over: is [follow] enabled?")
        self._check_version(state)
        self.stored, self.reading = state, state.position
        log.info("following from %s", state.position)
        self._report({"host": socket.gethostname(), "pid": os.getpid(), "error": None, "error_at": None})

    def _read(self) -> list[Transaction] | None:
        """Transactions from the stream: up to ``batch_changes`` row changes or ``batch_seconds``, or until quiet;
        [] when they were only other tables' (passed over; kept to be stored where the stream
        :attr:`~summarizer.follow.stream.ChangeStream.stores_empty`); None when the stream was quiet."""
        cfg = self.config.follow
        assert self.reading is not None
        stored = self.stored.position if self.stored is not None else None
        found = self.prefetch.take(self.reading, max_changes=int(cfg.batch_changes),
                                   seconds=float(cfg.batch_seconds), stop=self.stop.is_set, stored=stored)
        if not found:
            return None
        if not any(t.changes for t in found):  # only other tables' (the follower's own among them)
            self.reading = found[-1].position
            # a slot keeps the server's WAL until a later position is stored: store this one (no tier changes)
            return found if self.stream.stores_empty and found[-1].position != stored else []
        return found

    # --- applying ---------------------------------------------------------------------------------
    def _apply(self, transactions: Sequence[Transaction]) -> None:
        lock = make_lock(self.dialect, self.config.refresh.lock_name)
        if not self._take(lock):
            return
        try:
            applied = self.steps.retry("apply a batch", lambda: self._apply_locked(transactions), relock=False)
        finally:
            lock.release()
        if applied is not None:
            self.applied += applied

    def _take(self, lock: RunLock) -> bool:
        while not self.stop.is_set():
            if self.steps.retry("run lock", lambda: lock.acquire(0 if not self._waiting_lock else LOCK_POLL)):
                if self._waiting_lock:
                    log.info("the run lock is free again: following on")
                self._waiting_lock = False
                return True
            if not self._waiting_lock:
                log.info("a refresh holds the run lock: waiting for it (the follower goes on after its swap)")
            self._waiting_lock = True
        return False

    def _apply_locked(self, transactions: Sequence[Transaction]) -> int | None:
        """The batch in one transaction with its position and the data version; None when it was not applied."""
        first, last = self.reading, transactions[-1]
        changes = sort_out(transactions, self.source)
        with self.engine.begin() as conn:
            row = conn.execute(sql.lock_state(self.state_table)).first()
            state = State.from_row(row) if row is not None else None
            if state is None:
                raise FollowFailed("the follower's state row is gone: run `summarizer follow --resync`")
            moved = self.stored is None or state.position != self.stored.position
            handed_over = moved and state.values.get("batches") == 0  # a refresh's row: no batch applied on it yet
            if state.position == last.position and not handed_over:  # a try whose commit reply was lost did it
                self._moved_to(state)
                return 0
            if moved:  # a handover can end exactly where this batch ends: the writers paused meanwhile
                log.info("a full refresh handed position %s over: reading on from there" if handed_over else
                         "another follower moved the stored position to %s: reading on from there", state.position)
                self._check_version(state)
                self._moved_to(state)
                return None
            self._check_version(state, conn)
            if changes.rows:
                applied = self.writer.apply(conn, changes, utcnow().replace(microsecond=0))
                conn.execute(version.bump(self.data_version))
            else:  # only a position past other tables' changes (ChangeStream.stores_empty): tiers and version stay
                applied = Applied({}, 0, 0)
            new_version = int(conn.execute(version.current(self.data_version)).scalar_one())
            now = utcnow()
            self.throughput.add(changes.rows)
            report = self._report_values(now, last if changes.rows else None)  # a heartbeat applies nothing
            conn.execute(sql.advance_state(self.state_table, last.position, new_version,
                                           {"changes": changes.rows, **report}))
        self._moved_to(State(last.position, new_version))
        self._reported = time.monotonic()
        log.debug("applied %d row changes (%s .. %s): rows %s, %d ASINs and %d brands moved", changes.rows, first,
                  last.position, applied.rows, applied.moved_asins, applied.recategorised)
        return changes.rows

    def _moved_to(self, state: State) -> None:
        self.stored, self.reading = state, state.position

    def _check_version(self, state: State, conn: Connection | None = None) -> None:
        def current(c: Connection) -> int:
            return int(c.execute(version.current(self.data_version)).scalar_one())
        if conn is not None:
            live = current(conn)
        else:
            with self.engine.connect() as c:
                live = current(c)
        if live != state.data_version:
            raise FollowFailed(f"the tiers were changed by something other than the follower since its last batch "
                               f"(data version {live}, the follower's {state.data_version}): an incremental refresh, "
                               "or a full refresh without the handover. Run `summarizer follow --resync`")

    # --- the state row ----------------------------------------------------------------------------
    def _read_state(self) -> State | None:
        def read() -> State | None:
            with self.engine.connect() as conn:
                row = conn.execute(sql.read_state(self.state_table)).first()
            return State.from_row(row) if row is not None else None
        return self.steps.retry("follower state", read)

    def _report_values(self, now: dt.datetime, last: Transaction | None) -> dict[str, Any]:
        values: dict[str, Any] = {"checked_at": now, "rate": self.throughput.rate(), "error": None, "error_at": None}
        if last is not None:
            values.update(applied_at=now, committed_at=last.committed_at)
            if last.committed_at is not None:
                values["lag_seconds"] = Decimal(max(0.0, (now - last.committed_at).total_seconds())).quantize(
                    Decimal("0.001"))
        try:
            values["waiting"] = self.stream.waiting(last.position if last is not None else self.reading or "")
        except Exception as exc:  # the report is best effort: the lack of a privilege must not stop following
            log.debug("cannot tell what is waiting: %s", first_line(exc, named=True))
        return values

    def _report_idle(self) -> None:
        if time.monotonic() - self._reported < REPORT_SECONDS:
            return
        self.throughput.add(0)
        self._report(self._report_values(utcnow(), None))

    def _report(self, values: dict[str, Any]) -> None:
        self._reported = time.monotonic()
        try:
            self.steps.retry("follower report", lambda: self._write_report(values))
        except (SummarizerError, DatabaseUnavailable) as exc:
            log.warning("could not write the follower's report: %s", exc)

    def _write_report(self, values: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sql.report(self.state_table, values))

    def _record_error(self, message: str) -> None:
        try:
            self._write_report({"error": message[:2000], "error_at": utcnow()})
        except Exception as exc:  # the database may be the thing that failed
            log.warning("could not record the follower's error: %s", first_line(exc, named=True))
