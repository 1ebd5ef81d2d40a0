"""Raw rows the rollup cannot sum as they are: found, and reported with the table, the column and an example.

* **Months.** Every tier keys a month by its first day, so a raw month value that is not the first
  day of a month (``2023-02-15``), NULL, or one of MariaDB's zero dates (``0000-00-00``,
  ``2023-02-00``) would be summed under a month of its own, or left out. refresh (every mode), verify
  and status refuse them (:func:`check_months`). The check reads the raw table's distinct months,
  which the covering index ``(month, ...)`` gives cheaply (MySQL skips from month to month; elsewhere
  one index lookup per month), plus one lookup for a NULL; the rows are counted only when some are bad.
* **Dates.** With ``[source] date_column`` any day or time of a month is fine; a NULL, a MariaDB zero
  date or (SQLite) text that is no date has no month and is refused the same way. Through an index
  leading with the date the check reads each month's first and last value (``rawmonths.py``: a zero date
  sorts right before a month's first day, so it is one of them); without one, one scan.
* **Duplicate keys.** A refresh that fails on a tier's primary key was given two rows for one key:
  duplicate ``products`` or ``brands`` rows, or raw keys that the summary's collation takes for equal
  (letter case, trailing spaces). :func:`duplicate_key_message` says which, only after such a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, String, func, literal, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from .dialects import Dialect
from .errors import SourceDataError
from .model import Source
from .rawmonths import month_leads_an_index, month_of, read_dates

SHOWN = 3  # example values in a message


def month_column(source: Source) -> ColumnElement[str]:
    """The raw month column as the driver returns it (a date, or text that may not be one)."""
    return type_coerce(source.financials.c[source.month.name], String)


def is_first_of_month(value: object) -> bool:
    if isinstance(value, dt.datetime):
        return value.day == 1 and value.time() == dt.time()
    if isinstance(value, dt.date):
        return value.day == 1
    text = str(value) if value is not None else ""
    try:
        return len(text) == 10 and dt.date.fromisoformat(text).day == 1
    except ValueError:
        return False


def distinct_months(dialect: Dialect, source: Source) -> Select[Any]:
    """The raw table's distinct month values: one loose index scan or one lookup per month where an index
    leads with month; one scan otherwise."""
    month = source.financials.c[source.month.name]
    if dialect.LOOSE_INDEX_SCAN or not _month_leads_an_index(dialect, source):
        return select(month_column(source)).distinct()
    first = select(func.min(month).label("month")).cte("months", recursive=True)
    previous = first.alias("previous")
    following = select(func.min(month)).where(month > previous.c.month).scalar_subquery()
    months = first.union_all(select(following).where(previous.c.month.is_not(None)))
    return select(type_coerce(months.c.month, String)).where(months.c.month.is_not(None))


def _month_leads_an_index(dialect: Dialect, source: Source) -> bool:
    with dialect.engine.connect() as conn:
        return month_leads_an_index(conn, source)


def bad_months(conn: Connection, dialect: Dialect, source: Source) -> list[object]:
    """Month values that are not a month's first day (None for NULL), at most a few; for a date column, values
    that are no date."""
    month = source.financials.c[source.month.name]
    if source.dated:
        found = bad_dates(conn, dialect, source)
    else:
        found = [m for m in conn.execute(distinct_months(dialect, source)).scalars() if not is_first_of_month(m)]
    has_null = conn.execute(select(literal(1)).select_from(source.financials).where(month.is_(None)).limit(1))
    if None not in found and has_null.first() is not None:
        found.append(None)
    return sorted(found, key=lambda m: (m is None, str(m)))[:SHOWN]


def bad_dates(conn: Connection, dialect: Dialect, source: Source) -> list[object]:
    """A date column's values that are not dates (not NULL; that is looked up apart), at most a few: through the
    index whether there are any, then (there are, or no index tells) the examples in one scan."""
    if month_leads_an_index(conn, source):
        dates = read_dates(conn, source)
        if dates.spans is not None and all(v is None or month_of(v) is not None for v in dates.edges()):
            return []
    column = source.financials.c[source.month.name]
    query = select(type_coerce(column, String)).where(dialect.is_not_a_date(column), column.is_not(None))
    return list(conn.execute(query.limit(SHOWN)).scalars())


def check_months(dialect: Dialect, source: Source, doing: str, *, only_if_indexed: bool = False) -> None:
    """Raise SourceDataError naming the table, the column, examples and the number of rows whose month is bad.

    ``only_if_indexed`` skips the check where no index leads with month (it would scan the raw table): for
    status, which monitoring runs often; refresh and verify read the whole raw table anyway."""
    if only_if_indexed and not _month_leads_an_index(dialect, source):
        return
    with dialect.engine.connect() as conn:
        found = bad_months(conn, dialect, source)
        if not found:
            return
        month = source.financials.c[source.month.name]
        bad = dialect.is_not_a_date(month) if source.dated else dialect.month_is_not_first_day(month)
        count = conn.execute(select(func.count()).select_from(source.financials).where(bad)).scalar_one()
    raise SourceDataError(months_message(source, found, int(count), doing))


def months_message(source: Source, examples: Sequence[object], count: int, doing: str) -> str:
    shown = ", ".join("NULL" if m is None else str(m) for m in examples)
    table, column = source.financials.name, source.month.name
    if source.dated:
        return (f"{doing} refused: the raw table {table} has {count} row(s) whose {column} is not a date "
                f"(for example {shown}). Every summary keys a row by the month of its {column}, so those rows "
                f"would be left out: set {table}.{column} on those rows (or delete them), then run it again")
    return (f"{doing} refused: the raw table {table} has {count} row(s) whose {column} is not the first day of a "
            f"month (for example {shown}). Every summary keys a month by its first day, so those rows would be "
            f"summed apart or left out: set {table}.{column} to the first day of each row's month (or delete the "
            "rows without one), then run it again")


# --- duplicate keys -------------------------------------------------------------------------------


def duplicate_key_message(conn: Connection, source: Source, error: str) -> str:
    """What to say about a duplicate key in a tier: the source table with duplicate keys, or the collation."""
    for table, key in ((source.products, source.product_asin), (source.brands, source.brand_id),
                       (source.categories, source.category_id)):
        column = table.c[key.name]
        example = conn.execute(select(column, func.count()).group_by(column).having(func.count() > 1).limit(1)).first()
        if example is not None:
            return (f"the source table {table.name} has {example[1]} rows for {key.name} {example[0]!r}; each "
                    f"{key.name} may have one row only (the summaries would count its raw rows once per row): "
                    f"delete the extra rows, or give {table.name} a unique key on {key.name}")
    return (f"two raw keys are one key for the summary tables ({error}): the raw table's asin, marketplace or "
            "metric values differ only in letter case or trailing spaces, which the raw table's collation tells "
            "apart and the summaries' does not. Make those values equal in the raw table, or give its key columns "
            "the collation the summary tables use")
