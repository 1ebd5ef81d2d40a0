"""What must hold before a command writes, so that no configuration can destroy or round data.

``init`` and every refresh (each mode, each engine) check, before anything is created, renamed or
dropped:

* every table summarizer owns (the three tiers, the run history, the data version, and the names
  derived from the tiers and the data version: the full refresh's ``<name>__new`` and ``<name>__old``,
  Spark's ``<name>__stage``) is
  distinct from every source table and from every other owned table;
* those names, and the index names derived from them, fit the database's identifier length;
* every existing table under an owned name has the shape summarizer gives it. Only such a table is
  ever renamed or dropped: the refresh checks again right before it drops leftovers and right before
  the swap renames (:func:`foreign_tables`);
* the summary's DECIMAL holds the raw value column (each measure column of a wide table): a scale at
  least the raw scale (no rounding), and integer digits enough for sums of the raw values (no overflow);
* where the raw table exists, its measure and date columns exist and have types that can serve.

Clashes and limits are configuration errors (exit 2) naming the setting that fixes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Integer, Numeric, SmallInteger, Table, inspect
from sqlalchemy.types import Float

from .config import Config
from .ddl import check_source_types, shape_differences
from .dialects import Dialect
from .errors import ConfigError, TableClash
from .model import FOLLOW_ROLES, OLD_SUFFIX, SHADOW_SUFFIX, STAGE_SUFFIX, TIERS, Schema, source_from_config

SOURCE_SETTINGS = ("financials_table", "products_table", "brands_table", "categories_table")
DERIVED = {"": "", SHADOW_SUFFIX: "its full refresh's new copy", OLD_SUFFIX: "its full refresh's old copy",
           STAGE_SUFFIX: "its Spark staging table"}
SUM_DIGITS = 10  # integer digits the summary keeps beyond the raw column's: sums of up to 10^10 rows
INTEGER_DIGITS = {SmallInteger: 5, BigInteger: 19, Integer: 10}  # most specific first


@dataclass(frozen=True)
class Owned:
    """A table summarizer creates, renames or drops, the setting its name comes from, and its shape."""

    table: Table
    key: str          # the [summary] setting
    role: str         # what the name is, for messages

    @property
    def name(self) -> str:
        return self.table.name


def owned_names(config: Config) -> list[tuple[str, str, str]]:
    """(name, setting, role) of every table summarizer may create, rename or drop; from the config alone."""
    owned = []
    for suffix, role in DERIVED.items():
        for tier in TIERS:
            name = config.get("summary", f"{tier}_table") + suffix
            owned.append((name, f"{tier}_table", f"{name} ({role})" if role else name))
    version = config.summary.data_version_table
    copies = [(version + suffix, "data_version_table", f"{version}{suffix} ({DERIVED[suffix]})")
              for suffix in (SHADOW_SUFFIX, OLD_SUFFIX)]  # swapped in with the tiers (version.py)
    return [*owned, (config.summary.runs_table, "runs_table", config.summary.runs_table),
            (version, "data_version_table", version), *copies, *_follow_names(config)]


def _follow_names(config: Config) -> list[tuple[str, str, str]]:
    """The follower's tables and the copies a full refresh swaps in, while following is set up."""
    if not config.follow.enabled:
        return []
    prefix = config.summary.follow_table_prefix
    return [(f"{prefix}_{role}{suffix}", "follow_table_prefix",
             f"{prefix}_{role}{suffix}" + (f" ({DERIVED[suffix]})" if suffix else ""))
            for role in FOLLOW_ROLES for suffix in ("", SHADOW_SUFFIX, OLD_SUFFIX)]


