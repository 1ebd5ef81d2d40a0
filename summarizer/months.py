"""Months as the commands and the API accept them: ``2024-01``, ``2024-01..2024-03``, ``2024-02,2024-05``."""

from __future__ import annotations

import datetime as dt
import re

MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MAX_MONTHS = 1200


def parse_month(text: str) -> dt.date:
    """``'2024-03'`` -> date(2024, 3, 1); ValueError with the expected form otherwise."""
    match = MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"expected a month as YYYY-MM (for example 2024-03), got {text.strip()!r}")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


def add_months(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


def month_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every month from ``first`` to ``last``, both included."""
    count = (last.year - first.year) * 12 + last.month - first.month + 1
    return [add_months(first, i) for i in range(count)]


def parse_months(spec: str) -> list[dt.date]:
    """A comma-separated list of months and ``FROM..TO`` ranges, sorted and without repeats."""
    months: set[dt.date] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise ValueError(f"empty month in {spec!r}; expected e.g. 2024-01..2024-03 or 2024-02,2024-05")
        first_text, dots, last_text = part.partition("..")
        first = parse_month(first_text)
        last = parse_month(last_text) if dots else first
        if last < first:
            raise ValueError(f"range {part!r} ends before it starts")
        months.update(month_range(first, last))
        if len(months) > MAX_MONTHS:
            raise ValueError(f"more than {MAX_MONTHS} months in {spec!r}")
    return sorted(months)


def parse_timestamp(text: str) -> dt.datetime:
    """``'2025-11-20 00:00'`` or ISO 8601; naive, in the database's clock."""
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a timestamp like '2025-11-20 00:00', got {text.strip()!r}") from None


def as_date(value: object) -> dt.date:
    """A month (or any day) as the database returned it: a date, a datetime, or ISO text."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
