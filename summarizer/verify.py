"""Compare every tier with totals recomputed from the raw table, per month and metric.

Totals are compared exactly (DECIMAL) on MySQL/MariaDB and PostgreSQL; SQLite sums REAL values, whose
last bits depend on the order of addition, so there a difference of 1e-9 of the sum of absolute
values (the scale rounding errors grow with) is tolerated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Select

from .dialects import Dialect
from .model import Tiers
from .rollup import Rollup

Totals = dict[tuple[dt.date, str], tuple[Any, int]]
REAL_TOLERANCE = 1e-9


@dataclass
class Mismatch:
    tier: str
    month: dt.date
    metric: str
    expected: tuple[Any, int] | None
    found: tuple[Any, int] | None

    def __str__(self) -> str:
        def show(pair: tuple[Any, int] | None) -> str:
            return "no rows" if pair is None else f"value {pair[0]}, rows {pair[1]}"
        return (f"{self.tier}: {self.month:%Y-%m} {self.metric}: "
                f"raw has {show(self.expected)}, tier has {show(self.found)}")


@dataclass
class VerifyReport:
    months: int = 0
    metrics: int = 0
    raw_rows: int = 0
    raw_total: Any = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    exact: bool = True

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "months": self.months, "metrics": self.metrics, "raw_rows": self.raw_rows,
                "raw_total": str(self.raw_total), "exact": self.exact,
                "mismatches": [str(m) for m in self.mismatches]}


def tier_queries(rollup: Rollup, tiers: Tiers, months: Sequence[dt.date] | None) -> dict[str, Select[Any]]:
    return {
        "tier 1 (asin)": rollup.tier_totals(tiers.asin, months),
        "tier 2 (brand, per marketplace)": rollup.tier_totals(tiers.brand, months, all_rows=False),
        "tier 2 (brand, ALL)": rollup.tier_totals(tiers.brand, months, all_rows=True),
        "tier 3 (category)": rollup.tier_totals(tiers.category, months),
    }


def _totals(conn: Connection, query: Select[Any]) -> Totals:
    return {(_date(m), str(metric)): (value, int(count or 0)) for m, metric, value, count, *_ in conn.execute(query)}


def _scales(conn: Connection, query: Select[Any]) -> dict[tuple[dt.date, str], float]:
    return {(_date(m), str(metric)): float(scale or 0) for m, metric, _v, _c, scale in conn.execute(query)}


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def _equal(a: Any, b: Any, scale: float | None) -> bool:
    """Exact when ``scale`` is None; else within REAL_TOLERANCE of ``scale``."""
    if scale is None:
        return Decimal(str(a)) == Decimal(str(b))
    return abs(float(a) - float(b)) <= REAL_TOLERANCE * max(1.0, scale)


def compare(tier: str, raw: Totals, found: Totals, scales: dict[tuple[dt.date, str], float] | None) -> list[Mismatch]:
    """Mismatches of ``found`` against ``raw``; ``scales`` (per key) makes the comparison approximate."""
    mismatches = []
    for key in sorted(raw.keys() | found.keys()):
        want, have = raw.get(key), found.get(key)
        scale = None if scales is None else scales.get(key, 0.0)
        if want is None or have is None or want[1] != have[1] or not _equal(want[0], have[0], scale):
            mismatches.append(Mismatch(tier, key[0], key[1], want, have))
    return mismatches


def _total(raw: Totals, exact: bool) -> Decimal | float:
    total = sum((Decimal(str(v)) for v, _ in raw.values()), Decimal(0))
    return total if exact else round(float(total), 4)


def verify(dialect: Dialect, rollup: Rollup, tiers: Tiers, months: Sequence[dt.date] | None) -> VerifyReport:
    exact = dialect.EXACT_DECIMAL
    with dialect.engine.connect() as conn:
        raw_query = rollup.raw_totals(months)
        raw = _totals(conn, raw_query)
        scales = None if exact else _scales(conn, raw_query)
        report = VerifyReport(months=len({m for m, _ in raw}), metrics=len({k for _, k in raw}),
                              raw_rows=sum(c for _, c in raw.values()),
                              raw_total=_total(raw, exact),
                              exact=exact)
        for tier, query in tier_queries(rollup, tiers, months).items():
            report.mismatches += compare(tier, raw, _totals(conn, query), scales)
    return report
