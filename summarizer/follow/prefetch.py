"""The change stream read ahead in a thread of its own, while the follower applies the batch before.

Decoding the stream is Python work and applying a batch is mostly waiting for the database, so the two
overlap: a reader thread queues committed transactions from a position on, and the follower takes
batches from the queue. Whenever the follower wants another position than the one the queue goes on
from (a full refresh handed one over, or the reader failed and the read is tried again), the reader
is stopped and started again there. The queue holds a bounded number of row changes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .stream import ChangeStream, Transaction


@dataclass(frozen=True)
class Quiet:
    """Nothing arrived for the stream's wait: the follower may apply what it has."""


QUIET = Quiet()
Item = Transaction | Quiet | BaseException


class Prefetch:
    """Reads ``stream`` ahead from a position, in a thread; :meth:`take` hands out batches in order."""

    def __init__(self, stream: ChangeStream, *, max_changes: int, wait: float) -> None:
        self.stream, self.max_changes, self.wait = stream, max_changes, wait
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=max(8, 4 * max_changes // 100))
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._next: str | None = None  # the position the queue goes on from
        self._quiet = False  # the stream was quiet after the last batch taken
        self.stored: str | None = None  # the follower's committed position (never one only read ahead to)

    def take(self, position: str, *, max_changes: int, seconds: float,
             stop: Callable[[], bool], stored: str | None = None) -> list[Transaction]:
        """Transactions after ``position``: up to ``max_changes`` row changes, ``seconds`` after the first,
        or until the stream is quiet ([] when it was quiet from the start). ``stored`` (default
        ``position``): the newest position the follower committed, which the reader passes on to the stream."""
        self.stored = stored or position
        if position != self._next or self._thread is None or not self._thread.is_alive():
            self._restart(position)
        found: list[Transaction] = []
        changes, deadline = 0, None
        if self._quiet and self._queue.empty():  # said quiet after the last batch, and nothing came since
            self._quiet = False
            return []
        while not stop():
            timeout = self.wait if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=max(timeout, 0.01))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                continue
            if isinstance(item, BaseException):
                self._next = None  # read again from the last transaction taken
                raise item
            if isinstance(item, Quiet):
                self._quiet = bool(found)  # the quiet the batch ended on is told to the next take too
                if found:
                    break
                return []
            self._quiet = False
            found.append(item)
            self._next = item.position
            changes += len(item.changes)
            deadline = deadline or time.monotonic() + seconds
            if changes >= max_changes or time.monotonic() >= deadline:
                break
        return found

    def _restart(self, position: str) -> None:
        self.stop()
        self._next, self._quiet = position, False
        self._stopping.clear()
        self._thread = threading.Thread(target=self._read, args=(position,), name="follow-reader", daemon=True)
        self._thread.start()

    def _read(self, position: str) -> None:
        quiet_said = False
        try:
            while not self._stopping.is_set():
                read = False
                for transaction in self.stream.read(position, max_changes=self.max_changes, wait=self.wait,
                                                    stored=self.stored):
                    read, quiet_said, position = True, False, transaction.position
                    if not self._put(transaction):
                        return
                if not read and not quiet_said:
                    quiet_said = True
                    if not self._put(QUIET):
                        return
        except BaseException as exc:  # handed to the follower, which retries or stops
            self._put(exc)

    def _put(self, item: Item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def stop(self) -> None:
        """Stop the reader (it returns within the stream's wait) and forget what it queued."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, 10 * self.wait))
            self._thread = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self.stream.close()
        self._next = None
