"""Text renderings of runs, status and verify reports for the terminal, and the progress bar."""

from __future__ import annotations

import sys
from typing import Any

import click

from .facade import FollowStatus, Status
from .runs import Run
from .text import duration
from .verify import MonthReport, VerifyReport


def run_line(run: Run) -> str:
    rows = "/".join("-" if n is None else str(n) for n in run.rows.values())
    months = f" [{run.months}]" if run.months else ""
    error = f"  error: {run.error}" if run.error else ""
    steps = step_times(run)
    return (f"#{run.id:<5} {run.status:<11} {run.mode:<8} {run.started_at:%Y-%m-%d %H:%M:%S}  "
            f"{duration(run.duration()):>7}  rows {rows}{months}  {run.host}:{run.pid} v{run.version}{error}"
            + (f"\n         steps: {steps}" if steps else ""))


def step_times(run: Run) -> str:
    return ", ".join(f"{name} {duration(sec)}" for name, sec in run.steps.items() if name != "total")


def run_summary(run: Run) -> str:
    steps = step_times(run)
    rows = ", ".join(f"{tier} {n}" for tier, n in run.rows.items())
    return f"run {run.id} {run.status} in {duration(run.duration())}: {rows}\nsteps: {steps}" + (
        f"\nplan: {run.plan}" if run.plan else "")


def status_text(status: Status) -> str:
    last = status.last_success
    lines = [f"last success: run {last.id} finished {last.finished_at:%Y-%m-%d %H:%M:%S} UTC, "
             f"{duration(status.age_seconds)} ago" if last and last.finished_at else "last success: never"]
    lines.append("rows: " + ", ".join(f"{tier} {n}" for tier, n in status.rows.items()))
    if status.months:
        lines.append(f"months: {len(status.months)} ({status.months[0]} .. {status.months[-1]})")
    shares = {k: v for k, v in status.unassigned.items() if v is not None}
    if shares:
        lines.append("unassigned: " + ", ".join(f"{k.replace('_', ' ')} {v:.2%}" for k, v in shares.items()))
    if status.follow is not None:
        lines.append(follow_line(status.follow))
    lines.append("recent runs:")
    lines += [f"  {run_line(r)}" for r in status.runs] or ["  none"]
    return "\n".join(lines)


def follow_line(follow: FollowStatus) -> str:
    """The follower in one line (and its last error on a second)."""
    lag = f"lag {follow.lag_seconds:.1f}s" if follow.lag_seconds is not None else "lag -"
    waiting = f", {follow.waiting} bytes waiting" if follow.waiting is not None else ""
    applied = f"{follow.applied_at:%Y-%m-%d %H:%M:%S} UTC" if follow.applied_at else "never"
    line = (f"follow: at {follow.position}, last batch {applied}, {lag}{waiting}, "
            f"{follow.rate or 0:g} changes/s; {follow.changes} changes in {follow.batches} batches since the handover")
    return line + (f"\n  follow error ({follow.error_at:%Y-%m-%d %H:%M:%S} UTC): {follow.error}"
                   if follow.error and follow.error_at else "")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def verify_text(report: VerifyReport, command: str = "summarizer") -> str:
    """One line per month that disagrees, then the command that repairs them (``command``: how to call us)."""
    head = (f"verified {plural(report.months, 'month')} x {plural(report.metrics, 'metric')}, "
            f"{plural(report.raw_rows, 'raw row')}, total {report.raw_total}"
            + ("" if report.exact else " (REAL values: compared to 1e-9)"))
    if report.ok:
        return f"{head}: every tier matches the raw data"
    months = report.by_month()
    verb = "disagrees" if len(months) == 1 else "disagree"
    lines = [f"{head}: {plural(len(months), 'month')} {verb} with the raw data "
             f"({plural(len(report.mismatches), 'tier x month x metric total')} differ)"]
    lines += [f"  {month_line(m)}" for m in months]
    lines.append(f"repair: {command} refresh --months {report.repair_months()}   (then verify again)")
    return "\n".join(lines)


def month_line(month: MonthReport) -> str:
    tiers = "; ".join(f"{tier} {value} in {rows} rows (difference {dv:+}, {dn:+} rows)"
                      for (tier, (value, rows)), (dv, dn) in zip(month.found.items(), month.differences().values(),
                                                                 strict=True))
    return (f"{month.month:%Y-%m}: raw {month.raw[0]} in {month.raw[1]} rows; {tiers}; "
            f"metrics {', '.join(month.metrics)}")


class BarProgress:
    """A progress bar on a terminal (click), one per phase."""

    def __init__(self) -> None:
        self.bar: Any = None

    def begin(self, label: str, total: int) -> None:
        self.bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                                     item_show_func=lambda item: item)
        self.bar.__enter__()

    def advance(self, detail: str) -> None:
        self.bar.update(1, detail)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
