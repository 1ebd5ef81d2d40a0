"""The facade: one object per configuration, one method per command.

The CLI and the HTTP layer are thin over this class; tests and scripts use it directly::

    from summarizer import Summarizer, load_config
    s = Summarizer(load_config("config.ini"))
    s.init(); s.refresh(); assert s.verify().ok
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, ProgrammingError

from .config import Config
from .ddl import InitPlan, apply, check_source, plan_init, require_tables
from .dialects import Dialect, connect, sqlite_path
from .errors import ConfigError, DatabaseUnavailable, FollowFailed
from .follow.follower import Follower
from .follow.statements import read_state
from .follow.streams import open_stream
from .guards import check_before_write, check_names
from .model import Schema, source_from_config
from .plan import choose_plan, index_advice
from .privileges import named_privileges
from .rawmonths import read_months
from .refresh import Refresher, RefreshRequest
from .rollup import Rollup
from .runs import CHANGED, FULL, MONTHS, RUNNING, SINCE, SUCCEEDED, Run, RunLog, utcnow
from .secrets import redact_url
from .sourcedata import check_months
from .steps import Progress
from .text import duration, first_line
from .verify import VerifyReport, verify


@dataclass
class FollowStatus:
    """The follower's state row as ``status`` shows it: position, lag, throughput, what is waiting, the last error."""

    position: str
    committed_at: dt.datetime | None = None
    applied_at: dt.datetime | None = None
    lag_seconds: float | None = None
    changes: int = 0
    batches: int = 0
    rate: float | None = None
    waiting: int | None = None
    checked_at: dt.datetime | None = None
    handover_at: dt.datetime | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    error_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> FollowStatus:
        m: dict[str, Any] = dict(row._mapping)
        for key in ("lag_seconds", "rate"):
            m[key] = float(m[key]) if m[key] is not None else None
        return cls(**{k: m[k] for k in cls.__dataclass_fields__ if k in m})

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key, value in data.items():
            if isinstance(value, dt.datetime):
                data[key] = value.replace(tzinfo=dt.UTC).isoformat()
        return data


@dataclass
class Status:
    runs: list[Run]
    last_success: Run | None
    age_seconds: float | None
    rows: dict[str, int]
    months: list[str]
    unassigned: dict[str, float | None] = field(default_factory=dict)
    follow: FollowStatus | None = None

    def problems(self, max_age_seconds: float) -> list[str]:
        """Why monitoring should page: stale summaries, or a last run that did not succeed."""
        found = []
        if self.last_success is None:
            found.append("no refresh has succeeded yet")
        elif self.age_seconds is not None and self.age_seconds > max_age_seconds:
            found.append(f"the last successful refresh finished {duration(self.age_seconds)} ago, "
                         f"more than the allowed {duration(max_age_seconds)}")
        finished = next((r for r in self.runs if r.status != RUNNING), None)
        if finished is not None and finished.status != SUCCEEDED:
            found.append(f"the last run ({finished.describe()}) {finished.status}: {finished.error}")
        if self.follow is not None and self.follow.error:
            found.append(f"the follower stopped: {self.follow.error}")
        return found

    def as_json(self) -> dict[str, Any]:
        return {"last_success": self.last_success.as_json() if self.last_success else None,
                "age_seconds": self.age_seconds, "rows": self.rows,
                "months": {"count": len(self.months), "first": self.months[0] if self.months else None,
                           "last": self.months[-1] if self.months else None},
                "unassigned": self.unassigned, "runs": [r.as_json() for r in self.runs],
                "follow": self.follow.as_json() if self.follow else None}


# what drivers raise for an option of the URL they cannot use (?charset=nonesuch, ?connect_timeout=abc)
REFUSED_OPTIONS = (ValueError, TypeError, AttributeError, LookupError)


