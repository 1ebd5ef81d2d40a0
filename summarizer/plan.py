"""How a refresh reads the raw table, chosen from the raw table's indexes, and why.

Month chunks only where an index serves them in GROUP BY order: ``(month, asin, marketplace,
metric, value)``, the covering index ``summarizer init --source-indexes`` adds (a wide table: the
measure columns instead of metric and value). With ``month`` fixed such an index delivers each month's
rows already grouped, so the aggregate streams with no temporary table. With a date column
(``[source] date_column``) the index is ``(date, asin, marketplace, ...)``: it serves each month's
range ``[month, next month)`` and holds every column read, and each month's rows are grouped in a
(small) table of their own. A raw table that is a view, or one this user may not index, is indexed by
whoever owns its table: the advice then prints the ``CREATE INDEX`` statement. Without the index, month
chunks would turn one scan of the raw table into one per month, so the refresh reads the table in one
pass instead, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import inspect

from .dialects import Dialect
from .model import Source, covering_index_columns, covering_index_name


@dataclass(frozen=True)
class RefreshPlan:
    """How tier 1 reads the raw table, and why."""

    chunked: bool
    reason: str
    engine: str = ""  # another engine computes the tiers (spark): the reason says how

    def describe(self) -> str:
        if self.engine:
            return self.reason
        return ("month chunks through the covering index" if self.chunked else "one pass over the raw table") \
            + f": {self.reason}"


def choose_plan(dialect: Dialect, source: Source) -> RefreshPlan:
    """Month chunks only where an index serves them in group-by order; otherwise one scan."""
    wanted = covering_index_columns(source)
    keys = wanted[:1] if source.dated else [c.name for c in (source.month, source.asin, source.marketplace)] + (
        [] if source.wide else [source.metric.name])
    indexes = inspect(dialect.engine).get_indexes(source.financials.name)
    for index in indexes:
        columns = [str(c) for c in index["column_names"]]
        if columns[:len(keys)] == keys and set(wanted) <= set(columns):
            serves = (f"serves each month's range of {keys[0]} and holds every column read" if source.dated
                      else "covers the GROUP BY in its order")
            return RefreshPlan(True, f"index {index['name']} ({', '.join(columns)}) {serves}")
    leading = [i["name"] for i in indexes if i["column_names"][:1] == keys[:1]]
    values = "the measure columns" if source.wide else "value"
    why = (f"index {', '.join(str(n) for n in leading)} leads with {keys[0]} but does not cover the group keys and "
           f"{values}, so month chunks would look up every raw row" if leading
           else f"no index leads with {keys[0]}, so month chunks would each scan the whole table")
    return RefreshPlan(False, f"{why}; the GROUP BY sorts through a temporary table instead, which can take hours at "
                       f"tens of millions of rows. {index_advice(dialect, source)}")


def index_advice(dialect: Dialect, source: Source) -> str:
    """How to add the covering index: ``init --source-indexes`` (or its statement, for a user who may not index
    the table), or for a view, on the table it reads."""
    if is_view(dialect, source.financials.name):
        return view_advice(dialect, source)
    return (f"Add the index with `summarizer init --source-indexes`, or have the table's owner run "
            f"{index_statement(dialect, source, dialect.quote(source.financials.name))}")


def view_advice(dialect: Dialect, source: Source) -> str:
    name = source.financials.name
    bases = dialect.view_base_tables(name)
    base = dialect.quote(bases[0]) if len(bases) == 1 else "<the table the view reads>"
    return (f"{name} is a view, and a view cannot be indexed: add the index to the table it reads, for example "
            f"{index_statement(dialect, source, base)} (with that table's names for these columns)")


def index_statement(dialect: Dialect, source: Source, table: str) -> str:
    """The CREATE INDEX statement of the covering index, on ``table`` (as given: it may be a placeholder)."""
    columns = ", ".join(dialect.quote(c) for c in covering_index_columns(source))
    return f"CREATE INDEX {dialect.quote(covering_index_name(source))} ON {table} ({columns})"


def is_view(dialect: Dialect, name: str) -> bool:
    return name in inspect(dialect.engine).get_view_names()
