"""What differs between SQLite, MySQL/MariaDB and PostgreSQL, and nothing else.

Each dialect declares its capabilities as class constants and overrides the few methods where the
databases disagree, each override with a one-line reason. Everything else is shared.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, String, Table, create_engine, event, extract, func, or_, text, type_coerce
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import ColumnElement

from .model import OLD_SUFFIX

PG_SORT_NODE = re.compile(r"(^|->)\s*(Incremental )?Sort\s+\(")
PG_SPILLING_HASH = re.compile(r"Planned Partitions: [1-9]")


class Dialect:
    """Shared behaviour; subclasses override what their database does differently."""

    name = "generic"
    EXACT_DECIMAL = True            # SUM over DECIMAL is exact (SQLite: REAL)
    TRANSACTIONAL_DDL = True        # the swap runs as one transaction
    INDEX_NAMES_PER_TABLE = False   # index names are unique per table, not per schema
    LOOSE_INDEX_SCAN = False        # SELECT DISTINCT on an index's first column skips from value to value
    MAX_NAME_LENGTH = 0             # longest table or index name (0: no limit that matters)
    TRANSIENT_CODES: frozenset[object] = frozenset()
    LOCK_TIMEOUT_CODES: frozenset[object] = frozenset()
    DUPLICATE_KEY_CODES: frozenset[object] = frozenset()
    UTC_NOW = "CURRENT_TIMESTAMP"   # SQL for the current UTC time, in the hand-run sql/ files
    SCRIPT_MONTH = "'2024-01-01'"   # how the hand-run sql/ files refer to the month they refresh
    SCRIPT_PREAMBLE = ""            # how those files set it

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.quote = engine.dialect.identifier_preparer.quote

    # --- connections -------------------------------------------------------------------------
    @staticmethod
    def engine_options() -> dict[str, Any]:
        return {"pool_pre_ping": True}

    def prepare_refresh_session(self, conn: Connection, tmp_table_size: int) -> None:
        """Session settings for a refresh connection (none by default)."""

    # --- errors -------------------------------------------------------------------------------
    def error_code(self, exc: BaseException) -> object:
        return None

    def is_transient(self, exc: BaseException) -> bool:
        """Can this error succeed on a second try (deadlock, lock wait, lost connection)?"""
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        return self.error_code(exc) in self.TRANSIENT_CODES

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return self.error_code(exc) in self.LOCK_TIMEOUT_CODES

    def is_duplicate_key(self, exc: BaseException) -> bool:
        return self.error_code(exc) in self.DUPLICATE_KEY_CODES

    # --- the swap -----------------------------------------------------------------------------
    def swap_phases(self, pairs: Sequence[tuple[Table, Table]], lock_timeout: int) -> list[list[str]]:
        """Statements that put each ``(live, shadow)`` pair's shadow in place, in one transaction.

        Returns phases; each phase runs in one transaction and is retried alone on a lock timeout.
        """
        statements = [*self.lock_timeout_statements(lock_timeout)]
        for live, shadow in pairs:
            statements += [f"ALTER TABLE {self.quote(live.name)} RENAME TO {self.quote(live.name + OLD_SUFFIX)}",
                           f"ALTER TABLE {self.quote(shadow.name)} RENAME TO {self.quote(live.name)}",
                           f"DROP TABLE {self.quote(live.name + OLD_SUFFIX)}"]
            statements += self.rename_indexes(live, shadow)
        return [statements]

    def lock_timeout_statements(self, seconds: int) -> list[str]:
        return []

    # --- source data --------------------------------------------------------------------------
    def view_base_tables(self, view: str) -> list[str]:
        """The tables a view reads, where the catalogue says (none by default)."""
        return []

    def month_is_not_first_day(self, month: ColumnElement[Any]) -> ColumnElement[bool]:
        """Raw rows whose month is NULL or not a month's first day (MariaDB's zero dates have day 0)."""
        return or_(month.is_(None), extract("day", month) != 1)

    def rename_indexes(self, live: Table, shadow: Table) -> list[str]:
        """After a rename the shadow's indexes still carry shadow names; give them the live ones."""
        return [f"ALTER INDEX {self.quote(new)} RENAME TO {self.quote(old)}"
                for old, new in zip(index_names(live), index_names(shadow), strict=True)]

    def drop_table_if_exists(self, name: str) -> str:
        return f"DROP TABLE IF EXISTS {self.quote(name)}"

    def statistics_statements(self, tables: Sequence[Table]) -> list[str]:
        """Planner statistics for freshly loaded shadow tables, gathered before they go live (none by default:
        InnoDB samples a table's statistics itself once a tenth of it has changed)."""
        return []

    def create_index_online(self, ddl: CreateIndex) -> tuple[str, bool]:
        """The statement adding an index to a busy source table, and whether it needs autocommit."""
        return str(ddl.compile(dialect=self.engine.dialect)), False

    # --- the run lock ---------------------------------------------------------------------------
    def lock_session_statements(self) -> list[str]:
        """Run once on the lock's own connection: it sits idle while the steps run, for hours maybe, and
        a server's idle timeout must not end it (that would release the lock in the middle of a step)."""
        return []

    def try_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        raise NotImplementedError

    def holds_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        raise NotImplementedError

    def release_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        raise NotImplementedError

    def connection_id_sql(self) -> str:
        raise NotImplementedError

    # --- plans --------------------------------------------------------------------------------
    def render(self, statement: ClauseElement) -> str:
        """The statement as this database's SQL text, its parameters written in as literals."""
        return str(statement.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))

    def explain(self, conn: Connection, statement: ClauseElement) -> list[str]:
        rows = conn.exec_driver_sql(f"EXPLAIN {self.render(statement)}").fetchall()
        return [" | ".join(str(v) for v in row) for row in rows]

    @staticmethod
    def plan_uses_temporary(plan: Sequence[str]) -> bool:
        return False

    def now_sql(self) -> str:
        """The database clock, as the raw table's updated_at column sees it."""
        return "SELECT CURRENT_TIMESTAMP"

    # --- the benchmark (bench.py) ---------------------------------------------------------------
    def server_settings(self, conn: Connection) -> dict[str, Any]:
        """The server's version and the memory it caches table pages in, as the benchmark reports them."""
        raise NotImplementedError

    def truncate_sql(self, table: str) -> str:
        return f"TRUNCATE TABLE {self.quote(table)}"

    def analyze_sql(self, table: str) -> tuple[str, bool]:
        """Fresh statistics after a bulk load, and whether the statement needs autocommit."""
        return f"ANALYZE {self.quote(table)}", False

    def settle(self, conn: Connection, timeout: float) -> None:
        """Wait for the database's background writes of earlier work, so timed runs start alike."""


