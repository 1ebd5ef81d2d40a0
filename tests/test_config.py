"""Configuration: defaults, file, environment, validation with messages naming file, section and key."""

from __future__ import annotations

import pytest

from summarizer.config import SETTINGS, load_config, parse_duration
from summarizer.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "config.ini"
    path.write_text(text)
    return path


def test_defaults_are_the_spec_names(tmp_path):
    config = load_config(tmp_path / "absent.ini", {})
    assert config.source.financials_table == "financials"
    assert config.summary.asin_table == "financials_summary_monthly_asin_marketplace"
    assert config.summary.brand_table == "financials_summary_monthly_brand"
    assert config.summary.category_table == "financials_summary_monthly_category"
    assert config.summary.all_marketplace == "ALL" and config.summary.unassigned_id == 0


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "[database]\nurl = sqlite:///from-file.db\n[refresh]\njobs = 2\n")
    config = load_config(path, {"SUMMARIZER_DATABASE_URL": "sqlite:///from-env.db", "SUMMARIZER_REFRESH_JOBS": "3"})
    assert str(config.database_url()) == "sqlite:///from-env.db"
    assert config.refresh.jobs == 3


def test_url_from_fields(tmp_path):
    path = write(tmp_path, "[database]\nhost = db.local\nport = 3307\nuser = app\ndatabase = shop\n")
    config = load_config(path, {"SUMMARIZER_DATABASE_PASSWORD": "s3cret"})
    url = config.database_url()
    assert (url.drivername, url.host, url.port, url.username, url.password, url.database) == (
        "mysql+pymysql", "db.local", 3307, "app", "s3cret", "shop")


@pytest.mark.parametrize("text, section, key, expected", [
    ("[source]\nfinancials_table = fin; DROP TABLE x\n", "source", "financials_table", "plain SQL identifier"),
    ("[refresh]\nretry_attempts = many\n", "refresh", "retry_attempts", "whole number"),
    ("[refresh]\njobs = 0\n", "refresh", "jobs", "from 1 to 64"),
    ("[refresh]\nretry_budget_seconds = -1\n", "refresh", "retry_budget_seconds", "from 0 to 86400"),
    ("[api]\nmax_age = soon\n", "api", "max_age", "duration"),
    ("[api]\nthreads = 0\n", "api", "threads", "from 1 to 256"),
    ("[database]\nurl = not a url\n", "database", "url", "SQLAlchemy URL"),
    ("[summary]\nvalue_scale = 40\n", "summary", "value_scale", "from 0 to 30"),
    ("[refresh]\nspeed = fast\n", "refresh", "speed", "allowed keys"),
    ("[nonsense]\nx = 1\n", "nonsense", "x", "unknown section"),
])
def test_a_bad_setting_names_file_section_and_key(tmp_path, text, section, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert str(path) in message and f"[{section}]" in message and f"'{key}'" in message and expected in message
    assert caught.value.exit_code == 2


def test_a_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="SUMMARIZER_REFRESH_JOBS.*whole number"):
        load_config(tmp_path / "absent.ini", {"SUMMARIZER_REFRESH_JOBS": "two"})


def test_not_an_ini_file(tmp_path):
    path = write(tmp_path, "this is not ini\n")
    with pytest.raises(ConfigError, match="not a valid INI file"):
        load_config(path, {})


def test_a_required_file_that_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.ini", {}, required=True)


def test_no_database_configured(tmp_path):
    with pytest.raises(ConfigError, match="no database configured.*SUMMARIZER_DATABASE_URL"):
        load_config(tmp_path / "absent.ini", {}).database_url()


def test_every_setting_has_help_and_a_valid_default(tmp_path):
    assert all(s.help for s in SETTINGS)
    load_config(tmp_path / "absent.ini", {})  # every default parses


def test_durations():
    assert parse_duration("26h") == 93600 and parse_duration("90") == 90 and parse_duration("2d") == 172800
    with pytest.raises(ValueError):
        parse_duration("1 week")
