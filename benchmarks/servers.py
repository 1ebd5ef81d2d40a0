"""What the benchmark asks of each database server, and nothing the refresh needs.

Kept out of ``summarizer.dialects`` so that an installed summarizer carries no code that truncates
tables or waits for a server's background writes. One class per engine, keyed like the dialects.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Index, Table, bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex

from summarizer.dialects import Dialect


class BenchServer:
    """The defaults; each engine overrides what it does differently, with its reason."""

    def __init__(self, dialect: Dialect) -> None:
        self.quote = dialect.quote
        self.sa_dialect = dialect.engine.dialect

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

    def add_indexes(self, table: Table, indexes: Sequence[Index]) -> list[str]:
        """The quickest statements adding ``indexes`` to a freshly loaded table: one CREATE INDEX each."""
        return [str(CreateIndex(i).compile(dialect=self.sa_dialect)).strip() for i in indexes]

    def disk_bytes(self, conn: Connection, tables: Sequence[str]) -> int:
        """Bytes on disk of ``tables`` (those that exist) with their indexes, as the server sees them now."""
        raise NotImplementedError


class MySQLServer(BenchServer):
    def add_indexes(self, table: Table, indexes: Sequence[Index]) -> list[str]:
        # one ALTER TABLE reads the table once for all its indexes
        added = ", ".join(f"ADD INDEX {self.quote(str(i.name))} ({', '.join(self.quote(c.name) for c in i.columns)})"
                          for i in indexes)
        return [f"ALTER TABLE {self.quote(table.name)} {added}"] if indexes else []

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

    def disk_bytes(self, conn: Connection, tables: Sequence[str]) -> int:
        # The tablespace files' sizes, live: information_schema.TABLES' data_length and index_length are
        # statistics, sampled now and then, so they lag behind a bulk load by minutes.
        schema = conn.execute(text("SELECT DATABASE()")).scalar_one()
        files = text("SELECT COALESCE(SUM(file_size), 0) FROM information_schema.INNODB_SYS_TABLESPACES "
                     "WHERE name IN :names").bindparams(bindparam("names", expanding=True))
        try:
            found = conn.execute(files, {"names": [f"{schema}/{t}" for t in tables]}).scalar_one()
        except DBAPIError:  # MySQL 8 has no INNODB_SYS_TABLESPACES: the statistics, then
            conn.rollback()
            stats = text("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.TABLES "
                         "WHERE table_schema = DATABASE() AND table_name IN :names").bindparams(
                             bindparam("names", expanding=True))
            found = conn.execute(stats, {"names": list(tables)}).scalar_one()
        return int(found)


class PostgresServer(BenchServer):
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

    def disk_bytes(self, conn: Connection, tables: Sequence[str]) -> int:
        return int(conn.execute(text("SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(n))), 0) "
                                     "FROM unnest(CAST(:names AS text[])) AS n"), {"names": list(tables)}).scalar_one())


class SQLiteServer(BenchServer):
    def server_settings(self, conn: Connection) -> dict[str, Any]:
        version = conn.execute(text("SELECT sqlite_version()")).scalar_one()
        pages, page_size = (conn.exec_driver_sql(f"PRAGMA {p}").scalar_one() for p in ("cache_size", "page_size"))
        size = -pages * 1024 if pages < 0 else pages * page_size  # negative: KiB
        return {"version": f"SQLite {version}", "cache_setting": "cache_size", "cache_bytes": int(size)}

    def truncate_sql(self, table: str) -> str:
        return f"DELETE FROM {self.quote(table)}"  # no TRUNCATE; a DELETE without WHERE truncates

    def disk_bytes(self, conn: Connection, tables: Sequence[str]) -> int:
        # dbstat: the pages of every table and index, by name; an index's table is in sqlite_master
        return int(conn.execute(text("SELECT COALESCE(SUM(d.pgsize), 0) FROM dbstat d JOIN sqlite_master m "
                                     "ON m.name = d.name WHERE m.tbl_name IN :names").bindparams(
                                         bindparam("names", expanding=True)), {"names": list(tables)}).scalar_one())


SERVERS: dict[str, type[BenchServer]] = {"mysql": MySQLServer, "postgresql": PostgresServer, "sqlite": SQLiteServer}


def bench_server(dialect: Dialect) -> BenchServer:
    return SERVERS[dialect.name](dialect)
