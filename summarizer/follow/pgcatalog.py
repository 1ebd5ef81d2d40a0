"""What following reads of a PostgreSQL server's catalog, and what it finds missing there.

* :func:`source_tables`: the configured source tables as the server resolves their names (the
  session's ``search_path``, so any schema), with their replica identity and columns;
* :func:`problems`: every setting, privilege or object following lacks, each with the statement or
  configuration line that provides it (and whether a restart is needed);
* :func:`setup_statements`: the statements that change the user's tables and publication for
  following (``REPLICA IDENTITY FULL``, the publication). summarizer never runs them unless asked.

Why each is needed: ``wal_level = logical`` makes the server write what logical decoding reads;
a replication slot keeps the WAL the follower has not stored yet (``max_replication_slots``); the
stream and a full refresh's snapshot each take a WAL sender (``max_wal_senders``); both need the
REPLICATION attribute; ``REPLICA IDENTITY FULL`` puts the whole old row of every update and delete in
the WAL, without which a delta cannot be subtracted; the publication names the tables ``pgoutput``
sends, so the follower's own writes to the tiers never travel back to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from .pgoutput import Column

SLOTS_NEEDED = 2    # the slot followed, and the one a full refresh creates to hand over from its snapshot
SENDERS_NEEDED = 1  # the stream, or a full refresh's snapshot export (they never run at once)
PUBLISH = ("insert", "update", "delete", "truncate")
APPLICATION_NAME = "summarizer follow"  # the replication connections' name, in pg_stat_replication
RESTART = "and restart PostgreSQL (it takes effect only at a restart)"

Quote = Callable[[str], str]
Step = tuple[str, list[str]]  # what is missing, and the statements that provide it
Partition = tuple[str, str, str]  # schema, name, replica identity


@dataclass(frozen=True)
class SourceTable:
    """A configured source table as the server knows it."""

    configured: str  # the name in the configuration, which changes report
    oid: int
    schema: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]
    partitions: tuple[Partition, ...] = ()  # a partitioned table's leaves, which hold its rows and write its WAL

    def qualified(self, quote: Quote) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    def not_full(self, quote: Quote) -> list[str]:
        """The table and partitions (qualified) whose updates and deletes would not carry the whole old row."""
        return [f"{quote(schema)}.{quote(name)}" for schema, name, identity in
                ((self.schema, self.name, self.replica_identity), *self.partitions) if identity != "f"]



def source_tables(conn: Connection, names: Sequence[str]) -> tuple[list[SourceTable], list[str]]:
    """The tables found (resolved as the session's queries resolve them), and the names not found."""
    found, missing = [], []
    for configured in names:
        row = conn.execute(text(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(quote_ident(:name))"),
            {"name": configured}).one_or_none()
        if row is None:
            missing.append(configured)
            continue
        columns = conn.execute(text(
            "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"), {"oid": row[0]}).all()
        leaves = conn.execute(text(
            "SELECT n.nspname, c.relname, c.relreplident FROM pg_partition_tree(:oid) t JOIN pg_class c ON "
            "c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf ORDER BY 1, 2"),
            {"oid": row[0]}).all() if row[4] == "p" else []
        found.append(SourceTable(configured, int(row[0]), str(row[1]), str(row[2]), str(row[3]),
                                 tuple(Column(str(n), int(t), int(m)) for n, t, m in columns),
                                 tuple((str(s), str(n), str(i)) for s, n, i in leaves)))
    return found, missing


def problems(conn: Connection, names: Sequence[str], publication: str, ours: str, quote: Quote) -> list[str]:
    """What the server lacks for following; ``ours`` is the pattern of the follower's slot names."""
    tables, missing = source_tables(conn, names)
    found = [f"source table {name} not found (as the session's search_path resolves it)" for name in missing]
    return [*_settings(conn, ours), *_privilege(conn), *found, *_table_setup(conn, tables, publication, quote)]


def setup_statements(conn: Connection, names: Sequence[str], publication: str, quote: Quote) -> list[str]:
    """The statements that prepare the source tables and the publication, in the order they must run."""
    tables, _ = source_tables(conn, names)
    return [statement for _, statements in _setup(conn, tables, publication, quote) for statement in statements]


def _settings(conn: Connection, ours: str) -> list[str]:
    row = conn.execute(text(
        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
        "current_setting('max_wal_senders')::int, "
        "(SELECT count(*) FROM pg_replication_slots WHERE NOT (slot_name ~ :ours AND database = current_database())), "
        "(SELECT count(*) FROM pg_stat_replication WHERE application_name IS DISTINCT FROM :name)"),
        {"ours": ours, "name": APPLICATION_NAME}).one()
    wal_level, slots, senders, other_slots, other_senders = row
    found = []
    if wal_level != "logical":
        found.append(f"wal_level is {wal_level}: following reads logical decoding, which needs wal_level = logical; "
                     f"as a superuser run ALTER SYSTEM SET wal_level = logical (or set wal_level = logical in "
                     f"postgresql.conf) {RESTART}")
    if slots - other_slots < SLOTS_NEEDED:
        want = other_slots + SLOTS_NEEDED
        found.append(f"max_replication_slots is {slots} and {other_slots} slot(s) belong to others: following needs "
                     f"{SLOTS_NEEDED} of its own (the one it follows, one for a full refresh's handover); run ALTER "
                     f"SYSTEM SET max_replication_slots = {want} (or set it in postgresql.conf) {RESTART}")
    if senders - other_senders < SENDERS_NEEDED:
        want = other_senders + SENDERS_NEEDED
        found.append(f"max_wal_senders is {senders} and {other_senders} are in use by others: following streams "
                     f"through a WAL sender of its own; run ALTER SYSTEM SET max_wal_senders = {want} (or set it in "
                     f"postgresql.conf) {RESTART}")
    return found


def _privilege(conn: Connection) -> list[str]:
    user, replication, superuser = conn.execute(text(
        "SELECT rolname, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user")).one()
    if replication or superuser:
        return []
    return [f"the database user {user} has neither the REPLICATION attribute nor superuser, which reading a "
            f"replication slot needs: as a superuser run ALTER ROLE {user} REPLICATION"]


def _table_setup(conn: Connection, tables: Sequence[SourceTable], publication: str, quote: Quote) -> list[str]:
    return [f"{problem}: {'; '.join(statements)}" for problem, statements in _setup(conn, tables, publication, quote)]


def _setup(conn: Connection, tables: Sequence[SourceTable], publication: str,
           quote: Quote) -> list[Step]:
    """(what is missing, the statements that provide it); replica identities first, the publication after."""
    steps = [(f"{name} has no REPLICA IDENTITY FULL, so its updates and deletes would reach the follower without "
              f"the whole old row (with FULL each of them also writes the old row to the WAL; a partition needs it "
              f"as well as its table); summarizer does not alter your tables itself: as the table's owner run",
              [f"ALTER TABLE {name} REPLICA IDENTITY FULL"])
             for t in tables for name in t.not_full(quote)]
    return steps + _publication(conn, tables, publication, quote)


_IDENTITIES = {"d": "DEFAULT", "n": "NOTHING", "i": "USING INDEX", "f": "FULL"}


def _publication(conn: Connection, tables: Sequence[SourceTable], name: str, quote: Quote) -> list[Step]:
    pub = quote(name)
    flags = conn.execute(text("SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication "
                              "WHERE pubname = :name"), {"name": name}).one_or_none()
    partitioned = any(t.partitions for t in tables)
    if flags is None:
        if not tables:
            return []
        listed = ", ".join(t.qualified(quote) for t in tables)
        via_root = " WITH (publish_via_partition_root = true)" if partitioned else ""
        return [(f"there is no publication {name} naming the tables the follower reads: as their owner (after any "
                 f"REPLICA IDENTITY statement above) run", [f"CREATE PUBLICATION {pub} FOR TABLE {listed}{via_root}"])]
    steps = []
    unpublished = [op for op, on in zip(PUBLISH, flags[:4], strict=True) if not on]
    if unpublished:
        steps.append((f"publication {name} does not publish {', '.join(unpublished)}: run",
                      [f"ALTER PUBLICATION {pub} SET (publish = '{', '.join(PUBLISH)}')"]))
    if partitioned and not flags[4]:  # else each partition's changes come under the partition's name
        steps.append((f"publication {name} sends a partitioned table's changes under its partitions' names: run",
                      [f"ALTER PUBLICATION {pub} SET (publish_via_partition_root = true)"]))
        tables = [t for t in tables if not t.partitions]  # listed by partition until then
    published = _published(conn, name)
    for t in tables:
        where = published.get((t.schema, t.name))
        if where is None:
            steps.append((f"publication {name} does not include {t.qualified(quote)}: as its owner run",
                          [f"ALTER PUBLICATION {pub} ADD TABLE {t.qualified(quote)}"]))
        elif where[0] is not None or set(where[1]) != {c.name for c in t.columns}:
            steps.append((f"publication {name} sends {t.qualified(quote)} with a row filter or a column list, and the "
                          f"follower needs every row and column: as its owner run",
                          [f"ALTER PUBLICATION {pub} DROP TABLE {t.qualified(quote)}",
                           f"ALTER PUBLICATION {pub} ADD TABLE {t.qualified(quote)}"]))
    return steps


def _published(conn: Connection, name: str) -> Mapping[tuple[str, str], tuple[str | None, list[str]]]:
    rows = conn.execute(text("SELECT schemaname, tablename, rowfilter, attnames FROM pg_publication_tables "
                             "WHERE pubname = :name"), {"name": name}).all()
    return {(str(s), str(t)): (f, list(a or [])) for s, t, f, a in rows}


def fingerprint(tables: Sequence[SourceTable]) -> str:
    """Eight hex digits per source table, from its columns (names, types, modifiers), in the configured order.

    Carried in every stream position, so a follower restarted after a table changed is told so even when
    the stream after its position shows only the new columns."""
    return "".join(_table_print(t) for t in tables)


def changed_tables(tables: Sequence[SourceTable], stored: str) -> list[str]:
    """The configured names of the tables whose columns differ from those ``stored`` (a fingerprint) describes."""
    parts = [stored[i:i + 8] for i in range(0, len(stored), 8)]
    if len(parts) != len(tables):
        return [t.configured for t in tables]
    return [t.configured for t, part in zip(tables, parts, strict=True) if _table_print(t) != part]


def _table_print(table: SourceTable) -> str:
    described = ";".join(f"{c.name}:{c.type_oid}:{c.typmod}" for c in table.columns)
    return hashlib.blake2b(described.encode(), digest_size=4).hexdigest()
