"""Idempotent schema: build the statements ``init`` needs, check shapes, then apply.

``plan_init`` compares the database with the model and returns only the statements that are
missing; a table that exists with another shape is a :class:`SchemaError` naming the difference,
never altered or dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    false,
    inspect,
    literal,
    select,
    text,
)
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import NullType

from . import version
from .dialects import Dialect
from .errors import ConfigError, SchemaError, SourceError, UsageError
from .model import (
    Schema,
    Source,
    changed_index_columns,
    changed_index_name,
    covering_index_columns,
    covering_index_name,
)
from .plan import view_advice

INT_WIDTH = re.compile(r"^(TINYINT|SMALLINT|MEDIUMINT|INT|INTEGER|BIGINT)\(\d+\)")
TYPE_SYNONYMS = {"INT": "INTEGER", "TIMESTAMP WITHOUT TIME ZONE": "DATETIME", "TIMESTAMP": "DATETIME",
                 "NUMERIC": "DECIMAL", "CHARACTER VARYING": "VARCHAR", "FLOAT": "REAL", "DOUBLE": "REAL"}


@dataclass
class InitPlan:
    statements: list[str] = field(default_factory=list)
    online: list[tuple[str, bool]] = field(default_factory=list)  # source indexes: (sql, autocommit)


def type_name(type_: object, dialect: SADialect) -> str:
    """A comparable spelling of a column type (integer display widths and synonyms removed)."""
    name = str(type_.compile(dialect=dialect)).upper()  # type: ignore[attr-defined]
    name = INT_WIDTH.sub(r"\1", name).replace(", ", ",")
    base, _, rest = name.partition("(")
    base = TYPE_SYNONYMS.get(base.strip(), base.strip())
    if base == "DATETIME":  # fractional seconds are not part of the shape: an older whole-second run table serves
        return base
    return f"{base}({rest}" if rest else base


def shape_differences(expected: Table, columns: list[ReflectedColumn], primary_key: list[str],
                      dialect: SADialect) -> list[str]:
    found = {c["name"]: c for c in columns}
    differences = []
    for column in expected.columns:
        if column.name not in found:
            differences.append(f"missing column {column.name}")
            continue
        want = type_name(column.type, dialect)
        have = type_name(found[column.name]["type"], dialect)
        if want != have:
            differences.append(f"column {column.name} is {have}, expected {want}")
    differences += [f"unexpected column {name}" for name in found if name not in expected.columns]
    want_pk = [c.name for c in expected.primary_key.columns]
    if primary_key != want_pk:
        differences.append(f"primary key ({', '.join(primary_key)}), expected ({', '.join(want_pk)})")
    return differences


def plan_init(dialect: Dialect, schema: Schema, source: Source, *, source_indexes: bool) -> InitPlan:
    """The statements that bring the database to the model; raises on a table of the wrong shape."""
    inspector = inspect(dialect.engine)
    sa_dialect = dialect.engine.dialect
    plan = InitPlan()
    existing = set(inspector.get_table_names())
    for table in [*schema.live(), *schema.bookkeeping(), *(schema.follow() if schema.config.follow.enabled else [])]:
        if table.name in existing:
            differences = shape_differences(table, inspector.get_columns(table.name),
                                            inspector.get_pk_constraint(table.name)["constrained_columns"],
                                            sa_dialect)
            if differences:
                raise SchemaError(f"table {table.name} exists with another shape: {'; '.join(differences)}. "
                                  "summarizer never alters or drops it: rename or drop it yourself, "
                                  "or point [summary] at another table name")
            # by columns, not name: after a swap on MySQL an index keeps the shadow table's name
            have = {tuple(i["column_names"]) for i in inspector.get_indexes(table.name)}
            plan.statements += [ddl(CreateIndex(i), sa_dialect) for i in sorted_indexes(table)
                                if tuple(c.name for c in i.columns) not in have]
        else:
            plan.statements.append(ddl(CreateTable(table), sa_dialect))
            plan.statements += [ddl(CreateIndex(i), sa_dialect) for i in sorted_indexes(table)]
    plan.statements += version_row_statements(dialect, schema.data_version(), schema.data_version().name in existing)
    if source_indexes:
        plan.online = source_index_statements(dialect, source, inspector)
    return plan


def version_row_statements(dialect: Dialect, table: Table, exists: bool) -> list[str]:
    """The data version's row, where the table is new or has lost it."""
    if exists:
        with dialect.engine.connect() as conn:
            if conn.execute(version.current(table)).first() is not None:
                return []
    return [dialect.render(version.seed(table))]


def source_index_statements(dialect: Dialect, source: Source, inspector: Any) -> list[tuple[str, bool]]:
    """The raw-table indexes the refresh reads through, where no index leading with those columns exists."""
    check_source(dialect, source)
    if source.financials.name in inspector.get_view_names():
        raise UsageError(f"--source-indexes: {view_advice(dialect, source)}")
    have = [i["column_names"] for i in inspector.get_indexes(source.financials.name)]
    wanted = [(covering_index_name(source), covering_index_columns(source))]
    if source.updated_at is not None:
        wanted.append((changed_index_name(source), changed_index_columns(source)))
    statements = []
    for name, columns in wanted:
        if not any(existing[:len(columns)] == columns for existing in have):
            table = Table(source.financials.name, MetaData(), *(Column(c) for c in columns))
            statements.append(dialect.create_index_online(CreateIndex(Index(name, *table.c))))
    return statements


