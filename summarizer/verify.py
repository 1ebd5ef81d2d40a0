"""Compare every tier with totals recomputed from the raw table, per month and metric.

Totals are compared exactly (DECIMAL) on MySQL/MariaDB and PostgreSQL; SQLite sums REAL values, whose
last bits depend on the order of addition, so there a difference of 1e-9 of the sum of absolute
values (the scale rounding errors grow with) is tolerated.

The report groups the mismatches by month (:class:`MonthReport`: the tiers and metrics affected, the
raw and each tier's totals of the month, the difference) and names the command that repairs them.
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
from .months import as_date
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

    def as_json(self) -> dict[str, Any]:
        raw, tier = self.expected or (None, 0), self.found or (None, 0)
        return {"tier": self.tier, "month": f"{self.month:%Y-%m}", "metric": self.metric,
                "raw_value": _text(raw[0]), "raw_rows": raw[1], "tier_value": _text(tier[0]), "tier_rows": tier[1]}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _sum(values: list[Any]) -> Decimal:
    return sum((Decimal(str(v)) for v in values if v is not None), Decimal(0))


@dataclass
class MonthReport:
    """One month that disagrees: which tiers and metrics, and the month's totals in the raw data and each tier."""

    month: dt.date
    tiers: list[str]
    metrics: list[str]
    raw: tuple[Decimal, int]
    found: dict[str, tuple[Decimal, int]]  # tier -> its total and rows over the month

    def differences(self) -> dict[str, tuple[Decimal, int]]:
        """tier -> (tier total - raw total, tier rows - raw rows) of the month."""
        return {tier: (value - self.raw[0], rows - self.raw[1]) for tier, (value, rows) in self.found.items()}

    def as_json(self) -> dict[str, Any]:
        return {"month": f"{self.month:%Y-%m}", "tiers": self.tiers, "metrics": self.metrics,
                "raw_total": str(self.raw[0]), "raw_rows": self.raw[1],
                "tier_totals": {t: {"total": str(v), "rows": n, "difference": str(d), "rows_difference": dn}
                                for (t, (v, n)), (d, dn) in zip(self.found.items(), self.differences().values(),
                                                                 strict=True)}}


@dataclass
class VerifyReport:
    months: int = 0
    metrics: int = 0
    raw_rows: int = 0
    raw_total: Any = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    exact: bool = True
    totals: dict[str, Totals] = field(default_factory=dict)  # "raw" and each tier -> its totals, for by_month()

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def by_month(self) -> list[MonthReport]:
        """The months that disagree, each once, in order."""
        months = sorted({m.month for m in self.mismatches})
        return [self._month(month) for month in months]

    def _month(self, month: dt.date) -> MonthReport:
        here = [m for m in self.mismatches if m.month == month]
        tiers = list(dict.fromkeys(m.tier for m in here))

        def total(totals: Totals) -> tuple[Decimal, int]:
            pairs = [pair for (m, _), pair in totals.items() if m == month]
            value = _sum([v for v, _ in pairs])  # REAL sums: to the 4 places the report's total shows
            return value if self.exact else value.quantize(Decimal("0.0001")), sum(n for _, n in pairs)
        return MonthReport(month, tiers, sorted({m.metric for m in here}), total(self.totals.get("raw", {})),
                           {tier: total(self.totals.get(tier, {})) for tier in tiers})

    def repair_months(self) -> str:
        """The --months value that refreshes every month that disagrees: ``2024-03,2024-07``."""
        return ",".join(f"{m.month:%Y-%m}" for m in self.by_month())

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "months": self.months, "metrics": self.metrics, "raw_rows": self.raw_rows,
                "raw_total": str(self.raw_total), "exact": self.exact,
                "months_disagreeing": [m.as_json() for m in self.by_month()],
                "repair": f"summarizer refresh --months {self.repair_months()}" if not self.ok else None,
                "mismatches": [m.as_json() for m in self.mismatches]}


def tier_queries(rollup: Rollup, tiers: Tiers, months: Sequence[dt.date] | None) -> dict[str, Select[Any]]:
    return {
        "tier 1 (asin)": rollup.tier_totals(tiers.asin, months),
        "tier 2 (brand, per marketplace)": rollup.tier_totals(tiers.brand, months, all_rows=False),
        "tier 2 (brand, ALL)": rollup.tier_totals(tiers.brand, months, all_rows=True),
        "tier 3 (category)": rollup.tier_totals(tiers.category, months),
    }


def _totals(conn: Connection, query: Select[Any]) -> Totals:
    return {(as_date(m), str(metric)): (value, int(count or 0)) for m, metric, value, count, *_ in conn.execute(query)}


def _scales(conn: Connection, query: Select[Any]) -> dict[tuple[dt.date, str], float]:
    return {(as_date(m), str(metric)): float(scale or 0) for m, metric, _v, _c, scale in conn.execute(query)}


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
                              exact=exact, totals={"raw": raw})
        for tier, query in tier_queries(rollup, tiers, months).items():
            report.totals[tier] = _totals(conn, query)
            report.mismatches += compare(tier, raw, report.totals[tier], scales)
    return report