class MySQLDialect(Dialect):
    name = "mysql"
    TRANSACTIONAL_DDL = False       # DDL commits implicitly; RENAME TABLE of many tables is atomic instead
    INDEX_NAMES_PER_TABLE = True
    MAX_NAME_LENGTH = 64
    LOOSE_INDEX_SCAN = True         # and its recursive-CTE spelling takes a full scan per step (MariaDB 10.11)
    # deadlock, lock wait timeout, server gone away, lost connection, can't connect,
    # connection killed (MariaDB), server shutdown in progress, query interrupted
    TRANSIENT_CODES = frozenset({1213, 1205, 2006, 2013, 2003, 1927, 1053, 1317})
    LOCK_TIMEOUT_CODES = frozenset({1205})
    DUPLICATE_KEY_CODES = frozenset({1062})
    UTC_NOW = "UTC_TIMESTAMP()"
    SCRIPT_MONTH = "@month"
    SCRIPT_PREAMBLE = "SET @month = '2024-01-01';  -- the month to refresh: its first day"

    @staticmethod
    def engine_options() -> dict[str, Any]:
        # READ COMMITTED: the refresh's INSERT ... SELECT takes no shared locks on raw rows.
        return {"pool_pre_ping": True, "isolation_level": "READ COMMITTED", "pool_recycle": 3600}

    def prepare_refresh_session(self, conn: Connection, tmp_table_size: int) -> None:
        if tmp_table_size:
            conn.execute(text(f"SET SESSION tmp_table_size = {int(tmp_table_size)}, "
                              f"max_heap_table_size = {int(tmp_table_size)}"))

    def error_code(self, exc: BaseException) -> object:
        orig = getattr(exc, "orig", exc)
        args = getattr(orig, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def swap_phases(self, pairs: Sequence[tuple[Table, Table]], lock_timeout: int) -> list[list[str]]:
        # One multi-table RENAME TABLE is atomic: readers see the old set or the new set.
        renames = ", ".join(
            f"{self.quote(live.name)} TO {self.quote(live.name + OLD_SUFFIX)}, "
            f"{self.quote(shadow.name)} TO {self.quote(live.name)}" for live, shadow in pairs)
        drops = ", ".join(self.quote(live.name + OLD_SUFFIX) for live, _ in pairs)
        return [[*self.lock_timeout_statements(lock_timeout), f"RENAME TABLE {renames}"],
                [f"DROP TABLE IF EXISTS {drops}"]]

    def lock_timeout_statements(self, seconds: int) -> list[str]:
        # metadata-lock wait of the RENAME: give up soon so new queries do not queue behind it
        return [f"SET SESSION lock_wait_timeout = {int(seconds)}"]

    def create_index_online(self, ddl: CreateIndex) -> tuple[str, bool]:
        index = ddl.element
        assert index.table is not None and index.name is not None
        columns = ", ".join(self.quote(c.name) for c in index.columns)
        return (f"ALTER TABLE {self.quote(index.table.name)} ADD INDEX {self.quote(index.name)} ({columns}), "
                "ALGORITHM=INPLACE, LOCK=NONE", False)

    def lock_session_statements(self) -> list[str]:
        return ["SET SESSION wait_timeout = 31536000"]  # a year, the largest allowed (default 8 hours)

    def try_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        return "SELECT GET_LOCK(:name, 0)", {"name": name}

    def holds_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        return "SELECT IS_USED_LOCK(:name) = CONNECTION_ID()", {"name": name}

    def release_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        return "SELECT RELEASE_LOCK(:name)", {"name": name}

    def connection_id_sql(self) -> str:
        return "SELECT CONNECTION_ID()"

    @staticmethod
    def plan_uses_temporary(plan: Sequence[str]) -> bool:
        return any("Using temporary" in line or "Using filesort" in line for line in plan)

    def now_sql(self) -> str:
        return "SELECT CURRENT_TIMESTAMP(6)"  # the clock an updated_at column's default uses

    def server_settings(self, conn: Connection) -> dict[str, Any]:
        version, pool = conn.execute(text("SELECT VERSION(), @@innodb_buffer_pool_size")).one()
        return {"version": str(version), "cache_setting": "innodb_buffer_pool_size", "cache_bytes": int(pool)}

    def analyze_sql(self, table: str) -> tuple[str, bool]:
        return f"ANALYZE TABLE {self.quote(table)}", False

    def settle(self, conn: Connection, timeout: float) -> None:
        # InnoDB flushes the dirty pages a refresh leaves (tens of MB) in the background for seconds
        # after it; a run started meanwhile waits for free pages. Wait until few are left or none go.
        status = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_pages_dirty', " \
                 "'Innodb_buffer_pool_pages_total')"
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            pages = {name.lower(): int(value) for name, value in conn.execute(text(status)).all()}
            dirty = pages["innodb_buffer_pool_pages_dirty"]
            if dirty <= pages["innodb_buffer_pool_pages_total"] // 10 or (last is not None and dirty >= last):
                return
            last = dirty
            time.sleep(1.0)


class PostgresDialect(Dialect):
    name = "postgresql"
    MAX_NAME_LENGTH = 63            # longer names are cut silently (NAMEDATALEN - 1), so two could become one
    # serialization failure, deadlock, lock not available, admin shutdown, crash shutdown,
    # cannot connect now, connection exceptions
    TRANSIENT_CODES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03",
                                 "08000", "08003", "08006", "08001", "08004"})
    LOCK_TIMEOUT_CODES = frozenset({"55P03"})
    DUPLICATE_KEY_CODES = frozenset({"23505"})
    UTC_NOW = "(now() AT TIME ZONE 'UTC')"
    SCRIPT_MONTH = "CAST(:'month' AS date)"
    SCRIPT_PREAMBLE = "\\set month '2024-01-01'  -- psql: the month to refresh, its first day"

    def error_code(self, exc: BaseException) -> object:
        orig = getattr(exc, "orig", exc)
        code = getattr(orig, "sqlstate", None)
        if code is None and isinstance(exc, OperationalError):
            return "08000"  # psycopg reports a dropped connection without a SQLSTATE
        return code

    def lock_timeout_statements(self, seconds: int) -> list[str]:
        return [f"SET LOCAL lock_timeout = '{int(seconds)}s'"]

    def view_base_tables(self, view: str) -> list[str]:
        # the SQL standard's view_table_usage, which MariaDB 10.11 and SQLite do not have
        with self.engine.connect() as conn:
            return list(conn.execute(text("SELECT DISTINCT table_name FROM information_schema.view_table_usage "
                                          "WHERE view_name = :view AND view_schema = current_schema() "
                                          "ORDER BY table_name"), {"view": view}).scalars())

    def create_index_online(self, ddl: CreateIndex) -> tuple[str, bool]:
        # CONCURRENTLY does not block writers, and cannot run inside a transaction
        sql = str(ddl.compile(dialect=self.engine.dialect))
        return sql.replace("CREATE INDEX", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1), True

    def lock_key(self, name: str) -> int:
        """The advisory lock's number for the lock ``name``."""
        # non-negative, so that pg_locks' (classid << 32 | objid) reads back the same number
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") & 0x7FFFFFFFFFFFFFFF

    def statistics_statements(self, tables: Sequence[Table]) -> list[str]:
        # A new table has no statistics until autovacuum gets to it: until then the planner guesses, and
        # a dashboard's query on the brand tier took 3.7 ms instead of 1.2 ms. ANALYZE samples 30,000 rows.
        return [f"ANALYZE {', '.join(self.quote(t.name) for t in tables)}"] if tables else []

    def lock_session_statements(self) -> list[str]:
        # idle_session_timeout exists from PostgreSQL 14 on: set only where the server has it
        return ["SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'idle_session_timeout'"]

    def try_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        return "SELECT pg_try_advisory_lock(:key)", {"key": self.lock_key(name)}

    def holds_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        key = self.lock_key(name)
        return ("SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND granted AND ((classid::bigint << 32) | objid::bigint) = :key", {"key": key})

    def release_lock_sql(self, name: str) -> tuple[str, dict[str, object]]:
        return "SELECT pg_advisory_unlock(:key)", {"key": self.lock_key(name)}

    def connection_id_sql(self) -> str:
        return "SELECT pg_backend_pid()"

    @staticmethod
    def plan_uses_temporary(plan: Sequence[str]) -> bool:
        # EXPLAIN without ANALYZE shows no spill; it shows a Sort node (the GROUP BY sorts the rows,
        # on disk beyond work_mem) and a HashAggregate the planner already expects to spill to disk.
        return any(PG_SORT_NODE.search(line) or PG_SPILLING_HASH.search(line) for line in plan)

    def now_sql(self) -> str:
        return "SELECT LOCALTIMESTAMP"  # the clock a timestamp column's default now() uses

    def server_settings(self, conn: Connection) -> dict[str, Any]:
        version, shared, work = conn.execute(text(
            "SELECT current_setting('server_version'), pg_size_bytes(current_setting('shared_buffers')), "
            "pg_size_bytes(current_setting('work_mem'))")).one()
        return {"version": f"PostgreSQL {version}", "cache_setting": "shared_buffers", "cache_bytes": int(shared),
                "work_mem_bytes": int(work)}

    def analyze_sql(self, table: str) -> tuple[str, bool]:
        # VACUUM sets the visibility map that index-only scans need; it cannot run in a transaction
        return f"VACUUM (ANALYZE) {self.quote(table)}", True

    def settle(self, conn: Connection, timeout: float) -> None:
        conn.execute(text("CHECKPOINT"))  # writes the dirty shared buffers now (superuser or pg_checkpoint)


