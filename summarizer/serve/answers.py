"""How a data answer is shaped once the tier is read: names beside ids, a total order, one page.

A read endpoint's statement has two layers and is still one statement. The *inner* select reads one
summary tier (per month, or summed over the range for ``group=total``; ``read.py`` builds it). The
*outer* select, built here, wraps it:

* **names**: every ``brand_id`` is followed by ``brand_name`` and every ``category_id`` by
  ``category_name``, joined from the small ``brands`` / ``categories`` tables in the same statement
  (grouped by id first, so a duplicated id in a dimension table can never duplicate an answer's rows).
  The unassigned id is named ``"Unassigned"``; an id with no row there has a null name. A name column
  the database does not have is left out of the answers, and ``/api/meta`` says so (:func:`discover`).
* **order**: the order asked for, then the row's key, so the order is total and paging is stable;
* **page**: ``LIMIT limit + 1 OFFSET offset``; the extra row only tells whether a next page exists.

The rows then go out as JSON, or as CSV (:func:`csv_body`): the same columns in the same order, the
decimals as the same exact text, a null as an empty field.

Joining rather than keeping a name map in memory: the names come from the same snapshot as the
numbers, ``order=name`` sorts and pages in the database like any other order, and nothing has to be
invalidated. Everything here is pure: it builds statements and never runs them.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, String, case, func, inspect, literal, select
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import ColumnClause, FromClause, Subquery, TableClause

from ..model import Source

UNASSIGNED_NAME = "Unassigned"
NAMED = {"brand_id": "brand_name", "category_id": "category_name"}


@dataclass(frozen=True)
class Names:
    """The name tables an answer joins (None: the name column is missing and left out), and why not."""

    brand: Subquery | None = None
    category: Subquery | None = None
    unassigned: int = 0
    notes: tuple[str, ...] = ()

    def table_for(self, id_column: str) -> Subquery | None:
        return {"brand_id": self.brand, "category_id": self.category}.get(id_column)


NO_NAMES = Names()


@dataclass(frozen=True)
class Shape:
    """What the outer select needs to know about an endpoint's inner rows."""

    keys: tuple[str, ...]  # the row's key after the month: unique together with it
    value: str = "value"  # what order=value_desc / value_asc sorts by
    name_of: str = "brand_id"  # the id whose name order=name sorts by


def name_table(table: TableClause, id_column: ColumnClause[Any], name_column: ColumnClause[Any],
               alias: str) -> Subquery:
    """``(id, name)`` per id of a dimension table: one row per id even if the table repeats one."""
    return select(id_column.label("id"), func.max(name_column).label("name")).select_from(table).group_by(
        id_column).subquery(alias)


def discover(conn: Connection, source: Source, unassigned: int) -> Names:
    """The name tables whose configured name column exists in the database; a note for each that does not."""
    brand, brand_note = _probe(conn, source.brands, source.brand_id, source.brand_name, "brand")
    category, category_note = _probe(conn, source.categories, source.category_id, source.category_name, "category")
    notes = tuple(note for note in (brand_note, category_note) if note)
    return Names(brand, category, unassigned, notes)


def _probe(conn: Connection, table: TableClause, id_column: ColumnClause[Any], name_column: ColumnClause[Any],
           kind: str) -> tuple[Subquery | None, str]:
    setting = f"[source] {kind}_name_column"
    try:
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    except NoSuchTableError:
        return None, f"{kind}_name is left out: table {table.name} does not exist"
    missing = [c.name for c in (id_column, name_column) if c.name not in present]
    if missing:
        return None, (f"{kind}_name is left out: table {table.name} has no column {', '.join(missing)} "
                      f"(set {setting} / [source] {kind}_id_column)")
    return name_table(table, id_column, name_column, f"{kind}_names"), ""


def shaped(inner: Select[Any], shape: Shape, names: Names, *, order: str = "month",
           limit: Any = None, offset: Any = None) -> Select[Any]:
    """The inner rows with names joined, in a total order, one page (``limit + 1`` rows) of them.

    Unless the order is by name, the page is cut inside the inner select, before the names are joined:
    the database then sorts the tier's rows alone (a top-N sort) and joins names to one page only,
    instead of sorting the whole joined result through a temporary table.
    """
    early = order != "name"
    if early:
        inner = _page(inner.order_by(*order_by(inner.selected_columns, shape, {}, order)), limit, offset)
    rows = inner.subquery("r")
    columns: list[ColumnElement[Any]] = []
    joined: FromClause = rows
    named: dict[str, ColumnElement[Any]] = {}
    for column in rows.c:
        columns.append(column)
        table = names.table_for(column.name)
        if table is not None:
            joined = joined.outerjoin(table, table.c.id == column)
            named[column.name] = case((column == names.unassigned, literal(UNASSIGNED_NAME, String)),
                                      else_=table.c.name)
            columns.append(named[column.name].label(NAMED[column.name]))
    statement = select(*columns).select_from(joined).order_by(*order_by(rows.c, shape, named, order))
    return statement if early else _page(statement, limit, offset)


def _page(statement: Select[Any], limit: Any, offset: Any) -> Select[Any]:
    """``LIMIT limit OFFSET offset``, each a bound parameter (the caller asks for one row past the page) or None."""
    if limit is not None:
        statement = statement.limit(limit)
    return statement.offset(offset) if offset is not None else statement


def order_by(columns: Any, shape: Shape, named: dict[str, ColumnElement[Any]],
             order: str) -> Sequence[ColumnElement[Any]]:
    """The requested order, then the month and the key: a total order (ties cannot swap between pages).

    ``columns`` are the inner select's (to cut the page early) or the wrapping subquery's, by name.
    """
    month = [columns["month"]] if "month" in columns else []
    key = [*month, *(columns[k] for k in shape.keys)]
    if order == "value_desc":
        return [columns[shape.value].desc(), *key]
    if order == "value_asc":
        return [columns[shape.value].asc(), *key]
    if order == "name":
        name = named.get(shape.name_of)
        nulls_last = [case((name.is_(None), 1), else_=0), name] if name is not None else []
        return [*nulls_last, columns[shape.name_of], *month, *(columns[k] for k in shape.keys if k != shape.name_of)]
    return key


CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"


@dataclass(frozen=True)
class Position:
    """Where the next page starts, at which data version, for which query: what an opaque cursor holds."""

    offset: int
    version: int
    fingerprint: str

    def encode(self) -> str:
        text = json.dumps([self.offset, self.version, self.fingerprint], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> Position:
        """ValueError unless ``text`` is a cursor :meth:`encode` made."""
        if not re.match(CURSOR_PATTERN, text):
            raise ValueError("not a cursor")
        try:
            offset, version, fingerprint = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("not a cursor") from None
        if not (isinstance(offset, int) and isinstance(version, int) and isinstance(fingerprint, str)) or offset < 0:
            raise ValueError("not a cursor")
        return cls(offset, version, fingerprint)


CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


def csv_body(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as CSV (RFC 4180 line ends) under a header line of ``columns``; null is an empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
    return out.getvalue().encode()
