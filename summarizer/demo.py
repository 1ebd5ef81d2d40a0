"""``summarizer demo``: the embedded default, with no server and no config file.

Creates a SQLite database of synthetic data shaped like the case in docs/design.md (skewed ASINs, several
marketplaces, refunds, unassigned ASINs, brands and categories), then runs init, refresh and verify
through the same library calls as the commands, and prints what it built.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, desc, func, select

from .config import load_config
from .errors import VerifyMismatch
from .facade import Summarizer
from .synth import Shape, generate
from .terminal import verify_text
from .text import duration


def build_database(path: Path, rows: int) -> dict[str, int]:
    """A fresh SQLite file holding the synthetic source tables."""
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")  # readers keep reading during a refresh
            return generate(conn, Shape(rows=rows))
    finally:
        engine.dispose()


def top_brands(app: Summarizer, limit: int = 5) -> list[tuple[int, str | None, object]]:
    """Brands by revenue over all months, from tier 2's ALL rows, with names from the brands table."""
    brand = app.schema.live().brand
    s = app.source
    names = s.brands
    revenue = func.sum(brand.c.value).label("revenue")
    query = (select(brand.c.brand_id, names.c[s.brand_name.name], revenue)
             .select_from(brand.outerjoin(names, names.c[s.brand_id.name] == brand.c.brand_id))
             .where(brand.c.marketplace == app.schema.all_marketplace, brand.c.metric == "revenue")
             .group_by(brand.c.brand_id, names.c[s.brand_name.name]).order_by(desc(revenue)).limit(limit))
    with app.dialect.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def run_demo(path: Path, rows: int, echo: Callable[[str], None]) -> Summarizer:
    started = time.perf_counter()
    counts = build_database(path, rows)
    echo(f"demo database {path.resolve()}: " + ", ".join(f"{table} {n}" for table, n in counts.items())
         + f" rows ({duration(time.perf_counter() - started)})")
    app = Summarizer(load_config(None, {"SUMMARIZER_DATABASE_URL": f"sqlite:///{path}"}))
    plan = app.init(source_indexes=True)
    echo(f"init: {len(plan.statements) + len(plan.online)} statements (tables, indexes, the raw-table index)")
    run = app.refresh()
    echo(f"refresh: run {run.id} {run.status} in {duration(run.duration())}; "
         + ", ".join(f"tier {tier} {n} rows" for tier, n in run.rows.items()))
    report = app.verify()
    echo(verify_text(report))
    if not report.ok:
        raise VerifyMismatch("the demo's tiers do not match its raw data")
    echo("top brands by revenue (all marketplaces, all months):")
    for brand_id, name, revenue in top_brands(app):
        echo(f"  {brand_id:>6}  {name or '(unassigned)':<24} {float(revenue):>18,.2f}")  # type: ignore[arg-type]
    echo(f"\ndemo done in {duration(time.perf_counter() - started)}")
    echo(next_steps(path.resolve(), command()))
    return app


def command() -> str:
    """How to call summarizer from here: the console script beside this Python (a venv need not be active)."""
    script = Path(sys.executable).parent / "summarizer"
    return shlex.quote(str(script)) if script.exists() else f"{shlex.quote(sys.executable)} -m summarizer"


def next_steps(path: Path, summarizer: str) -> str:
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    url = "SUMMARIZER_DATABASE_URL=" + shlex.quote(f"sqlite:///{path}")
    return (f"the demo database is {path} ({size / 1e6:.0f} MB); remove it with: rm {shlex.quote(str(path))}*\n"
            f"status:\n  {url} {summarizer} status\n"
            f"serve it (with the api extra, pip install 'summarizer-tiers[api]'):\n  {url} {summarizer} serve")
