"""How a refresh reads the raw table, chosen from the raw table's indexes, and why.

Month chunks only where an index serves them in GROUP BY order: ``(month, asin, marketplace,
metric, value)``, the covering index ``summarizer init --source-indexes`` adds. With ``month`` fixed
such an index delivers each month's rows already grouped, so the aggregate streams with no temporary
table. A raw table that is a view cannot be indexed: the advice then names the index its base table
needs. Without it, month chunks would turn one scan of the raw table into one per month, so the
refresh reads the table in one pass instead, and says why.
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
    keys, value = wanted[:-1], wanted[-1]
    indexes = inspect(dialect.engine).get_indexes(source.financials.name)
    for index in indexes:
        columns = [str(c) for c in index["column_names"]]
        if columns[:len(keys)] == keys and value in columns:
            return RefreshPlan(True, f"index {index['name']} ({', '.join(columns)}) covers the GROUP BY in its order")
    leading = [i["name"] for i in indexes if i["column_names"][:1] == keys[:1]]
    why = (f"index {', '.join(str(n) for n in leading)} leads with {keys[0]} but does not cover the group keys and "
           "value, so month chunks would look up every raw row" if leading
           else f"no index leads with {keys[0]}, so month chunks would each scan the whole table")
    return RefreshPlan(False, f"{why}; the GROUP BY sorts through a temporary table instead, which can take hours at "
                       f"tens of millions of rows. {index_advice(dialect, source)}")


def index_advice(dialect: Dialect, source: Source) -> str:
    """How to add the covering index: ``init --source-indexes``, or for a view, on the table it reads."""
    wanted = ", ".join(covering_index_columns(source))
    if not is_view(dialect, source.financials.name):
        return f"Add the index with `summarizer init --source-indexes` ({wanted})"
    return view_advice(dialect, source)


def view_advice(dialect: Dialect, source: Source) -> str:
    name = source.financials.name
    bases = dialect.view_base_tables(name)
    base = bases[0] if len(bases) == 1 else "<the table the view reads>"
    columns = ", ".join(dialect.quote(c) for c in covering_index_columns(source))
    return (f"{name} is a view, and a view cannot be indexed: add the index to the table it reads, for example "
            f"CREATE INDEX {dialect.quote(covering_index_name(source))} ON {base} ({columns}) "
            "(with that table's names for these columns)")


def is_view(dialect: Dialect, name: str) -> bool:
    return name in inspect(dialect.engine).get_view_names()
