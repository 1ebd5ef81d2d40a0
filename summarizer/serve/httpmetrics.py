"""``GET /metrics``: the read API server's own Prometheus metrics, through ``prometheus_client``.

(``metrics.py`` is the other kind: a textfile about the last refresh, written by the refresh.)
Every app has a registry of its own, so two apps in one process never mix their counts::

    summarizer_http_requests_total{endpoint,method,status}       requests answered; endpoint is the
                                                                 route template (/api/meta), never the
                                                                 raw path; "unmatched" for a 404
    summarizer_http_request_duration_seconds{endpoint}           latency histogram
    summarizer_api_cache_hits_total / _misses_total / _bypasses_total{backend}
    summarizer_api_database_up                                   1 if the run history could be read
    summarizer_api_data_version                                  the data version answers are keyed by
    summarizer_api_last_success_timestamp_seconds                when the last successful refresh ended
    summarizer_api_last_success_age_seconds                      how long ago that was
    summarizer_follow_lag_seconds                                the follower's last batch: commit to applied
    summarizer_follow_waiting                                    what its stream had waiting (bytes of binary log)
    summarizer_follow_changes_per_second                         row changes applied per second, last minute
    summarizer_follow_changes_total                              row changes applied since the handover
    summarizer_follow_last_applied_timestamp_seconds             when it last applied a batch
    summarizer_follow_error                                      1 if it stopped on an error (status says which)

The last ones are read from the database at each scrape (small statements on the run history and the
follower's state row, the latter only while ``[follow] enabled``); a database that does not answer gives
``database_up 0`` and leaves the others out.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import SummarizerError
from ..runs import utcnow

if TYPE_CHECKING:
    from .read import Reader

log = logging.getLogger(__name__)
UNMATCHED = "unmatched"


class ServerMetrics:
    """The registry of one app: request counts and latencies it is told about, the rest read at scrape time."""

    def __init__(self, reader: Reader) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("summarizer_http_requests", "HTTP requests answered, by route template, method "
                                "and status.", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("summarizer_http_request_duration_seconds", "Time to answer an HTTP request, "
                                 "by route template.", ["endpoint"], registry=self.registry)
        self.registry.register(ReaderCollector(reader))

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def route(self, _request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST,
                        headers={"Cache-Control": "no-store"})


class ReaderCollector(Collector):
    """The cache's counters, and the data version and freshness from the run history, at each scrape."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        stats, backend = self.reader.cache.stats, self.reader.cache.backend
        for name, value, help_ in (("hits", stats.hits, "Answers served from the response cache."),
                                   ("misses", stats.misses, "Answers computed because the cache had none."),
                                   ("bypasses", stats.bypasses, "Answers computed because the cache was down.")):
            family = CounterMetricFamily(f"summarizer_api_cache_{name}", help_, labels=["backend"])
            family.add_metric([backend], value)
            yield family
        yield from self._freshness()

    def _freshness(self) -> Iterator[Metric]:
        try:
            version, last = self.reader.version(), self.reader.summarizer.runs.last_success()
        except (SummarizerError, SQLAlchemyError) as exc:
            log.warning("metrics: cannot read the run history: %s", exc)
            yield GaugeMetricFamily("summarizer_api_database_up", "1 if the run history could be read.", value=0)
            return
        yield GaugeMetricFamily("summarizer_api_database_up", "1 if the run history could be read.", value=1)
        yield GaugeMetricFamily("summarizer_api_data_version", "The data version answers are cached under.",
                                value=version)
        if last is not None and last.finished_at is not None:
            age = (utcnow() - last.finished_at).total_seconds()
            yield GaugeMetricFamily("summarizer_api_last_success_timestamp_seconds", "When the last successful "
                                    "refresh ended (Unix time).", value=time.time() - age)
            yield GaugeMetricFamily("summarizer_api_last_success_age_seconds", "Seconds since the last successful "
                                    "refresh ended.", value=age)
        yield from self._follower()

    def _follower(self) -> Iterator[Metric]:
        try:
            state = self.reader.summarizer.follow_status()
        except (SummarizerError, SQLAlchemyError) as exc:
            log.warning("metrics: cannot read the follower's state: %s", exc)
            return
        if state is None:
            return
        gauges = (("lag_seconds", state.lag_seconds, "Seconds from commit to applied, in the last batch."),
                  ("waiting", state.waiting, "What the change stream had waiting after the follower's position "
                   "(bytes of binary log)."),
                  ("changes_per_second", state.rate, "Row changes applied per second over the last minute."))
        for name, value, help_ in gauges:
            if value is not None:
                yield GaugeMetricFamily(f"summarizer_follow_{name}", help_, value=value)
        yield CounterMetricFamily("summarizer_follow_changes", "Row changes applied since the handover.",
                                  value=state.changes)
        if state.applied_at is not None:
            applied = state.applied_at.replace(tzinfo=dt.UTC).timestamp()
            yield GaugeMetricFamily("summarizer_follow_last_applied_timestamp_seconds", "When the follower last "
                                    "applied a batch (Unix time).", value=applied)
        yield GaugeMetricFamily("summarizer_follow_error", "1 if the follower stopped on an error.",
                                value=1 if state.error else 0)


def route_template(scope: Scope) -> str:
    """The matched route's path template (a mount's as ``/prefix/{path}``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path or "/"


class Instrumented:
    """ASGI middleware: counts and times every HTTP request by route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(route_template(scope), str(scope.get("method", "")), status[0],
                                 time.perf_counter() - started)


def instrument(app: Any, reader: Reader) -> ServerMetrics:
    """Count the app's requests and serve ``GET /metrics``."""
    metrics = ServerMetrics(reader)
    app.add_middleware(Instrumented, metrics=metrics)
    app.add_api_route("/metrics", metrics.route, methods=["GET"], include_in_schema=False)
    return metrics