def owned_tables(schema: Schema) -> list[Owned]:
    """The tables of :func:`owned_names`, with their shapes (the names must be distinct: check_names)."""
    tables = [*(t for suffix in DERIVED for t in schema.tiers(suffix)), schema.runs(),
              *(schema.data_version(suffix) for suffix in ("", SHADOW_SUFFIX, OLD_SUFFIX))]
    if schema.config.follow.enabled:
        tables += [t for suffix in ("", SHADOW_SUFFIX, OLD_SUFFIX) for t in schema.follow(suffix)]
    roles = {name: (key, role) for name, key, role in owned_names(schema.config)}
    return [Owned(t, *roles[t.name]) for t in tables]


def check_before_write(dialect: Dialect, config: Config, schema: Schema, *, value_precision_cap: int = 0) -> None:
    """Every check of this module; raises ConfigError (exit 2) before anything is written."""
    check_names(config)
    owned = owned_tables(schema)
    check_lengths(config, owned, dialect)
    check_existing(config, dialect, owned)
    check_source_columns(config, dialect)
    check_value_type(config, dialect, value_precision_cap)


# --- names --------------------------------------------------------------------------------------------


def check_names(config: Config) -> None:
    """Raise ConfigError when an owned name is a source table's or another owned table's name."""
    sources = {config.get("source", key).lower(): key for key in SOURCE_SETTINGS}
    claimed: dict[str, tuple[str, str]] = {}
    clashes: list[tuple[str, str]] = []
    for name, key, role in owned_names(config):
        folded = name.lower()  # some databases fold case (SQLite; MySQL on some systems): never rely on it
        if folded in sources:
            clashes.append((key, f"[summary] {key} makes {role} the source table [source] "
                                 f"{sources[folded]} = {config.get('source', sources[folded])}"))
        elif folded in claimed and claimed[folded][0] != key:
            other_key, other_role = claimed[folded]
            clashes.append((key, f"[summary] {key} makes {role} the same table as [summary] {other_key} "
                                 f"({other_role})"))
        claimed.setdefault(folded, (key, role))
    if clashes:
        raise ConfigError("; ".join(why for _, why in clashes) + ": summarizer would replace or drop that table. "
                          "Give each summary table a name of its own", source=config.path, section="summary",
                          key=clashes[0][0])


def check_lengths(config: Config, owned: Sequence[Owned], dialect: Dialect) -> None:
    """Raise ConfigError when a table, index or key name derived from a setting exceeds the database's limit."""
    limit = dialect.MAX_NAME_LENGTH
    if not limit:
        return
    for table in owned:
        base = config.get("summary", table.key)
        for name in derived_names(table.table):
            if len(name) > limit:
                room = limit - max(len(n) - len(base) for t in owned if t.key == table.key
                                   for n in derived_names(t.table))
                raise ConfigError(f"the name {base!r} gives the {'table' if name == table.name else 'index'} "
                                  f"name {name!r} ({len(name)} characters), longer than the {limit} {dialect.name} "
                                  f"allows: use a name of at most {room} characters",
                                  source=config.path, section="summary", key=table.key)


def derived_names(table: Table) -> list[str]:
    """The table's name and the names of its indexes and primary key."""
    return [table.name, *(str(i.name) for i in table.indexes), str(table.primary_key.name)]


# --- existing tables --------------------------------------------------------------------------------


def check_existing(config: Config, dialect: Dialect, owned: Sequence[Owned]) -> None:
    """Raise TableClash when a table under an owned name exists with another shape."""
    problems = foreign_tables(dialect, [t.table for t in owned])
    if problems:
        key = next(t.key for t in owned if t.name == problems[0][0])
        raise TableClash("; ".join(message for _, message in problems) + ". summarizer never alters, renames or "
                         "drops a table of another shape: rename or drop it yourself, or point [summary] "
                         f"{key} at another name", source=config.path, section="summary", key=key)