class Summarizer:
    """Everything summarizer does, for one configuration."""

    def __init__(self, config: Config, *, pool_size: int = 5) -> None:
        self.config = config
        check_names(config)  # before any table is described: two tiers under one name cannot even be modelled
        self.schema = Schema(config)
        self.source = source_from_config(config)
        self.rollup = Rollup(self.source, self.schema)
        self._pool_size = pool_size

    @cached_property
    def dialect(self) -> Dialect:
        url = self.config.database_url()
        options: dict[str, Any] = {}
        if url.get_backend_name() != "sqlite":
            options = {"pool_size": self._pool_size, "max_overflow": 64}  # --jobs up to 64
        dialect = self._connect(url, options)
        try:
            with dialect.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (ProgrammingError, *REFUSED_OPTIONS) as exc:
            dialect.engine.dispose()
            raise self._refused(url, exc) from None
        except DBAPIError as exc:
            dialect.engine.dispose()
            raise DatabaseUnavailable(
                f"cannot connect to {redact_url(url)}: {first_line(exc)}. "
                "Check [database] in the config or SUMMARIZER_DATABASE_URL") from None
        return dialect

    def _connect(self, url: URL, options: dict[str, Any]) -> Dialect:
        """The engine (not connected yet); ConfigError for a driver that is missing or refuses the URL."""
        try:
            return connect(url, **options)
        except (ImportError, NoSuchModuleError) as exc:
            raise self._url_error(f"the driver {url.drivername} is not installed ({first_line(exc)}); write "
                                  "mysql+pymysql://, postgresql+psycopg:// or sqlite:/// (the drivers summarizer "
                                  "installs)") from None
        except REFUSED_OPTIONS as exc:
            raise self._refused(url, exc) from None

    def _refused(self, url: URL, exc: Exception) -> ConfigError:
        return self._url_error(f"the driver refused the URL {redact_url(url)} (check the options after '?'): "
                               f"{first_line(exc)}")

    def _url_error(self, message: str) -> ConfigError:
        return ConfigError(message, section="database", key="url")

    @cached_property
    def read_dialect(self) -> Dialect:
        """The read API's engine: every statement its own transaction (``Dialect.reads_only_options``), a
        connection per ``[api] threads``; an in-memory SQLite database has only the one engine."""
        url = self.config.database_url()
        if url.get_backend_name() == "sqlite" and sqlite_path(url) is None:
            return self.dialect
        self.dialect  # noqa: B018 - connects once and says clearly why it cannot
        threads = self.config.api.threads
        options = {} if url.get_backend_name() == "sqlite" else {"pool_size": threads, "max_overflow": threads}
        return self._connect(url, {"reads_only": True, **options})

    @cached_property
    def runs(self) -> RunLog:
        return RunLog(self.dialect.engine, self.schema.runs())

    def close(self) -> None:
        for name in ("read_dialect", "dialect"):
            if name in self.__dict__:
                self.__dict__[name].engine.dispose()

    # --- commands -------------------------------------------------------------------------------
    def init(self, *, source_indexes: bool = False, dry_run: bool = False) -> InitPlan:
        """Create what is missing; with ``dry_run`` only return the statements."""
        check_before_write(self.dialect, self.config, self.schema)
        if self.config.follow.enabled:  # nothing is created for a follower that could not start
            self._require_follow_ready("init")
        with named_privileges(self.dialect, "init"):
            plan = plan_init(self.dialect, self.schema, self.source, source_indexes=source_indexes)
            if not dry_run:
                apply(self.dialect, plan)
        return plan

    def refresh(self, *, months: Sequence[dt.date] = (), since: dt.datetime | None = None,
                changed: bool = False, jobs: int | None = None, wait: float = 0.0,
                progress: Progress | None = None) -> Run:
        """Full refresh by default; ``months``, ``since`` or ``changed`` make it incremental."""
        mode = MONTHS if months else SINCE if since else CHANGED if changed else FULL
        request = RefreshRequest(mode=mode, months=tuple(sorted(set(months))), since=since,
                          jobs=jobs or self.config.refresh.jobs, wait=wait)
        refresher = Refresher(self.dialect, self.config, self.schema, self.source, self.runs, progress)
        with named_privileges(self.dialect, "refresh"):
            return refresher.run(request)

    def follow_problems(self) -> list[str]:
        """What the server lacks for following (a setting, a privilege), each with how to set it."""
        stream = open_stream(self.dialect, self.config, self.source)
        try:
            return stream.problems()
        finally:
            stream.close()

    def _require_follow_ready(self, command: str) -> None:
        problems = self.follow_problems()
        if problems:
            raise FollowFailed(f"{command}: following is set up ([follow] enabled) and the server is not ready: "
                               + "; ".join(problems) + ". Nothing was created or changed")

    def follower(self, *, resync_progress: Progress | None = None) -> Follower:
        """The follower of this configuration (``run()`` it; set its ``stop`` event to end it after a batch)."""
        if not self.config.follow.enabled:
            raise ConfigError("following is not set up: set enabled = true, then run `summarizer init`",
                              source=self.config.path, section="follow", key="enabled")
        self._require_tables()
        stream = open_stream(self.dialect, self.config, self.source)
        return Follower(self.dialect, self.config, self.schema, self.source, stream,
                        resync=lambda: self.refresh(progress=resync_progress))

    def follow_status(self) -> FollowStatus | None:
        if not self.config.follow.enabled:
            return None
        with self.dialect.engine.connect() as conn:
            try:
                row = conn.execute(read_state(self.schema.follow().state)).first()
            except DBAPIError:
                return None
        return FollowStatus.from_row(row) if row is not None else None

    def verify(self, months: Sequence[dt.date] | None = None) -> VerifyReport:
        check_source(self.dialect, self.source)  # a source the configuration cannot read is a configuration error
        self._require_tables()
        check_months(self.dialect, self.source, "verify")
        return verify(self.dialect, self.rollup, self.schema.live(), months)

    def months_without_raw_rows(self, months: Sequence[dt.date]) -> list[dt.date]:
        """Those of ``months`` the raw table has no rows for (a refresh of them leaves no summary rows)."""
        with self.dialect.engine.connect() as conn:
            found = {str(m)[:10] for m in conn.execute(self.rollup.months_present(months)).scalars()}
        return [m for m in sorted(set(months)) if m.isoformat() not in found]

    def explain(self) -> dict[str, Any]:
        """The database's plan for tier 1's read of the raw table, and whether it needs a temporary table.

        A month chunk of a date column groups its rows apart from the index's order (their dates differ): a
        temporary table of one month's groups, not of the whole table's, which is not reported as one."""
        plan = choose_plan(self.dialect, self.source)
        statement = self.rollup.tier1_select(utcnow(), by_month=plan.chunked)
        with self.dialect.engine.connect() as conn:
            if plan.chunked:
                months = read_months(conn, self.dialect, self.rollup)
                statement = statement.params(month=months[0] if months else None)
            lines = self.dialect.explain(conn, statement)
        temporary = self.dialect.plan_uses_temporary(lines) and not (plan.chunked and self.source.dated)
        return {"plan": plan.describe(), "chunked": plan.chunked, "explain": lines,
                "summary": self.dialect.plan_summary(lines), "temporary": temporary,
                "advice": "" if plan.chunked else index_advice(self.dialect, self.source)}

    def status(self, limit: int = 10) -> Status:
        self._require_tables()
        check_months(self.dialect, self.source, "status", only_if_indexed=True)  # see docs/data-rules.md
        last = self.runs.last_success()
        age = (utcnow() - last.finished_at).total_seconds() if last and last.finished_at else None
        live = self.schema.live()
        with self.dialect.engine.connect() as conn:
            rows = {name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for name, t in live.by_name().items()}
            months = [f"{_as_month(m)}" for m in conn.execute(
                select(live.category.c.month).distinct().order_by(live.category.c.month)).scalars()]
            share = conn.execute(self.rollup.unassigned_share(live.brand)).one()
        return Status(runs=self.runs.latest(limit), last_success=last, age_seconds=age, rows=rows,
                      months=months, unassigned=_shares(share), follow=self.follow_status())

    def _require_tables(self) -> None:
        require_tables(self.dialect, self.schema)


def _shares(row: Sequence[Any]) -> dict[str, float | None]:
    rows, no_brand_rows, no_cat_rows, absolute, no_brand_abs, no_cat_abs = row

    def share(part: Any, whole: Any) -> float | None:
        return round(float(Decimal(str(part)) / Decimal(str(whole))), 6) if whole else None
    return {"rows_without_brand": share(no_brand_rows, rows), "rows_without_category": share(no_cat_rows, rows),
            "value_without_brand": share(no_brand_abs, absolute), "value_without_category": share(no_cat_abs, absolute)}


def _as_month(value: Any) -> str:
    return str(value)[:7]
