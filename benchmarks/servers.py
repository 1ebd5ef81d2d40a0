"""What the benchmark asks of each database server, and nothing the refresh needs.

Kept out of ``summarizer.dialects`` so that an installed summarizer carries no code that truncates
tables or waits for a server's background writes. One class per engine, keyed like the dialects.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, text

from summarizer.dialects import Dialect


class BenchServer:
    """The defaults; each engine overrides what it does differently, with its reason."""

    def __init__(self, dialect: Dialect) -> None:
        self.quote = dialect.quote

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


class MySQLServer(BenchServer):
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


class SQLiteServer(BenchServer):
    def server_settings(self, conn: Connection) -> dict[str, Any]:
        version = conn.execute(text("SELECT sqlite_version()")).scalar_one()
        pages, page_size = (conn.exec_driver_sql(f"PRAGMA {p}").scalar_one() for p in ("cache_size", "page_size"))
        size = -pages * 1024 if pages < 0 else pages * page_size  # negative: KiB
        return {"version": f"SQLite {version}", "cache_setting": "cache_size", "cache_bytes": int(size)}

    def truncate_sql(self, table: str) -> str:
        return f"DELETE FROM {self.quote(table)}"  # no TRUNCATE; a DELETE without WHERE truncates


SERVERS: dict[str, type[BenchServer]] = {"mysql": MySQLServer, "postgresql": PostgresServer, "sqlite": SQLiteServer}


def bench_server(dialect: Dialect) -> BenchServer:
    return SERVERS[dialect.name](dialect)
