"""The ``Server-Timing`` header: where a request's time went, so a load test can tell the server from the client.

``Server-Timing: queue;dur=0.210, db;dur=0.850, app;dur=1.400, total;dur=1.650`` (milliseconds):

* ``queue``: from the request's arrival in the ASGI app to the start of its route in a worker thread
  (waiting for one of the ``[api] threads``, and for the event loop);
* ``db``: in the database driver (statements executed and their rows fetched), summed over the request;
* ``app``: the route itself, ``db`` included (parameters, cache, the body built);
* ``total``: arrival to the response's first byte.

Data routes give all four; every other response gives ``total``. What the client measures beyond
``total`` is the network, the HTTP parsing on both sides, and the client itself.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from sqlalchemy import Engine, event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPE_KEY = "summarizer.timing"  # where the route leaves its figures (seconds) for the middleware
_db = threading.local()  # seconds this thread spent in the database driver since db_reset()
_watched: weakref.WeakSet[Engine] = weakref.WeakSet()


def watch(engine: Engine) -> None:
    """Count the time ``engine``'s statements take (execution and the driver's fetch) toward :func:`db_seconds`."""
    if engine in _watched:
        return
    _watched.add(engine)
    event.listen(engine, "before_cursor_execute", _before)
    event.listen(engine, "after_cursor_execute", _after)


def _before(*_args: Any) -> None:
    _db.started = time.perf_counter()


def _after(*_args: Any) -> None:
    _db.seconds = getattr(_db, "seconds", 0.0) + time.perf_counter() - _db.started


def db_reset() -> None:
    _db.seconds = 0.0


def db_seconds() -> float:
    """This thread's time in the database since :func:`db_reset`."""
    return float(getattr(_db, "seconds", 0.0))


def arrived(scope: Scope) -> float | None:
    """When the request reached the app (``time.perf_counter``), or None outside the middleware."""
    timing = scope.get(SCOPE_KEY)
    return timing.get("arrived") if timing is not None else None


def record(scope: Scope, **seconds: float) -> None:
    """The route's figures for the header (``queue``, ``db``, ``app``), in seconds."""
    timing = scope.get(SCOPE_KEY)
    if timing is not None:
        timing.update(seconds)


def header(timing: dict[str, Any], total: float) -> str:
    parts = [f"{name};dur={timing[name] * 1000:.3f}" for name in ("queue", "db", "app") if name in timing]
    return ", ".join([*parts, f"total;dur={total * 1000:.3f}"])


class ServerTiming:
    """ASGI middleware adding ``Server-Timing`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing: dict[str, Any] = {"arrived": time.perf_counter()}
        scope[SCOPE_KEY] = timing

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = time.perf_counter() - timing["arrived"]
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", header(timing, total).encode())]
            await send(message)
        await self.app(scope, receive, sending)