class SQLiteDialect(Dialect):
    name = "sqlite"
    EXACT_DECIMAL = False           # no DECIMAL type: values are REAL
    TRANSIENT_CODES = frozenset({"database is locked"})

    @staticmethod
    def engine_options() -> dict[str, Any]:
        return {"connect_args": {"timeout": 30}}

    DUPLICATE_KEY_CODES = frozenset({"UNIQUE constraint failed"})

    def error_code(self, exc: BaseException) -> object:
        message = str(getattr(exc, "orig", exc))
        return next((code for code in ("database is locked", "UNIQUE constraint failed") if code in message), None)

    def rename_indexes(self, live: Table, shadow: Table) -> list[str]:
        # SQLite cannot rename an index: drop the shadow-named one and build it under the live name
        statements = []
        for index in sorted(live.indexes, key=lambda i: str(i.name)):
            columns = ", ".join(self.quote(c.name) for c in index.columns)
            statements.append(f"CREATE INDEX {self.quote(str(index.name))} ON {self.quote(live.name)} ({columns})")
        drops = [f"DROP INDEX {self.quote(str(i.name))}" for i in sorted(shadow.indexes, key=lambda i: str(i.name))]
        return drops + statements

    def month_is_not_first_day(self, month: ColumnElement[Any]) -> ColumnElement[bool]:
        # dates are text: strftime gives NULL for one that is not a date, so compare with its month's start
        text_ = type_coerce(month, String)
        return or_(month.is_(None), func.date(text_, "start of month").is_distinct_from(text_))

    def explain(self, conn: Connection, statement: ClauseElement) -> list[str]:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {self.render(statement)}").fetchall()
        return [str(row[-1]) for row in rows]

    @staticmethod
    def plan_uses_temporary(plan: Sequence[str]) -> bool:
        return any("USE TEMP B-TREE" in line for line in plan)

    def now_sql(self) -> str:
        return "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"

    def server_settings(self, conn: Connection) -> dict[str, Any]:
        version = conn.execute(text("SELECT sqlite_version()")).scalar_one()
        pages, page_size = (conn.exec_driver_sql(f"PRAGMA {p}").scalar_one() for p in ("cache_size", "page_size"))
        size = -pages * 1024 if pages < 0 else pages * page_size  # negative: KiB
        return {"version": f"SQLite {version}", "cache_setting": "cache_size", "cache_bytes": int(size)}

    def truncate_sql(self, table: str) -> str:
        return f"DELETE FROM {self.quote(table)}"  # no TRUNCATE; a DELETE without WHERE truncates


