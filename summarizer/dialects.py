"""What differs between SQLite, MySQL/MariaDB and PostgreSQL, and nothing else.

Each dialect declares its capabilities as class constants and overrides the few methods where the
databases disagree, each override with a one-line reason. Everything else is shared.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy
from sqlalchemy import (
    Connection,
    Date,
    Engine,
    Index,
    Insert,
    Select,
    String,
    Table,
    create_engine,
    event,
    extract,
    func,
    or_,
    text,
    type_coerce,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from .model import OLD_SUFFIX

_SKIPS_ROLLBACK = tuple(int(p) for p in re.findall(r"\d+", sqlalchemy.__version__)[:3]) >= (2, 0, 43)
PG_SORT_NODE = re.compile(r"(^|->)\s*(Incremental )?Sort\s+\(")
PG_SPILLING_HASH = re.compile(r"Planned Partitions: [1-9]")
PG_NODE = re.compile(r"^\s*(?:->\s*)?(?P<node>[A-Z][A-Za-z ]*?)(?: using (?P<index>\S+))?"
                     r"(?: on (?P<table>\S+)(?: \S+)?)?\s+\(cost=")


class Dialect:
    """Shared behaviour; subclasses override what their database does differently."""

    name = "generic"
    EXACT_DECIMAL = True            # SUM over DECIMAL is exact (SQLite: REAL)
    TRANSACTIONAL_DDL = True        # the swap runs as one transaction
    CREATE_TABLE_AS = False         # a full refresh fills its shadow tiers by CREATE TABLE ... AS SELECT
    DROPS_AFTER_SWAP = False        # the swap drops the old copies in a transaction after its renames'
    INDEX_NAMES_PER_TABLE = False   # index names are unique per table, not per schema
    LOOSE_INDEX_SCAN = False        # SELECT DISTINCT on an index's first column skips from value to value
    MAX_NAME_LENGTH = 0             # longest table or index name (0: no limit that matters)
    TRANSIENT_CODES: frozenset[object] = frozenset()
    LOCK_TIMEOUT_CODES: frozenset[object] = frozenset()
    DISCONNECT_CODES: frozenset[object] = frozenset()  # the server is gone, going or not back yet
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

    @staticmethod
    def reads_only_options() -> dict[str, Any]:
        """The read API's engine: each statement its own transaction, so a reader between two statements
        holds no lock (a metadata lock on MariaDB, a table lock on PostgreSQL) that the swap would wait for.
        No ping before each request: the reader retries a request once on a connection found dead instead."""
        return {"isolation_level": "AUTOCOMMIT", "pool_pre_ping": False}

    def prepare_refresh_session(self, conn: Connection, refresh: Any) -> None:
        """Settings for a refresh's transaction, from the ``[refresh]`` section (none by default)."""

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

    def is_disconnect(self, exc: BaseException) -> bool:
        """Is the database out of reach (a restart, a network cut) rather than answering with an error?"""
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        return self.error_code(exc) in self.DISCONNECT_CODES

    # --- privileges -----------------------------------------------------------------------------
    PRIVILEGE_CODES: frozenset[object] = frozenset()

    def is_missing_privilege(self, exc: BaseException) -> bool:
        return self.error_code(exc) in self.PRIVILEGE_CODES

    def whoami(self, conn: Connection) -> tuple[str, str]:
        """The account the session runs as, and the schema (or database) it works in."""
        return str(self.engine.url.username or ""), str(self.engine.url.database or "")

    def grant_advice(self, account: str, schema: str, message: str) -> str:
        """How an administrator gives ``account`` what summarizer needs, after ``message`` refused it."""
        return ""

    def is_duplicate_key(self, exc: BaseException) -> bool:
        return self.error_code(exc) in self.DUPLICATE_KEY_CODES

    # --- the swap -----------------------------------------------------------------------------
    def swap_phases(self, pairs: Sequence[tuple[Table, Table]], lock_timeout: int) -> list[list[str]]:
        """Statements that put each ``(live, shadow)`` pair's shadow in place, in one transaction.

        Returns phases; each phase runs in one transaction and is retried alone on a lock timeout. With
        :attr:`DROPS_AFTER_SWAP` the old copies are dropped in a second phase: a DROP TABLE holds its lock
        until its files are gone at commit, and every reader of the live tiers waits for that lock (three
        300k-row tables on PostgreSQL: 42-62 ms locked with the drops inside, 2-11 ms without). Their
        indexes then take the names the model gives the old copy's first, for the shadow's to take the live
        ones; a run that stops in between leaves the old copies for the next full refresh to drop.
        """
        renames, drops = [*self.lock_timeout_statements(lock_timeout)], []
        for live, shadow in pairs:
            old = live.name + OLD_SUFFIX
            renames.append(f"ALTER TABLE {self.quote(live.name)} RENAME TO {self.quote(old)}")
            if self.DROPS_AFTER_SWAP:
                renames += [f"ALTER INDEX {self.quote(name)} RENAME TO {self.quote(name.replace(live.name, old, 1))}"
                            for name in index_names(live)]
            renames.append(f"ALTER TABLE {self.quote(shadow.name)} RENAME TO {self.quote(live.name)}")
            if self.DROPS_AFTER_SWAP:
                drops.append(self.drop_table_if_exists(old))
            else:
                renames.append(f"DROP TABLE {self.quote(old)}")
            renames += self.rename_indexes(live, shadow)
        return [renames, drops] if self.DROPS_AFTER_SWAP else [renames]

    def lock_timeout_statements(self, seconds: int) -> list[str]:
        return []

    # --- source data --------------------------------------------------------------------------
    def view_base_tables(self, view: str) -> list[str]:
        """The tables a view reads, where the catalogue says (none by default)."""
        return []

    def month_is_not_first_day(self, month: ColumnElement[Any]) -> ColumnElement[bool]:
        """Raw rows whose month is NULL or not a month's first day (MariaDB's zero dates have day 0)."""
        return or_(month.is_(None), extract("day", month) != 1)

    def is_not_a_date(self, value: ColumnElement[Any]) -> ColumnElement[bool]:
        """Raw rows whose date (a date_column) has no month: NULL (MariaDB: also a zero date, see there)."""
        return value.is_(None)

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

    def add_indexes(self, table: Table, indexes: Sequence[Index]) -> list[str]:
        """The statements adding ``indexes`` to a freshly loaded ``table`` (a shadow tier): one CREATE INDEX each."""
        return [str(CreateIndex(i).compile(dialect=self.engine.dialect)).strip() for i in indexes]

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
        """The plan's rows as lines, the column names first."""
        result = conn.exec_driver_sql(f"EXPLAIN {self.render(statement)}")
        rows = result.fetchall()
        return [" | ".join(result.keys()), *(" | ".join(str(v) for v in row) for row in rows)]

    @staticmethod
    def plan_uses_temporary(plan: Sequence[str]) -> bool:
        return False

    @staticmethod
    def plan_summary(plan: Sequence[str]) -> str:
        """What the plan from :meth:`explain` does, in words ("" where there is nothing to add)."""
        return ""

    def now_sql(self) -> str:
        """The database clock, as the raw table's updated_at column sees it."""
        return "SELECT CURRENT_TIMESTAMP"

    # --- the follower ---------------------------------------------------------------------------------
    def upsert_adding(self, target: Table, rows: Select[Any], added: Sequence[str], replaced: Sequence[str]) -> Insert:
        """``INSERT INTO target SELECT rows``; where a row's key exists, its ``added`` columns are added to the
        existing row's and its ``replaced`` columns replace them (the follower's signed deltas)."""
        statement = sqlite.insert(target).from_select([c.name for c in target.columns], rows)
        return statement.on_conflict_do_update(
            index_elements=list(target.primary_key.columns),
            set_={**{c: target.c[c] + statement.excluded[c] for c in added},
                  **{c: statement.excluded[c] for c in replaced}})


