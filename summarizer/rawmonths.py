"""The months the raw table holds, read the cheapest way each database allows.

* **A month column** (first days): ``SELECT DISTINCT month``. MySQL/MariaDB answer it by skipping from
  value to value in an index that leads with month (a loose index scan); elsewhere, where such an index
  exists, one index lookup per month (a recursive ``MIN(month) > previous``); without one, one scan.
* **A date column** (``[source] date_column``), where an index leads with it: its first and its last value
  (two lookups), then every calendar month between them in one statement, two lookups each: the first
  and the last value in the month's range (:func:`rollup.month_spans`). A month whose range holds no
  value is not a month of the table. Without such an index (or across more than :data:`MAX_SPAN_MONTHS`
  months), one scan: ``SELECT DISTINCT`` the first day of each row's month.

The first and last value of each month are also what the check of the raw dates reads
(``sourcedata.py``): MariaDB's zero dates (``2024-02-00``) sort right before a month's first day, so one
shows up as the last value of the month before, or as the table's first value.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, inspect

from .dialects import Dialect
from .model import Source
from .months import as_date, month_range
from .rollup import Rollup, date_bounds, month_spans

MAX_SPAN_MONTHS = 1200  # a hundred years of candidate months; a wider span (placeholder dates?) is scanned


@dataclass(frozen=True)
class Span:
    """One month of a date column: its first day, and its first and last raw value as the driver returns them."""

    month: dt.date
    first: object
    last: object


@dataclass(frozen=True)
class Dates:
    """A date column's first and last value, and its months with theirs (None: not read, see read_dates)."""

    low: object
    high: object
    spans: list[Span] | None

    def edges(self) -> list[object]:
        """Every value read: where a value that is no date would show (module docstring)."""
        return [self.low, self.high, *(v for span in self.spans or () for v in (span.first, span.last))]


def month_leads_an_index(conn: Connection, source: Source) -> bool:
    """Whether an index on the raw table starts with the month (or date) column."""
    indexes = inspect(conn).get_indexes(source.financials.name)
    return any(i["column_names"][:1] == [source.month.name] for i in indexes)


def read_months(conn: Connection, dialect: Dialect, rollup: Rollup) -> list[dt.date]:
    """The raw table's months, in order (see the module docstring for how)."""
    source = rollup.source
    indexed = month_leads_an_index(conn, source)
    if source.dated and indexed:
        spans = read_dates(conn, source).spans
        if spans is not None:
            return [span.month for span in spans]
    if not source.dated and indexed and not dialect.LOOSE_INDEX_SCAN:
        query = rollup.source_months_by_lookups()
    else:
        query = rollup.source_months()
    return sorted(as_date(m) for m in conn.execute(query).scalars() if m is not None)


def read_dates(conn: Connection, source: Source) -> Dates:
    """A date column's first and last value and each month between them with its first and last value; the
    months are not read (None) when the first or last value is not a date (no month to start from) or they
    are more than :data:`MAX_SPAN_MONTHS` apart. Use it where an index leads with the column."""
    low, high = conn.execute(date_bounds(source)).one()
    if low is None:
        return Dates(low, high, [])
    first, last = month_of(low), month_of(high)
    if first is None or last is None or len(months := month_range(first, last)) > MAX_SPAN_MONTHS:
        return Dates(low, high, None)
    rows = conn.execute(month_spans(source, months)).all()
    spans = sorted((Span(as_date(m), a, b) for m, a, b in rows if a is not None), key=lambda span: span.month)
    return Dates(low, high, spans)


def month_of(value: object) -> dt.date | None:
    """The first day of the month of a date or timestamp as the driver returned it; None for one that is not a
    date (MariaDB's zero dates come back as text, SQLite's dates are text)."""
    if isinstance(value, dt.date):
        return value.replace(day=1) if not isinstance(value, dt.datetime) else value.date().replace(day=1)
    try:
        return dt.date.fromisoformat(str(value)[:10]).replace(day=1)
    except ValueError:
        return None
