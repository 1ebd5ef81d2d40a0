"""Which change stream follows which database: one module per kind of database, chosen here."""

from __future__ import annotations

import importlib.util

from ..config import Config
from ..dialects import Dialect
from ..errors import FollowFailed
from ..model import Source
from .stream import ChangeStream


def open_stream(dialect: Dialect, config: Config, source: Source) -> ChangeStream:
    """The change stream of ``dialect``'s database, for the configured source tables (not connected yet)."""
    if dialect.name == "mysql":
        if importlib.util.find_spec("pymysqlreplication") is None:
            raise FollowFailed("following MariaDB/MySQL reads the binary log with the mysql-replication package: "
                               "pip install 'summarizer-tiers[follow]'")
        from .binlog import BinlogStream
        return BinlogStream(dialect, source, int(config.follow.server_id))
    if dialect.name == "postgresql":
        from .pgslot import PgSlotStream
        cfg = config.follow
        return PgSlotStream(dialect.engine, source, slot_prefix=str(cfg.slot_prefix),
                            publication=str(cfg.publication))
    raise FollowFailed(f"summarizer follow reads MariaDB's and MySQL's binary log and PostgreSQL's logical "
                       f"replication; a {dialect.name} database cannot be followed: keep the tiers fresh with "
                       "`summarizer refresh`")
