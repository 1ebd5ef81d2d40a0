"""The files generated from the code (sql/, config.ini.example, docs/ references) must not drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from summarizer.config import SETTINGS, example_ini
from summarizer.reference import cli_reference, config_reference, render_docs
from summarizer.render import RENDERED, default_config, render
from summarizer.units import Paths, files

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("dialect", sorted(RENDERED))
def test_sql_files_match_the_code(dialect):
    for name, content in render(dialect).items():
        path = ROOT / "sql" / dialect / name
        assert path.exists(), f"{path} is missing: run python -m summarizer.render sql"
        assert path.read_text(encoding="utf-8") == content, f"{path} drifted: run python -m summarizer.render sql"


def test_scripts_match_the_package():
    """scripts/ holds what `summarizer schedule --print-cron/--print-systemd` print, with the default paths."""
    for name, content in files(default_config(), Paths()).items():
        path = ROOT / "scripts" / name
        assert path.read_text(encoding="utf-8") == content, f"{path} drifted: run python -m summarizer.render sql"


def test_config_example_matches_the_settings():
    assert (ROOT / "config.ini.example").read_text(encoding="utf-8") == example_ini()


@pytest.mark.parametrize("name", sorted(render_docs()))
def test_reference_docs_match_the_code(name):
    path = ROOT / "docs" / name
    assert path.exists(), f"{path} is missing: run python -m summarizer.reference docs"
    assert path.read_text(encoding="utf-8") == render_docs()[name], \
        f"{path} drifted: run python -m summarizer.reference docs"


def test_every_setting_is_in_the_configuration_reference():
    reference = config_reference()
    missing = [f"[{s.section}] {s.key}" for s in SETTINGS if f"| `{s.key}` |" not in reference]
    assert not missing, f"docs/configuration.md does not list: {missing}"


def test_every_command_has_help_and_is_in_the_cli_reference():
    from summarizer.cli import cli

    reference = cli_reference()
    for name, command in cli.commands.items():
        assert (command.help or "").strip(), f"summarizer {name} has no help text"
        assert f"## summarizer {name}\n" in reference


def test_the_readme_stays_short_and_reaches_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) < 10 * 1024, "README.md is over 10 KB: move the detail to docs/"
    unlinked = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"README.md does not link to: {unlinked}"


def test_the_repository_stands_alone():
    """Code and docs cite only what is in the repository."""
    texts = [*(ROOT / "summarizer").rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    citing = [str(p.relative_to(ROOT)) for p in texts
              if any(word in p.read_text(encoding="utf-8") for word in ("SPEC section", "SPEC.md", "../shared"))]
    assert not citing, f"these cite files outside the repository: {citing}"


def test_the_mysql_month_script_runs_by_hand(mysql_url, app_factory):
    """sql/mysql/refresh_month.sql, run as a DBA would, gives the tiers summarizer gives."""
    from .oracle import actual_tiers, assert_tiers_equal, expected_tiers, load, random_dataset

    app = app_factory(mysql_url)
    data = random_dataset(seed=4)
    load(app.dialect.engine, data)
    app.init()
    script = (ROOT / "sql" / "mysql" / "refresh_month.sql").read_text(encoding="utf-8")
    raw = app.dialect.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for month in data.months:
            for statement in _statements(script.replace("'2024-01-01'", f"'{month:%Y-%m-%d}'")):
                cursor.execute(statement)
        raw.commit()
    finally:
        raw.close()
    assert_tiers_equal(expected_tiers(data), actual_tiers(app.dialect.engine, app.schema.live().by_name()), exact=True)


def _statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.startswith("--")]
    return [s.split("--")[0].strip() for s in "\n".join(lines).split(";") if s.split("--")[0].strip()]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv .venv"))
    assert f"\n{command}\n" in readme
    assert "'.[all,spark,spark-connect,test]'" in command, "the test command installs the runtime and test extras"
    assert "SUMMARIZER_TEST_MYSQL_URL" in ci and "SUMMARIZER_TEST_POSTGRES_URL" in ci
