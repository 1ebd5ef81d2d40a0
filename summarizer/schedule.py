"""``summarizer schedule``: refreshes on cron expressions, in the foreground, on APScheduler 3.x.

:class:`Foreground` is the APScheduler wrapper and takes the jobs as arguments: APScheduler's
background thread only decides *when*; every job runs in the main thread, one at a time, so a signal
reaches the run itself. Each job fires at most one instance at a time (``max_instances=1``), runs
that fired while another was busy are coalesced into one, and a run later than ``misfire_grace``
seconds is skipped and logged. Against other processes (cron, an operator's manual run) the refresh's
own run lock decides: a run that finds it held is logged as skipped, not failed.

Stopping (SIGTERM or SIGINT): with no run in progress the process exits at once. During a run the
first signal lets the run finish (it is recorded ``succeeded`` or ``failed`` as usual) and then exits;
a second signal stops the run at once: it is recorded ``interrupted``, and the live tables keep the
last complete refresh (a full refresh only swaps at its very end; a month of an incremental one is
one transaction). Either way the process exits 0 and the log says which happened.

Cron expressions are read as crontab(5) reads them, not as APScheduler does: day of week 0 and 7
are Sunday (APScheduler's 0 is Monday), and when both day of month and day of week are restricted a
day matching either fires. ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and ``@yearly`` work.
A sixth, leading field gives seconds (``*/5 * * * * *``: every five seconds), for tests and demos.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.exc import SQLAlchemyError

from . import logs
from .errors import ConfigError, LockHeld, SummarizerError
from .metrics import observed
from .runs import CHANGED, FULL
from .text import duration, first_line

if TYPE_CHECKING:
    from .facade import Summarizer

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
FIELDS = ("minute", "hour", "day", "month", "day_of_week")
NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


# --- crontab(5) expressions ---------------------------------------------------------------------
def cron_trigger(expression: str, timezone: dt.tzinfo) -> BaseTrigger:
    """A trigger firing when crontab(5) would; raises ValueError saying what is wrong."""
    text = NICKNAMES.get(expression.strip().lower(), expression.strip())
    if text.startswith("@"):
        raise ValueError(f"unknown nickname {text!r}; use one of {', '.join(NICKNAMES)} or five fields")
    parts = text.split()
    if len(parts) not in (5, 6):
        raise ValueError(f"expected five fields (minute hour day-of-month month day-of-week), or six with a "
                         f"leading seconds field, got {len(parts)} in {expression!r}")
    fields = dict(zip(("second", *FIELDS) if len(parts) == 6 else FIELDS, parts, strict=True))
    fields.setdefault("second", "0")
    dow = fields["day_of_week"]
    fields["day_of_week"] = weekdays(dow)
    if not fields["day"].startswith("*") and not dow.startswith("*"):  # cron: either day field may match
        return OrTrigger([CronTrigger(**{**fields, "day_of_week": "*"}, timezone=timezone),
                          CronTrigger(**{**fields, "day": "*"}, timezone=timezone)])
    return CronTrigger(**fields, timezone=timezone)


def weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday) as APScheduler day names: ``'0,6'`` -> ``'sun,sat'``."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        days |= _weekday_item(item)
    return "*" if days == set(range(7)) else ",".join(CRON_DAYS[d] for d in sorted(days))


def _weekday_item(item: str) -> set[int]:
    span, slash, step_text = item.partition("/")
    if slash and not step_text.isdigit():
        raise ValueError(f"day of week {item!r}: the step after / must be a whole number")
    step = int(step_text) if slash else 1
    if span == "*":
        low, high = 0, 6
    elif "-" in span:
        low, high = (_weekday(part) for part in span.split("-", 1))
    elif slash:
        raise ValueError(f"day of week {item!r}: a step needs a range or *")
    else:
        low = high = _weekday(span)
    if low > high or step < 1:
        raise ValueError(f"day of week {item!r}: the range must run from low to high with a step of 1 or more")
    return {day % 7 for day in range(low, high + 1, step)}


def _weekday(text: str) -> int:
    name = text.lower()
    if name in CRON_DAYS:
        return CRON_DAYS.index(name)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"day of week {text!r}: expected 0-7 (0 and 7 are Sunday) or sun, mon, ... sat")


def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Berlin") from None


# --- the scheduler ----------------------------------------------------------------------------
class _QueueExecutor(BaseExecutor):  # type: ignore[misc]
    """Hands due jobs to the main thread instead of running them in a pool."""

    def __init__(self, due: queue.Queue[tuple[Job, list[dt.datetime]]]) -> None:
        super().__init__()
        self.due = due

    def _do_submit_job(self, job: Job, run_times: list[dt.datetime]) -> None:
        self.due.put((job, run_times))

    def done(self, job: Job, events: list[Any]) -> None:
        self._run_job_success(job.id, events)


class Foreground:
    """Named jobs on triggers, run one at a time in the calling thread until SIGTERM or SIGINT."""

    def __init__(self, timezone: dt.tzinfo, misfire_grace: int) -> None:
        self.due: queue.Queue[tuple[Job, list[dt.datetime]]] = queue.Queue()
        self.executor = _QueueExecutor(self.due)
        self.scheduler = BackgroundScheduler(
            executors={"default": self.executor}, timezone=timezone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace})
        self.current: str | None = None
        self.stopping = False
        self.signals = 0

    def add(self, name: str, trigger: BaseTrigger, job: Callable[[], object]) -> None:
        self.scheduler.add_job(self._guarded(name, job), trigger, id=name, name=name)

    def _guarded(self, name: str, job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            self.current = name
            try:
                job()
            except KeyboardInterrupt:
                log.warning("%s: stopped by a signal", name)
            finally:
                self.current = None
        return run

    def run(self) -> None:
        """Block until a signal stops it; jobs run here, in this thread."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.scheduler.start()
        try:
            self.log_next()
            while not self.stopping:
                try:
                    job, run_times = self.due.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                self.executor.done(job, run_job(job, "default", run_times, "apscheduler.executors.default"))
                if not self.stopping:
                    self.log_next()
        finally:
            self.scheduler.shutdown(wait=False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("schedule stopped", extra={"event": "stopped"})

    def log_next(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for job in self.scheduler.get_jobs():
            due = job.next_run_time
            if due is not None:
                log.info("next %s refresh at %s (in %s)", job.id, f"{due:%Y-%m-%d %H:%M:%S %Z}",
                         duration((due - now).total_seconds()),
                         extra={"event": "next_run", "mode": job.id, "next_run": due.isoformat()})

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signals += 1
        self.stopping = True
        if self.current is None:
            log.info("%s: stopping (no run in progress)", name, extra={"event": "stopping"})
        elif self.signals == 1:
            log.warning("%s: stopping after the current %s refresh finishes; send %s again to stop it now "
                        "(it is then recorded interrupted and the live tables keep the last complete refresh)",
                        name, self.current, name, extra={"event": "stopping", "mode": self.current})
        else:
            log.warning("%s again: stopping the current %s refresh now", name, self.current,
                        extra={"event": "interrupting", "mode": self.current})
            raise KeyboardInterrupt


# --- the refresh jobs -------------------------------------------------------------------------
def refresh_job(app: Summarizer, mode: str, metrics_file: Path | None) -> Callable[[], str]:
    """One scheduled refresh of ``mode`` (full or changed). Never raises: the outcome is logged."""
    def job() -> str:
        logs.current_run_id = None  # until this run has its record
        log.info("%s refresh starting", mode, extra={"event": "run_started", "mode": mode})
        started = time.perf_counter()
        try:
            run = observed(app, metrics_file, mode, lambda: app.refresh(changed=mode == CHANGED))
        except LockHeld as exc:
            return _outcome(logging.WARNING, mode, "skipped", f"skipped: another run holds the lock ({exc})")
        except KeyboardInterrupt:
            return _outcome(logging.WARNING, mode, "interrupted", "stopped by a signal: the run is recorded "
                            "interrupted; the live tables keep the last complete refresh")
        except (SummarizerError, SQLAlchemyError) as exc:
            said = first_line(exc, named=isinstance(exc, SQLAlchemyError))
            return _outcome(logging.ERROR, mode, "failed", f"failed: {said}; the schedule goes on")
        except Exception as exc:
            log.exception("%s refresh failed unexpectedly; the schedule goes on", mode)
            return _outcome(logging.ERROR, mode, "failed", f"failed: {first_line(exc)}")
        rows = ", ".join(f"{tier} {n}" for tier, n in run.rows.items())
        took = time.perf_counter() - started
        return _outcome(logging.INFO, mode, "succeeded", f"succeeded: run {run.id} in {duration(took)}; rows {rows}",
                        run_id=run.id)
    return job


def _outcome(level: int, mode: str, status: str, message: str, **extra: Any) -> str:
    log.log(level, "%s refresh %s", mode, message,
            extra={"event": "run_finished", "mode": mode, "status": status, **extra})
    logs.current_run_id = None  # the lines between runs belong to none
    return status


def build(app: Summarizer, metrics_file: Path | None) -> Foreground:
    """The scheduler for ``[schedule]`` of the config; ConfigError names the key that is wrong."""
    _require_jobs(app)
    cfg = app.config.schedule
    timezone = _setting("timezone", partial(zone, cfg.timezone), app)
    if cfg.misfire_grace < 1:
        raise ConfigError(f"expected at least 1 second, got {cfg.misfire_grace}", source=app.config.path,
                          section="schedule", key="misfire_grace")
    foreground = Foreground(timezone, cfg.misfire_grace)
    for mode, expression in ((FULL, cfg.full), (CHANGED, cfg.changed)):
        if expression:
            trigger = _setting(mode, partial(cron_trigger, expression, timezone), app)
            foreground.add(mode, trigger, refresh_job(app, mode, metrics_file))
            log.info("scheduled: %s refresh at %r (%s)", mode, expression, cfg.timezone,
                     extra={"event": "scheduled", "mode": mode, "cron": expression})
    return foreground


def _setting(key: str, parse: Callable[[], Any], app: Summarizer) -> Any:
    try:
        return parse()
    except ValueError as exc:
        raise ConfigError(str(exc), source=app.config.path, section="schedule", key=key) from None


def _require_jobs(app: Summarizer) -> None:
    cfg = app.config.schedule
    if not cfg.full and not cfg.changed:
        raise ConfigError("nothing to schedule: set full and/or changed to a cron expression",
                          source=app.config.path, section="schedule", key="full")
    if cfg.changed and not app.config.source.updated_at_column:
        raise ConfigError("a --changed refresh needs updated_at_column in [source]; set it or leave changed "
                          "empty", source=app.config.path, section="schedule", key="changed")


def run_schedule(app: Summarizer, metrics_file: Path | None) -> None:
    """Check the config and the database, then run the schedule until SIGTERM or SIGINT."""
    foreground = build(app, metrics_file)
    app.dialect  # noqa: B018 - fail now, loudly, if the database cannot be reached
    foreground.run()
