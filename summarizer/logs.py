"""Log setup for the commands: plain lines for people and cron, or one JSON object per line.

``--log-format json`` is for log shippers (journald, Vector, Fluent Bit, Loki): each record is one
line holding ``time`` (ISO 8601, UTC, with its offset), ``level``, ``logger``, ``message``, ``event``
(what happened: ``run_started``, ``run_finished``, ``next_run`` ... or, for a line that names none,
the module that logged it: ``refresh``, ``lock``, ...) and ``run_id`` (the run in ``summarizer_runs``
the line belongs to; null before a run has one), plus any other ``extra`` fields the code logged
(``mode``, ``status``, ``next_run`` ...) and ``exception`` when there is a traceback.

``summarizer serve --log-format json`` gives uvicorn's access and error lines the same form
(:func:`uvicorn_log_config`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from types import TracebackType
from typing import Any

from .secrets import redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# the attributes every LogRecord has; anything else on a record came in through ``extra=``
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


current_run_id: int | None = None  # set by runs.RunLog.start: one run at a time per process


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "event": record.name.rsplit(".", 1)[-1], "run_id": current_run_id,
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines with passwords and tokens masked (message, traceback and extra fields alike)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def protect_stderr() -> None:
    """Mask secrets also in lines logged without :func:`setup_logging` and in unexpected tracebacks."""
    if logging.lastResort is not None:
        logging.lastResort.setFormatter(RedactingFormatter(logging.Formatter()))
    sys.excepthook = _redacted_traceback


def _redacted_traceback(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def setup_logging(quiet: bool, verbose: bool, fmt: str = "text") -> None:
    """Log to stderr at WARNING (``quiet``), DEBUG (``verbose``) or INFO, as text or JSON lines."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # APScheduler narrates every job at INFO; summarizer's own lines say what happened
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose else logging.WARNING)


def uvicorn_log_config(fmt: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config``: None keeps uvicorn's own text lines; "json" makes its error and access
    lines JSON objects like ours (the access line's request fields in ``message``)."""
    if fmt != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {"json": handler},
            "loggers": {name: {"handlers": ["json"], "level": "INFO", "propagate": False}
                        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}}