class MySQLDialect(Dialect):
    name = "mysql"
    TRANSACTIONAL_DDL = False       # DDL commits implicitly; RENAME TABLE of many tables is atomic instead
    INDEX_NAMES_PER_TABLE = True
    MAX_NAME_LENGTH = 64
    LOOSE_INDEX_SCAN = True         # and its recursive-CTE spelling takes a full scan per step (MariaDB 10.11)
    # deadlock, lock wait timeout, server gone away, lost connection, can't connect (TCP, socket),
    # connection killed (MariaDB), server shutdown in progress, query interrupted
    TRANSIENT_CODES = frozenset({1213, 1205, 2006, 2013, 2003, 2002, 1927, 1053, 1317})
    LOCK_TIMEOUT_CODES = frozenset({1205})
    # server gone away, lost connection, can't connect (TCP, socket), connection killed, server shutdown
    DISCONNECT_CODES = frozenset({2006, 2013, 2003, 2002, 1927, 1053})
    DUPLICATE_KEY_CODES = frozenset({1062})
    UTC_NOW = "UTC_TIMESTAMP()"
    SCRIPT_MONTH = "@month"
    SCRIPT_PREAMBLE = "SET @month = '2024-01-01';  -- the month to refresh: its first day"

    @staticmethod
    def engine_options() -> dict[str, Any]:
        # READ COMMITTED: the refresh's INSERT ... SELECT takes no shared locks on raw rows.
        return {"pool_pre_ping": True, "isolation_level": "READ COMMITTED", "pool_recycle": 3600}

    @staticmethod
    def reads_only_options() -> dict[str, Any]:
        # PyMySQL's rollback() is a round trip even in autocommit; SQLAlchemy 2.0.43+ can skip it
        return {**Dialect.reads_only_options(), **({"skip_autocommit_rollback": True} if _SKIPS_ROLLBACK else {})}

    def prepare_refresh_session(self, conn: Connection, refresh: Any) -> None:
        tmp_table_size = int(refresh.tmp_table_size)
        if tmp_table_size:
            conn.execute(text(f"SET SESSION tmp_table_size = {int(tmp_table_size)}, "
                              f"max_heap_table_size = {int(tmp_table_size)}"))

    def error_code(self, exc: BaseException) -> object:
        orig = getattr(exc, "orig", exc)
        args = getattr(orig, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    # access denied to a database, a table, a column; a global privilege needed
    PRIVILEGE_CODES = frozenset({1044, 1142, 1143, 1227})

    def whoami(self, conn: Connection) -> tuple[str, str]:
        user, _, host = str(conn.execute(text("SELECT CURRENT_USER()")).scalar()).rpartition("@")
        return f"'{user}'@'{host}'", str(conn.execute(text("SELECT DATABASE()")).scalar())

    def grant_advice(self, account: str, schema: str, message: str) -> str:
        return (f"summarizer needs these privileges on database {schema}; as an administrator run: GRANT SELECT, "
                f"CREATE, ALTER, DROP, INDEX, INSERT, UPDATE, DELETE ON {self.quote(schema)}.* TO {account}")

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

    def is_not_a_date(self, value: ColumnElement[Any]) -> ColumnElement[bool]:
        # a zero date (0000-00-00, 2024-02-00) sorts before its month's first day, outside the month's range
        return or_(value.is_(None), func.month(value) == 0, func.dayofmonth(value) == 0)

    def create_index_online(self, ddl: CreateIndex) -> tuple[str, bool]:
        index = ddl.element
        assert index.table is not None and index.name is not None
        columns = ", ".join(self.quote(c.name) for c in index.columns)
        return (f"ALTER TABLE {self.quote(index.table.name)} ADD INDEX {self.quote(index.name)} ({columns}), "
                "ALGORITHM=INPLACE, LOCK=NONE", False)

    def add_indexes(self, table: Table, indexes: Sequence[Index]) -> list[str]:
        # One ALTER TABLE: InnoDB reads the table once and sorts every index from that read, where one
        # CREATE INDEX per index reads it once each (sparse shape, 5M raw rows: 115 s -> 54 s in all).
        if not indexes:
            return []
        added = ", ".join(f"ADD INDEX {self.quote(str(i.name))} ({', '.join(self.quote(c.name) for c in i.columns)})"
                          for i in indexes)
        return [f"ALTER TABLE {self.quote(table.name)} {added}"]

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

    @staticmethod
    def plan_summary(plan: Sequence[str]) -> str:
        if len(plan) < 2:
            return ""
        names = plan[0].split(" | ")
        rows = [dict(zip(names, line.split(" | "), strict=False)) for line in plan[1:]]
        access = {"ALL": "a full table scan", "index": "a full index scan", "range": "an index range scan",
                  "ref": "index lookups"}

        def given(value: str | None) -> bool:
            return value not in (None, "", "None", "NULL")

        return "; ".join(
            f"{row.get('table')}: {access.get(str(row.get('type')), str(row.get('type')) + ' access')}"
            + (f" through index {row['key']}" if given(row.get("key")) else "")
            + (f" ({row['Extra']})" if given(row.get("Extra")) else "") for row in rows)

    def now_sql(self) -> str:
        return "SELECT CURRENT_TIMESTAMP(6)"  # the clock an updated_at column's default uses

    def upsert_adding(self, target: Table, rows: Select[Any], added: Sequence[str], replaced: Sequence[str]) -> Insert:
        # ON DUPLICATE KEY UPDATE, not ON CONFLICT; the key is whichever unique key the row collides with
        statement = mysql.insert(target).from_select([c.name for c in target.columns], rows)
        return statement.on_duplicate_key_update(
            {**{c: target.c[c] + statement.inserted[c] for c in added}, **{c: statement.inserted[c] for c in replaced}})


class PostgresDialect(Dialect):
    name = "postgresql"
    MAX_NAME_LENGTH = 63            # longer names are cut silently (NAMEDATALEN - 1), so two could become one
    # serialization failure, deadlock, lock not available, admin shutdown, crash shutdown,
    # cannot connect now, connection exceptions
    TRANSIENT_CODES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03",
                                 "08000", "08003", "08006", "08001", "08004"})
    LOCK_TIMEOUT_CODES = frozenset({"55P03"})
    # admin shutdown, crash shutdown, starting up (cannot connect now), connection exceptions
    DISCONNECT_CODES = frozenset({"57P01", "57P02", "57P03", "08000", "08003", "08006", "08001", "08004"})
    DUPLICATE_KEY_CODES = frozenset({"23505"})
    CREATE_TABLE_AS = True          # shadow tiers by CREATE TABLE ... AS SELECT: its SELECT may run in parallel
    DROPS_AFTER_SWAP = True         # readers do not wait while the old tiers' files go (Dialect.swap_phases)
    UTC_NOW = "(now() AT TIME ZONE 'UTC')"
    SCRIPT_MONTH = "CAST(:'month' AS date)"
    SCRIPT_PREAMBLE = "\\set month '2024-01-01'  -- psql: the month to refresh, its first day"

    def prepare_refresh_session(self, conn: Connection, refresh: Any) -> None:
        # JIT compiles a big statement's expressions first: seconds of overhead on statements that take seconds
        settings = ["SET LOCAL jit = off"]
        if int(refresh.work_mem):
            settings.append(f"SET LOCAL work_mem = '{int(refresh.work_mem) // 1024}kB'")
        for statement in settings:
            conn.execute(text(statement))

    def error_code(self, exc: BaseException) -> object:
        orig = getattr(exc, "orig", exc)
        code = getattr(orig, "sqlstate", None)
        if code is None and isinstance(exc, OperationalError):
            return "08000"  # psycopg reports a dropped connection without a SQLSTATE
        return code

    PRIVILEGE_CODES = frozenset({"42501"})  # insufficient_privilege, also "must be owner of table"

    def whoami(self, conn: Connection) -> tuple[str, str]:
        user, schema = conn.execute(text("SELECT current_user, current_schema()")).one()
        return str(user), str(schema)

    def grant_advice(self, account: str, schema: str, message: str) -> str:
        if "must be owner" in message:  # only the owner may index, rename or drop a table
            return (f"PostgreSQL lets only a table's owner index, rename or drop it: run this as the owner of that "
                    f"table, or as an administrator run: GRANT <the owner's role> TO {account}")
        return (f"as an administrator run: GRANT USAGE, CREATE ON SCHEMA {schema} TO {account}; "
                f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {account} (the summary tables and the run table "
                f"must belong to {account}: let it create them with `summarizer init`)")

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

    @staticmethod
    def plan_summary(plan: Sequence[str]) -> str:
        nodes = _pg_aggregate_path([m for line in plan if (m := PG_NODE.match(line))])
        if not nodes:
            return ""
        chain = " over ".join(m["node"] + (f" on {m['table']}" if m["table"] else "")
                              + (f" using {m['index']}" if m["index"] else "") for m in nodes)
        names = {m["node"] for m in nodes}
        if "HashAggregate" in names:
            verdict = "it groups the rows in a hash table, not in the index's order"
        elif names & {"Sort", "Incremental Sort"}:
            verdict = "it sorts the rows before grouping them"
        elif "GroupAggregate" in names and names & {"Index Only Scan", "Index Scan"}:
            verdict = "it reads the rows in the index's order and streams the groups, with no sort"
        else:
            verdict = "see the plan below"
        return f"{chain}: {verdict}"

    def now_sql(self) -> str:
        return "SELECT LOCALTIMESTAMP"  # the clock a timestamp column's default now() uses

    def upsert_adding(self, target: Table, rows: Select[Any], added: Sequence[str], replaced: Sequence[str]) -> Insert:
        statement = postgresql.insert(target).from_select([c.name for c in target.columns], rows)
        return statement.on_conflict_do_update(
            index_elements=list(target.primary_key.columns),
            set_={**{c: target.c[c] + statement.excluded[c] for c in added},
                  **{c: statement.excluded[c] for c in replaced}})


def _pg_aggregate_path(nodes: list[re.Match[str]]) -> list[re.Match[str]]:
    """From the first aggregate node down to the scan that feeds it (a bitmap scan with its index scan)."""
    start = next((i for i, m in enumerate(nodes) if m["node"].endswith("Aggregate")), None)
    if start is None:
        return []
    path = []
    for m in nodes[start:]:
        path.append(m)
        if "Scan" in m["node"] and not m["node"].startswith("Bitmap Heap"):
            break
    return path


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

    def is_not_a_date(self, value: ColumnElement[Any]) -> ColumnElement[bool]:
        # dates and timestamps are text: date() gives NULL for text that is not one
        return or_(value.is_(None), func.date(type_coerce(value, String), "start of month").is_(None))

    def explain(self, conn: Connection, statement: ClauseElement) -> list[str]:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {self.render(statement)}").fetchall()
        return [str(row[-1]) for row in rows]

    @staticmethod
    def plan_uses_temporary(plan: Sequence[str]) -> bool:
        return any("USE TEMP B-TREE" in line for line in plan)

    def now_sql(self) -> str:
        return "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"


# --- months of dates and timestamps ---------------------------------------------------------------
# SQL functions the statement builders use, spelled per database when the statement is compiled.


class month_start(FunctionElement[Any]):  # noqa: N801 (named like the SQL function it stands for)
    """The first day of the month of a DATE, DATETIME or TIMESTAMP, as a DATE, in the session's time zone:
    MySQL/MariaDB its time_zone (a TIMESTAMP is shown in it), PostgreSQL its TimeZone (a timestamptz is
    shown in it; a date and a timestamp have no zone), SQLite the text as written."""

    type = Date()
    name = "month_start"
    inherit_cache = True


class month_after(FunctionElement[Any]):  # noqa: N801
    """The first day of the month after a month's first day: the end (excluded) of that month's range."""

    type = Date()
    name = "month_after"
    inherit_cache = True


# {0} is the argument (once: a bound parameter is one placeholder); MySQL's spelling serves MariaDB's dialect
# too. Through timestamp on PostgreSQL: a timestamptz is taken in the session's TimeZone, and a date costs no
# time-zone arithmetic.
MONTH_SQL: dict[type[month_start | month_after], dict[str, str]] = {
    month_start: {"mysql": "(LAST_DAY({0} - INTERVAL 1 MONTH) + INTERVAL 1 DAY)",
                  "postgresql": "CAST(date_trunc('month', CAST({0} AS TIMESTAMP)) AS DATE)",
                  "sqlite": "date({0}, 'start of month')"},
    month_after: {"mysql": "(CAST({0} AS DATE) + INTERVAL 1 MONTH)",
                  "postgresql": "CAST(CAST({0} AS DATE) + INTERVAL '1 month' AS DATE)",
                  "sqlite": "date({0}, '+1 month')"},
}


def _spelling(template: str) -> Any:
    def spell(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
        return template.format(compiler.process(element.clauses, **kw))
    return spell


for _construct, _spellings in MONTH_SQL.items():
    compiles(_construct)(_spelling(f"{_construct.name}({{0}})"))  # str(statement): the function's name
    for _name, _template in {**_spellings, "mariadb": _spellings["mysql"]}.items():
        compiles(_construct, _name)(_spelling(_template))


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


def connect(url: URL, *, reads_only: bool = False, **options: Any) -> Dialect:
    """An engine for ``url`` wrapped in the dialect that knows its quirks; ``reads_only``: the read API's
    (:meth:`Dialect.reads_only_options`)."""
    cls = dialect_class(url)
    engine = create_engine(url, **{**cls.engine_options(), **(cls.reads_only_options() if reads_only else {}),
                                   **options})
    if cls is SQLiteDialect and not reads_only:  # a reader needs no BEGIN: every statement stands alone
        _sqlite_transactional_ddl(engine)
    return cls(engine)


def sqlite_path(url: URL) -> str | None:
    """The file of a SQLite URL, or None for an in-memory database."""
    database = url.database or ""
    if not database or database == ":memory:" or re.match(r"^file:.*mode=memory", database):
        return None
    return database