def foreign_tables(dialect: Dialect, expected: Iterable[Table]) -> list[tuple[str, str]]:
    """(name, why) for each of ``expected`` that exists with another shape than the one given."""
    inspector = inspect(dialect.engine)
    existing = {name.lower(): name for name in inspector.get_table_names()}
    problems = []
    for table in expected:
        found = existing.get(table.name.lower())
        if found is None:
            continue
        differences = shape_differences(table, inspector.get_columns(found),
                                        inspector.get_pk_constraint(found)["constrained_columns"],
                                        dialect.engine.dialect)
        if differences:
            problems.append((table.name, f"table {found} exists with another shape: {'; '.join(differences)}"))
    return problems


# --- the value column ------------------------------------------------------------------------------


def check_source_columns(config: Config, dialect: Dialect) -> None:
    """Raise ConfigError when the raw table exists and a measure or the date column is missing or of a type
    that cannot serve (ddl.check_source_types); a raw table not made yet is not checked (init before the data)."""
    source = source_from_config(config)
    inspector = inspect(dialect.engine)
    if source.financials.name in set(inspector.get_table_names()) | set(inspector.get_view_names()):
        columns = {c["name"]: c["type"] for c in inspector.get_columns(source.financials.name)}
        check_source_types(dialect, source, columns)


def check_value_type(config: Config, dialect: Dialect, precision_cap: int = 0) -> None:
    """Raise ConfigError when summing a raw value column (each measure column of a wide table) into the summary's
    DECIMAL could round or overflow.

    ``precision_cap`` is the widest DECIMAL the engine computing the tiers has (Spark: 38), if narrower."""
    if not dialect.EXACT_DECIMAL:
        return  # REAL
    for column in value_column_names(config):
        raw = raw_digits(config, dialect, column)
        if raw is not None:  # no such column yet (init before the data), or not a number type we can reason about
            _check_digits(config, f"{config.source.financials_table}.{column}", raw, precision_cap)


def value_column_names(config: Config) -> list[str]:
    """The raw columns whose values are summed: the measure columns, or the value column."""
    return list(dict.fromkeys(c for _, c in config.source.measures)) or [config.source.value_column]


def _check_digits(config: Config, where: str, raw: tuple[int, int], precision_cap: int) -> None:
    raw_precision, raw_scale = raw
    precision, scale = config.summary.value_precision, config.summary.value_scale
    if raw_scale > scale:
        raise ConfigError(f"the raw column {where} has {raw_scale} decimal places and the summaries keep {scale}: "
                          f"sums would be rounded. Set value_scale = {raw_scale} (and value_precision to at least "
                          f"{raw_precision - raw_scale + SUM_DIGITS + raw_scale}), then create the tiers anew",
                          source=config.path, section="summary", key="value_scale")
    needed = raw_precision - raw_scale + SUM_DIGITS + scale
    usable = min(precision, precision_cap) if precision_cap else precision
    if needed > usable:
        cap = f" (the refresh engine handles at most {precision_cap})" if precision_cap and precision_cap < needed \
            else ""
        raise ConfigError(f"the raw column {where} holds {raw_precision - raw_scale} integer digits and the summaries "
                          f"{usable - scale}: sums of many rows could overflow. Set value_precision to at least "
                          f"{needed}{cap}", source=config.path, section="summary", key="value_precision")


def raw_digits(config: Config, dialect: Dialect, column: str) -> tuple[int, int] | None:
    """(precision, scale) of a raw value column, or None when it does not exist or is no exact number."""
    inspector = inspect(dialect.engine)
    table = config.source.financials_table
    names = set(inspector.get_table_names()) | set(inspector.get_view_names())
    if table not in names:
        return None
    type_ = next((c["type"] for c in inspector.get_columns(table) if c["name"] == column), None)
    if type_ is None or isinstance(type_, Float):
        return None
    if isinstance(type_, Numeric) and type_.precision is not None:
        return int(type_.precision), int(type_.scale or 0)
    digits = next((d for cls, d in INTEGER_DIGITS.items() if isinstance(type_, cls)), None)
    return None if digits is None else (digits, 0)
