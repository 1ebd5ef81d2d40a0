"""Render the DDL and refresh SQL as files a DBA can read or run by hand (``sql/<dialect>/``).

The files are generated from the same builders the refresh runs, with the default configuration;
``tests/test_generated_files.py`` fails when they drift from the code. Regenerate with::

    python -m summarizer.render sql

It also writes ``config.ini.example`` (every setting, from ``config.SETTINGS``) beside ``sql/``, and
the cron and systemd files (``units.py``) into ``scripts/`` beside it. ``summarizer sql`` prints the
same SQL rendered for the user's own configuration, from an installed package.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, create_mock_engine, literal_column
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import ColumnElement

from . import __version__, version
from .config import Config, example_ini, load_config
from .ddl import ddl, render_all, sorted_indexes
from .dialects import DIALECTS, Dialect
from .model import OLD_SUFFIX, SHADOW_SUFFIX, Schema, source_from_config
from .rollup import Rollup
from .units import Paths, files

RENDERED = {"mysql": "mysql+pymysql://", "postgresql": "postgresql+psycopg://"}
HEADER = "-- Rendered by summarizer from its code with the default configuration; do not edit.\n" \
         "-- Regenerate with: python -m summarizer.render sql\n"
FILES = ("schema.sql", "refresh_full.sql", "refresh_month.sql", "verify.sql")


def _dialect(name: str) -> Dialect:
    # a mock engine compiles for its dialect and never connects: enough to render statements
    engine = create_mock_engine(RENDERED[name], lambda *_a, **_k: None)
    return DIALECTS[name](cast(Engine, engine))


def _sql(dialect: Dialect, statement: ClauseElement | str) -> str:
    text = statement if isinstance(statement, str) else dialect.render(statement)
    return text.strip() + ";"


def schema_file(dialect: Dialect, schema: Schema) -> str:
    body = "\n\n".join(f"{s};" for s in render_all(dialect.engine.dialect, schema))
    seed = _sql(dialect, version.seed(schema.data_version(), 1))
    return (f"{HEADER}-- The summary tiers, the run history and the data version (what `summarizer init` creates).\n\n"
            f"{body}\n\n-- the data version's one row, written once (init starts it at the time in milliseconds)\n"
            f"{seed}\n")


def full_refresh_file(dialect: Dialect, schema: Schema, rollup: Rollup) -> str:
    live, shadow = schema.live(), schema.tiers(SHADOW_SUFFIX)
    versions = schema.data_version(), schema.data_version(SHADOW_SUFFIX)
    stamp: ColumnElement[Any] = literal_column(dialect.UTC_NOW)
    t1, t2, t3 = shadow
    sa = dialect.engine.dialect
    statements: list[ClauseElement | str] = [
        *(dialect.drop_table_if_exists(t.name + suffix) for t in [*live, versions[0]]
          for suffix in (SHADOW_SUFFIX, OLD_SUFFIX)),
        *(ddl(CreateTable(t), sa) for t in [*shadow, versions[1]]),
        version.successor(versions[1], versions[0]),
        rollup.tier1_insert(t1, stamp, by_month=False),
        *rollup.tier2_inserts(t2, t1, stamp, by_month=False),
        rollup.tier3_insert(t3, t2, stamp, by_month=False),
        *(ddl(CreateIndex(i), sa) for t in shadow for i in sorted_indexes(t)),
        *dialect.statistics_statements(shadow.read_by_dashboards()),
    ]
    phases = dialect.swap_phases([*zip(live, shadow, strict=True), versions], 3)
    swap = [("BEGIN;\n" if dialect.TRANSACTIONAL_DDL else "") + "\n".join(_sql(dialect, s) for s in phase)
            + ("\nCOMMIT;" if dialect.TRANSACTIONAL_DDL else "") for phase in phases]
    return (f"{HEADER}-- A full refresh by hand: build the tiers beside the live ones, then swap them in at once.\n"
            "-- (summarizer itself reads the raw table in month chunks where the covering index exists,\n"
            "-- retries transient errors, takes the run lock and records the run.)\n\n"
            + "\n\n".join(_sql(dialect, s) for s in statements) + "\n\n-- the swap\n" + "\n\n".join(swap) + "\n")


def month_refresh_file(dialect: Dialect, schema: Schema, rollup: Rollup) -> str:
    statements = [*rollup.month_statements(list(schema.live()), literal_column(dialect.UTC_NOW)),
                  version.bump(schema.data_version())]
    body = "\n\n".join(_sql(dialect, s) for s in statements)
    return (f"{HEADER}-- Refresh one month in every tier, in one transaction (delete + insert, and the data version\n"
            "-- moved on with them, so the read API's cache lets go of the month's old numbers).\n\n"
            f"{dialect.SCRIPT_PREAMBLE}\n\nBEGIN;\n\n{body}\n\nCOMMIT;\n")


def verify_file(dialect: Dialect, schema: Schema, rollup: Rollup) -> str:
    live = schema.live()
    queries = {"raw: SUM(value), COUNT(*), SUM(ABS(value)) per month and metric": rollup.raw_totals(None),
               "tier 1": rollup.tier_totals(live.asin, None),
               "tier 2, per marketplace": rollup.tier_totals(live.brand, None, all_rows=False),
               "tier 2, ALL rows": rollup.tier_totals(live.brand, None, all_rows=True),
               "tier 3": rollup.tier_totals(live.category, None)}
    body = "\n\n".join(f"-- {title}\n{_sql(dialect, q)}" for title, q in queries.items())
    return f"{HEADER}-- What `summarizer verify` compares: each tier's totals must equal the raw ones.\n\n{body}\n"


def default_config() -> Config:
    return load_config(Path("/nonexistent/summarizer.ini"), {})


def render(name: str, config: Config | None = None) -> dict[str, str]:
    """File name -> content, for one dialect (``config``: the user's; default: the defaults)."""
    header = HEADER if config is None else (
        f"-- Rendered by summarizer {__version__} for the configuration {config.path} "
        "(and the SUMMARIZER_* environment).\n")
    config = config or default_config()
    dialect = _dialect(name)
    schema, source = Schema(config), source_from_config(config)
    rollup = Rollup(source, schema, month=literal_column(dialect.SCRIPT_MONTH))
    rendered = {"schema.sql": schema_file(dialect, schema),
                "refresh_full.sql": full_refresh_file(dialect, schema, rollup),
                "refresh_month.sql": month_refresh_file(dialect, schema, rollup),
                "verify.sql": verify_file(dialect, schema, rollup)}
    return {file: content.replace(HEADER, header, 1) for file, content in rendered.items()}


def write(root: Path) -> list[Path]:
    """Write ``sql/<dialect>/*.sql`` under ``root``, ``config.ini.example`` and ``scripts/`` beside it."""
    example = root.parent / "config.ini.example"
    example.write_text(example_ini(), encoding="utf-8")
    written = [example]
    for name in RENDERED:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for file, content in render(name).items():
            (folder / file).write_text(content, encoding="utf-8")
            written.append(folder / file)
    scripts = root.parent / "scripts"
    for file, content in files(default_config(), Paths()).items():
        (scripts / file).write_text(content, encoding="utf-8")
        written.append(scripts / file)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m summarizer.render",
        description="Write the files generated from the code into a checkout: SQL_DIR/<dialect>/*.sql, and "
                    "config.ini.example and scripts/ (cron, systemd) beside SQL_DIR.")
    parser.add_argument("sql_dir", nargs="?", default="sql", metavar="SQL_DIR", help="default: sql")
    root = Path(parser.parse_args(argv).sql_dir)
    if not (root.parent / "pyproject.toml").is_file():
        parser.error(f"{root.resolve().parent} is not a summarizer checkout (no pyproject.toml): nothing written")
    for path in write(root):
        print(path)


if __name__ == "__main__":
    main()