def _sqlite_transactional_ddl(engine: Engine) -> None:
    """pysqlite opens transactions itself and not before DDL; let SQLAlchemy emit BEGIN instead."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA legacy_alter_table = ON")  # renames must not rewrite views

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


DIALECTS: dict[str, type[Dialect]] = {"mysql": MySQLDialect, "mariadb": MySQLDialect,
                                      "postgresql": PostgresDialect, "sqlite": SQLiteDialect}


def index_names(table: Table) -> list[str]:
    """Names of the table's named indexes and primary key, in a stable order."""
    names = sorted(str(i.name) for i in table.indexes)
    return [str(table.primary_key.name), *names]


def dialect_class(url: URL) -> type[Dialect]:
    backend = url.get_backend_name()
    try:
        return DIALECTS[backend]
    except KeyError:
        raise ValueError(f"unsupported database {backend!r}; use mysql, mariadb, postgresql or sqlite") from None


def connect(url: URL, **options: Any) -> Dialect:
    """An engine for ``url`` wrapped in the dialect that knows its quirks."""
    cls = dialect_class(url)
    engine = create_engine(url, **{**cls.engine_options(), **options})
    if cls is SQLiteDialect:
        _sqlite_transactional_ddl(engine)
    return cls(engine)


def sqlite_path(url: URL) -> str | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    database = url.database or ""
    if not database or database == ":memory:" or re.match(r"^file:.*mode=memory", database):
        return None
    return database