def check_source(dialect: Dialect, source: Source) -> None:
    """Raise SourceError naming every source table or column the rollup needs and cannot find; ConfigError
    naming the setting for a measure or date column that is missing or of a type that cannot serve."""
    inspector = inspect(dialect.engine)
    tables = set(inspector.get_table_names()) | set(inspector.get_view_names())
    typed = {m.column.name for m in source.measures} | ({source.month.name} if source.dated else set())
    problems = []
    for table, columns in source.required_columns().items():
        if table not in tables:
            problems.append(f"table {table} does not exist")
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        problems += [f"table {table} has no column {c}" for c in columns if c not in have
                     and (table != source.financials.name or c not in typed)]
    if problems:
        raise SourceError("the source data is not where the config says: " + "; ".join(problems)
                          + ". Check [source] in the config")
    check_source_types(dialect, source, {c["name"]: c["type"] for c in inspector.get_columns(source.financials.name)})


def check_source_types(dialect: Dialect, source: Source, columns: dict[str, Any]) -> None:
    """Raise ConfigError naming ``[source] measures`` or ``date_column`` for a column that is missing or whose
    type (``columns``: name -> reflected type) cannot serve: a measure must be an exact number, a date a date."""
    table = source.financials.name
    for measure in source.measures:
        name = measure.column.name
        if problem := _measure_problem(dialect, name, columns.get(name)):
            raise ConfigError(f"the measure {measure.metric}:{name}: the raw table {table} {problem}",
                              source=source.origin, section="source", key="measures")
    name = source.month.name
    if source.dated and (problem := _date_problem(dialect, name, columns.get(name))):
        raise ConfigError(f"the raw table {table} {problem}", source=source.origin, section="source",
                          key="date_column")


def _measure_problem(dialect: Dialect, column: str, type_: Any) -> str | None:
    if type_ is None:
        return f"has no column {column}"
    spelled = _spelled(type_, dialect)
    if isinstance(type_, Float) and dialect.EXACT_DECIMAL:
        return (f"holds {spelled} (binary floating point) in {column}, whose sums are not exact: give the summaries "
                f"a DECIMAL, for example through a view reading CAST({column} AS DECIMAL(18,4))")
    if isinstance(type_, Integer | Numeric) or (not dialect.EXACT_DECIMAL and isinstance(type_, Float | NullType)):
        return None
    return (f"holds {spelled} in {column}, not a number: a measure must be an integer or DECIMAL column (or a "
            "view's column cast to one)")


def _date_problem(dialect: Dialect, column: str, type_: Any) -> str | None:
    if type_ is None:
        return f"has no column {column}"
    if isinstance(type_, Date | DateTime) or (not dialect.EXACT_DECIMAL and isinstance(type_, String | NullType)):
        return None  # SQLite keeps dates as text
    return f"holds {_spelled(type_, dialect)} in {column}, not a DATE, DATETIME or TIMESTAMP"


def _spelled(type_: Any, dialect: Dialect) -> str:
    try:
        return str(type_.compile(dialect=dialect.engine.dialect))
    except Exception:  # a type this dialect cannot spell (NullType)
        return type(type_).__name__


def require_tables(dialect: Dialect, schema: Schema) -> None:
    """Raise SchemaError unless the summary and bookkeeping tables exist.

    Each table is probed with an empty SELECT rather than looked up in the catalogue: on MySQL the
    catalogue shows a multi-table RENAME half done, while a SELECT waits for the swap to finish.
    """
    missing = []
    with dialect.engine.connect() as conn:
        for table in [*schema.live(), *schema.bookkeeping()]:
            try:
                conn.execute(select(literal(1)).select_from(table).where(false()))
            except DBAPIError:
                conn.rollback()
                missing.append(table.name)
    if missing:
        raise SchemaError(f"table {', '.join(missing)} does not exist: run `summarizer init` first")


def sorted_indexes(table: Table) -> list[Index]:
    return sorted(table.indexes, key=lambda i: str(i.name))


def ddl(statement: CreateTable | CreateIndex, dialect: SADialect) -> str:
    return str(statement.compile(dialect=dialect)).strip()


def apply(dialect: Dialect, plan: InitPlan) -> None:
    with dialect.engine.begin() as conn:
        for statement in plan.statements:
            conn.execute(text(statement))
    for statement, autocommit in plan.online:
        with dialect.engine.connect() as conn:
            if autocommit:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text(statement))
            conn.commit()


def render_all(dialect: SADialect, schema: Schema) -> Iterable[str]:
    """Every CREATE statement of the model, for the ``sql/`` files."""
    for table in [*schema.live(), *schema.bookkeeping()]:
        yield ddl(CreateTable(table, if_not_exists=True), dialect)
        yield from (ddl(CreateIndex(i), dialect) for i in sorted_indexes(table))
