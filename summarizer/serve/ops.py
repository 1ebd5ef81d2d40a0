"""The operations page's reads: recent runs (``/api/runs``) and the unassigned share per tier (``/api/unassigned``).

They read only the run history and the summary tiers, following ``read.py``: parameters checked into a
:class:`BadParameter` (HTTP 400 naming the parameter), statements built by pure functions, run by the
:class:`~summarizer.serve.read.Reader` (its connection, error translation and cache). Runs are not cached: a
running refresh changes its row without changing the data version. The unassigned share scans the
tiers, so it is cached under the data version like every other answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, Table, case, func, literal_column, select, union_all

from ..model import Tiers
from ..runs import Run
from .read import BadParameter, Reader, echo, envelope

RUNS, UNASSIGNED = "runs", "unassigned"
DEFAULT_RUNS, MAX_RUNS = 30, 500
CHART_STEPS = ("tier1", "tier2", "tier3", "indexes", "swap")  # what the runs chart splits a duration into
ID_COLUMN = {"asin": "brand_id", "brand": "brand_id", "category": "category_id"}  # the id "unassigned" is about


# --- parameters -----------------------------------------------------------------------------------

def parse_limit(items: Iterable[tuple[str, str]]) -> int:
    """The ``limit`` of ``/api/runs`` (1..MAX_RUNS, default DEFAULT_RUNS); any other parameter is a 400."""
    allowed = f"1..{MAX_RUNS}"
    found: list[str] = []
    for name, value in items:
        if name != "limit":
            raise BadParameter(name, "unknown parameter", ["limit"])
        found.append(value.strip())
    if len(found) > 1:
        raise BadParameter("limit", "given more than once; give it once", allowed)
    if not found:
        return DEFAULT_RUNS
    text = found[0]
    # the length first: int() refuses numbers of thousands of digits, and no limit has more than a few
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_RUNS:
        raise BadParameter("limit", f"expected a whole number from 1 to {MAX_RUNS}, got {echo(text)}", allowed)
    return int(text)


def parse_none(items: Iterable[tuple[str, str]]) -> None:
    for name, _value in items:
        raise BadParameter(name, "unknown parameter", "none: this endpoint takes no parameters")


# --- statements (pure) ----------------------------------------------------------------------------

def recent_runs_select(runs: Table, limit: int) -> Select[Any]:
    """The newest ``limit`` runs, newest first (a walk back along the primary key)."""
    return select(runs).order_by(runs.c.id.desc()).limit(limit)


def unassigned_select(tiers: Tiers, unassigned_id: int, all_marketplace: str) -> Select[Any]:
    """Per tier: its rows, raw rows summed, and both for the unassigned id; one statement.

    The brand tier is read at the all-marketplaces rows only, which already total every marketplace.
    """
    parts = []
    for name, t in tiers.by_name().items():
        is_unassigned = t.c[ID_COLUMN[name]] == unassigned_id
        part = select(literal_column(f"'{name}'").label("tier"), func.count().label("rows"),
                      func.coalesce(func.sum(t.c.row_count), 0).label("raw_rows"),
                      func.coalesce(func.sum(case((is_unassigned, 1), else_=0)), 0).label("unassigned_rows"),
                      func.coalesce(func.sum(case((is_unassigned, t.c.row_count), else_=0)), 0)
                      .label("unassigned_raw_rows"))
        if name == "brand":
            part = part.where(t.c.marketplace == all_marketplace)
        parts.append(part)
    return union_all(*parts)  # type: ignore[return-value]


# --- values ---------------------------------------------------------------------------------------

def run_json(run: Run) -> dict[str, Any]:
    """A run as the operations page charts it: its step times, plus the rest of its duration as ``other``."""
    data = run.as_json()
    keys = ("id", "mode", "months", "status", "started_at", "finished_at", "duration_seconds", "rows",
            "steps", "plan", "error")
    found = {k: data[k] for k in keys}
    duration = run.duration()
    charted = sum(run.steps.get(step, 0.0) for step in CHART_STEPS)
    found["other_seconds"] = None if duration is None else round(max(duration - charted, 0.0), 3)
    return found


def unassigned_row(row: Any) -> dict[str, Any]:
    tier, rows, raw, unassigned, unassigned_raw = row
    raw, unassigned_raw = int(raw), int(unassigned_raw)
    return {"tier": tier, "id_column": ID_COLUMN[tier], "rows": int(rows), "unassigned_rows": int(unassigned),
            "raw_rows": raw, "unassigned_raw_rows": unassigned_raw,
            "share": round(unassigned_raw / raw, 6) if raw else None}


# --- reading ----------------------------------------------------------------------------------------

class OpsReader:
    """The two operations reads over a :class:`Reader` (its connection, its cache, its data version)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.unassigned_id: int = reader.summarizer.schema.unassigned

    def runs(self, items: Iterable[tuple[str, str]]) -> bytes:
        limit = parse_limit(items)
        rows = self.reader._rows(recent_runs_select(self.reader.runs, limit))
        meta = {"endpoint": RUNS, "params": {"limit": limit}, "data_version": self.reader.version(),
                "steps": list(CHART_STEPS)}
        return envelope([run_json(Run.from_row(r)) for r in rows], meta)

    def unassigned(self, items: Iterable[tuple[str, str]]) -> tuple[bytes, str, int]:
        """The body, how the cache served it, and the data version."""
        parse_none(items)
        version = self.reader.version()
        key = f"{UNASSIGNED}?@{version}"
        body, how = self.reader.cache.get(key)
        if body is None:
            statement = unassigned_select(self.reader.tiers, self.unassigned_id, self.reader.all_marketplace)
            data = [unassigned_row(r) for r in self.reader._rows(statement)]
            meta = {"endpoint": UNASSIGNED, "params": {}, "data_version": version,
                    "unassigned_id": self.unassigned_id}
            body = envelope(data, meta)
            self.reader.cache.put(key, body)
        return body, how, version
