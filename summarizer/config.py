"""Settings: defaults with help text, read from ``config.ini`` and the environment, validated on load.

Every setting is one :class:`Setting` entry in :data:`SETTINGS` (section, key, default, kind, help).
``config.ini.example`` and the README's table are checked against this list by the tests.

The environment overrides the file: ``SUMMARIZER_<SECTION>_<KEY>`` (for example
``SUMMARIZER_DATABASE_URL``), so passwords need not live in files. A ``SUMMARIZER_*`` variable that
names no setting is logged as a warning (with the closest setting's name): a misspelled one would
otherwise be ignored without a word.

The file: ``--config PATH``, else ``$SUMMARIZER_CONFIG``, else ``./config.ini`` (:func:`config_location`);
a file named by the first two must exist, the last may be missing.
"""

from __future__ import annotations

import configparser
import contextlib
import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .secrets import redact_url, remember, remember_connection, remember_password

ENV_PREFIX = "SUMMARIZER_"
CONFIG_ENV = "SUMMARIZER_CONFIG"
TEST_PREFIX = "SUMMARIZER_TEST_"  # the test suite's server URLs
log = logging.getLogger(__name__)
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
METRIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a metric name a wide source's measures give
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
BACKENDS = ("mysql", "mariadb", "postgresql", "sqlite")
DEFAULT_DRIVERS = {"mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql", "postgresql": "postgresql+psycopg"}


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: str
    kind: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("database", "url", "", "url",
            "SQLAlchemy URL: mysql+pymysql://user:pw@host/db, postgresql+psycopg://..., sqlite:///file.db"),
    Setting("database", "driver", "mysql+pymysql", "str", "driver used when the URL is built from fields"),
    Setting("database", "host", "", "str", "host, when no url is given"),
    Setting("database", "port", "", "str", "port, when no url is given"),
    Setting("database", "user", "", "str", "user, when no url is given"),
    Setting("database", "password", "", "str", "password, when no url is given (prefer the environment)"),
    Setting("database", "database", "", "str", "database name, when no url is given"),
    Setting("source", "financials_table", "financials", "identifier", "raw fact table"),
    Setting("source", "products_table", "products", "identifier", "ASIN -> brand table"),
    Setting("source", "brands_table", "brands", "identifier", "brand -> category table"),
    Setting("source", "categories_table", "categories", "identifier", "category names"),
    Setting("source", "asin_column", "asin", "identifier", "ASIN column of the raw table"),
    Setting("source", "marketplace_column", "marketplace", "identifier", "marketplace column of the raw table"),
    Setting("source", "month_column", "month", "identifier",
            "DATE column holding the first day of the month (not read when date_column is set)"),
    Setting("source", "date_column", "", "optional_identifier",
            "DATE, DATETIME or TIMESTAMP column a row's month is taken from (the first day of its month, in the "
            "database's time zone); empty: month_column holds first days"),
    Setting("source", "metric_column", "metric", "identifier",
            "metric name column of the raw table (long form; not read when measures is set)"),
    Setting("source", "value_column", "value", "identifier",
            "DECIMAL value column of the raw table (long form; not read when measures is set)"),
    Setting("source", "measures", "", "measures",
            "wide raw table: metric:column pairs, e.g. revenue:net_amount, units:quantity; each raw row gives one "
            "value per measure (a NULL gives none); empty: long form, one metric_column/value_column pair per row"),
    Setting("source", "updated_at_column", "", "optional_identifier",
            "raw column holding the last change time (needed by refresh --changed); empty: none"),
    Setting("source", "product_asin_column", "asin", "identifier", "ASIN column of the products table"),
    Setting("source", "product_brand_column", "brand_id", "identifier", "brand column of the products table"),
    Setting("source", "brand_id_column", "brand_id", "identifier", "key column of the brands table"),
    Setting("source", "brand_category_column", "category_id", "identifier", "category column of the brands table"),
    Setting("source", "brand_name_column", "name", "identifier",
            "name column of the brands table (the API's brand_name; left out if missing)"),
    Setting("source", "category_id_column", "category_id", "identifier", "key column of the categories table"),
    Setting("source", "category_name_column", "name", "identifier",
            "name column of the categories table (the API's category_name; left out if missing)"),
    Setting("summary", "asin_table", "financials_summary_monthly_asin_marketplace", "identifier",
            "tier 1: one row per asin, marketplace, month, metric"),
    Setting("summary", "brand_table", "financials_summary_monthly_brand", "identifier",
            "tier 2: one row per brand, marketplace (and ALL), month, metric"),
    Setting("summary", "category_table", "financials_summary_monthly_category", "identifier",
            "tier 3: one row per category, month, metric"),
    Setting("summary", "runs_table", "summarizer_runs", "identifier", "run history"),
    Setting("summary", "data_version_table", "summarizer_data_version", "identifier",
            "data version: one row, changed with every change to the tiers (the read API's cache key)"),
    Setting("summary", "all_marketplace", "ALL", "str", "marketplace value of the all-marketplaces rows"),
    Setting("summary", "unassigned_id", "0", "int", "brand/category id for rows without one"),
    Setting("summary", "value_precision", "38", "int", "DECIMAL precision of summary values"),
    Setting("summary", "value_scale", "4", "int", "DECIMAL scale of summary values (at least the raw scale)"),
    Setting("summary", "asin_length", "64", "int", "VARCHAR length of the asin column in the summaries"),
    Setting("summary", "marketplace_length", "32", "int", "VARCHAR length of the marketplace column"),
    Setting("summary", "metric_length", "64", "int", "VARCHAR length of the metric column"),
    Setting("summary", "follow_table_prefix", "summarizer_follow", "identifier",
            "the follower's tables: <prefix>_state (its stream position) and <prefix>_products, _brands, "
            "_categories (the mapping as of that position)"),
    Setting("refresh", "lock_name", "summarizer_refresh", "identifier", "name of the run lock"),
    Setting("refresh", "retry_attempts", "5", "int",
            "attempts per step for transient errors the database reports (deadlock, lock wait timeout)"),
    Setting("refresh", "retry_initial_wait", "0.5", "float", "first backoff wait in seconds (doubles, with jitter)"),
    Setting("refresh", "retry_max_wait", "30", "float", "longest backoff wait in seconds"),
    Setting("refresh", "retry_budget_seconds", "60", "float",
            "seconds a step keeps retrying while the database cannot be reached (a restart), however many attempts"),
    Setting("refresh", "swap_lock_timeout", "3", "int", "seconds the swap waits for metadata locks per try"),
    Setting("refresh", "swap_attempts", "20", "int", "tries of the swap before the refresh fails"),
    Setting("refresh", "jobs", "1", "int",
            "months refreshed at once, one connection each (full and incremental refreshes)"),
    Setting("refresh", "tmp_table_size", "67108864", "int",
            "MySQL session tmp_table_size/max_heap_table_size for the refresh (bytes; 0 = server default)"),
    Setting("refresh", "work_mem", "67108864", "int",
            "PostgreSQL work_mem of the refresh's transactions (bytes, at least 65536; 0 = server default): the "
            "memory each sort or hash of a full refresh's statements takes before it spills to disk"),
    Setting("refresh", "engine", "database", "str",
            "what computes a refresh: database (INSERT ... SELECT in the database) or spark (Apache Spark, "
            "needs summarizer-tiers[spark])"),
    Setting("schedule", "full", "0 3 * * *", "str",
            "crontab(5) expression of the full refresh (0/7 = Sunday; a sixth leading field = seconds); empty: none"),
    Setting("schedule", "changed", "", "str", "cron expression of the --changed refresh; empty: none"),
    Setting("schedule", "timezone", "UTC", "str", "time zone the cron expressions are read in"),
    Setting("schedule", "misfire_grace", "3600", "int", "seconds a missed run may still start late"),
    Setting("api", "host", "127.0.0.1", "str", "address the read API listens on"),
    Setting("api", "port", "8000", "int", "port the read API listens on"),
    Setting("api", "max_age", "26h", "duration", "health is 503 when the last success is older"),
    Setting("api", "max_months", "120", "int", "longest month range one request may ask for"),
    Setting("api", "revenue_metrics", "revenue", "list", "metrics summed as revenue by profitability"),
    Setting("api", "cost_metrics", "cogs,fees,ad_spend,shipping", "list", "metrics subtracted as cost"),
    Setting("api", "max_limit", "10000", "int",
            "most rows one answer may hold: the largest limit a request may give (the default limit is 1000)"),
    Setting("api", "threads", "8", "int",
            "requests the API answers at once (worker threads), and the database connections it keeps for them"),
    Setting("api", "redis_url", "", "str", "Redis URL for the response cache; empty: in-process cache"),
    Setting("api", "cache_bytes", "67108864", "int",
            "bytes of response bodies the in-process cache keeps (64 MiB; 0: none); a larger body is not cached"),
    Setting("follow", "enabled", "false", "bool",
            "keep the tiers exact from the database's change stream (summarizer follow): init creates the "
            "follower's tables, a full refresh hands its stream position over, --months/--changed are refused"),
    Setting("follow", "batch_changes", "5000", "int",
            "row changes the follower applies in one transaction at most"),
    Setting("follow", "batch_seconds", "0.5", "float",
            "longest a batch collects changes before it is applied (the lag added while changes keep coming)"),
    Setting("follow", "idle_seconds", "0.2", "float",
            "a batch is applied once the stream has been quiet this long"),
    Setting("follow", "server_id", "0", "int",
            "MariaDB/MySQL: the replica server id the follower reads the binary log as (0: derived from the "
            "database name); it must differ from every real replica's"),
    Setting("follow", "refresh_wait", "60", "float",
            "seconds a full refresh waits for the run lock while the follower applies a batch"),
    Setting("follow", "slot_prefix", "summarizer_follow", "identifier",
            "PostgreSQL: the follower's replication slots are <prefix>_<8 hex digits> (lower case, at most 54 "
            "characters); slots of this form in the database are the follower's own, and it drops superseded ones"),
    Setting("follow", "publication", "summarizer_follow", "identifier",
            "PostgreSQL: the publication of the source tables the follower reads (follow --check says how to "
            "create it; lower case, at most 54 characters)"),
    Setting("spark", "master", "local[*]", "str",
            "Spark master for engine = spark: local[*], spark://host:7077, yarn, or a Spark Connect sc://host:15002"),
    Setting("spark", "jars", "/usr/share/java/mariadb-java-client.jar,/usr/share/java/postgresql.jar", "list",
            "JDBC driver jars given to Spark (Debian: libmariadb-java, libpostgresql-jdbc-java)"),
    Setting("spark", "source", "jdbc", "str",
            "where Spark reads the source rows: jdbc (the database, one partition per month) or parquet"),
    Setting("spark", "parquet_path", "", "str",
            "source = parquet: directory holding <financials_table>/<month_column>=YYYY-MM-01/, "
            "<products_table>/ and <brands_table>/"),
    Setting("spark", "fetch_size", "10000", "int", "rows per round trip when Spark reads over JDBC"),
    Setting("spark", "write_partitions", "4", "int", "JDBC connections Spark writes each tier through at once"),
    Setting("spark", "shuffle_partitions", "0", "int",
            "partitions of Spark's aggregations (spark.sql.shuffle.partitions); 0: twice Spark's cores, at least 8 "
            "(unless Spark's own configuration sets it)"),
)


def example_ini() -> str:
    """``config.ini.example``: every setting with its default and help, generated from SETTINGS."""
    lines = ["# summarizer configuration. Every key is optional; shown with its default.",
             "# Environment variables override this file: SUMMARIZER_<SECTION>_<KEY>, e.g. SUMMARIZER_DATABASE_URL.",
             "# Generated from summarizer/config.py (python -m summarizer.render); do not edit by hand."]
    section = ""
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"[{section}]"]
        lines += [f"# {setting.help}", f"{setting.key} = {setting.default}"]
    return "\n".join(lines) + "\n"


def parse_duration(text: str) -> float:
    """``'26h'`` -> 93600.0 seconds; plain numbers are seconds."""
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration like 90s, 30m, 26h or 2d, got {text!r}")
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def _identifier(text: str) -> str:
    if not IDENTIFIER.match(text):
        raise ValueError(f"expected a plain SQL identifier (letters, digits, _), got {text!r}")
    return text


def _optional_identifier(text: str) -> str:
    return _identifier(text) if text else ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _url(text: str) -> str:
    if text:
        problem = url_problem(text)
        if problem:
            raise ValueError(f"{problem}; got {redact_url(text)}")
    return text


def url_problem(text: str) -> str | None:
    """What is wrong with a database URL, in words that never repeat its password; None when it is usable."""
    scheme = re.match(r"[A-Za-z0-9+.-]*", text)[0]  # type: ignore[index]
    if "://" not in text:
        return (f"expected a SQLAlchemy URL like mysql+pymysql://user@host/db: '{scheme}' must be followed "
                "by '://'" if ":" in text else "expected a SQLAlchemy URL like mysql+pymysql://user@host/db")
    if any(c.isspace() for c in text.split("://", 1)[1].split("/", 1)[0]):  # user, password, host, port
        return "a URL cannot hold spaces before its database name: write a space in the password as %20"
    try:
        url = make_url(text)
    except ArgumentError:
        return "expected a SQLAlchemy URL like mysql+pymysql://user@host/db"
    except ValueError:  # SQLAlchemy reads the port with int()
        return "the port must be a number, as in host:3306"
    return _parsed_url_problem(url)


def _parsed_url_problem(url: URL) -> str | None:
    if url.get_backend_name() not in BACKENDS:
        return (f"unsupported database '{url.get_backend_name()}': write mysql+pymysql://, mariadb+pymysql://, "
                "postgresql+psycopg:// or sqlite:///")
    if url.host and any(c in url.host for c in "@/?#"):
        return ("the host holds '@': a password holding @ / ? or # must be percent-encoded "
                "(@ as %40, / as %2F, ? as %3F, # as %23)")
    return None


def with_default_driver(url: URL) -> URL:
    """``mysql://`` and ``mariadb://`` mean PyMySQL, ``postgresql://`` means psycopg (3): the drivers installed."""
    driver = DEFAULT_DRIVERS.get(url.drivername)
    return url.set(drivername=driver) if driver else url


BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _bool(text: str) -> bool:
    try:
        return BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError(f"expected true or false, got {text!r}") from None


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _measures(text: str) -> tuple[tuple[str, str], ...]:
    """``'revenue:net_amount, units:quantity'`` -> ``(('revenue', 'net_amount'), ('units', 'quantity'))``."""
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")) if text else ():
        metric, colon, column = (piece.strip() for piece in item.partition(":"))
        if not colon or not METRIC.match(metric) or not IDENTIFIER.match(column):
            raise ValueError("expected metric:column pairs separated by commas, like revenue:net_amount, "
                             "units:quantity (a metric of letters, digits, _ . or -; a plain column name); "
                             f"got {item!r}")
        if metric in (m for m, _ in pairs):
            raise ValueError(f"the metric {metric!r} is named twice: each metric comes from one column")
        pairs.append((metric, column))
    return tuple(pairs)


PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str, "int": _int, "float": _float, "bool": _bool, "url": _url, "list": _list, "measures": _measures,
    "identifier": _identifier, "optional_identifier": _optional_identifier, "duration": parse_duration,
}


class Config:
    """Validated settings; ``config.section.key`` or ``config.get(section, key)``."""

    def __init__(self, values: Mapping[tuple[str, str], Any], source: str) -> None:
        self._values = dict(values)
        self.path = source
        self.database = _Section(self, "database")
        self.source = _Section(self, "source")
        self.summary = _Section(self, "summary")
        self.refresh = _Section(self, "refresh")
        self.schedule = _Section(self, "schedule")
        self.api = _Section(self, "api")
        self.spark = _Section(self, "spark")
        self.follow = _Section(self, "follow")

    def get(self, section: str, key: str) -> Any:
        return self._values[(section, key)]

    def replace(self, **changes: Any) -> Config:
        """A copy with ``section__key=value`` changes (values already parsed)."""
        values = dict(self._values)
        for name, value in changes.items():
            section, key = name.split("__", 1)
            values[(section, key)] = value
        return Config(values, self.path)

    def database_url(self) -> URL:
        url = self.get("database", "url")
        if url:
            return with_default_driver(make_url(url))
        fields = {key: self.get("database", key) for key in ("host", "port", "user", "password", "database")}
        if not fields["host"] and not fields["database"]:
            raise ConfigError(
                "no database configured: set url in [database] of the config file, or "
                "SUMMARIZER_DATABASE_URL (or try `summarizer demo`, which needs none)",
                source=self.path, section="database", key="url")
        port = _port(fields["port"], self.path)
        return with_default_driver(URL.create(
            self.get("database", "driver"), username=fields["user"] or None, password=fields["password"] or None,
            host=fields["host"] or None, port=port, database=fields["database"] or None))


def _port(text: str, source: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"expected a port number from 1 to 65535, got {text!r}",
                          source=source, section="database", key="port")
    return int(text)


class _Section:
    def __init__(self, config: Config, name: str) -> None:
        self._config, self._name = config, name

    def __getattr__(self, key: str) -> Any:
        try:
            return self._config.get(self._name, key)
        except KeyError:
            raise AttributeError(f"no setting [{self._name}] {key}") from None


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None, *, required: bool = False) -> Config:
    """Read ``path`` (default ``./config.ini``; missing is fine unless ``required``) and the environment."""
    environ = os.environ if environ is None else environ
    file = Path(path) if path is not None else Path("config.ini")
    raw = _read_file(file, required)
    values: dict[tuple[str, str], Any] = {}
    known = {(s.section, s.key) for s in SETTINGS}
    for section in raw.sections():
        for key in raw[section]:
            if (section, key) not in known:
                allowed = ", ".join(s.key for s in SETTINGS if s.section == section) or "none (unknown section)"
                raise ConfigError(f"unknown setting; allowed keys: {allowed}",
                                  source=str(file), section=section, key=key)
    for setting in SETTINGS:
        variable = env_name(setting)
        if variable in environ:
            text, origin = environ[variable], f"environment variable {variable}"
        else:
            text, origin = raw.get(setting.section, setting.key, fallback=setting.default), str(file)
        _remember_secrets(setting, text)
        try:
            values[(setting.section, setting.key)] = PARSERS[setting.kind](text.strip())
        except ValueError as exc:
            raise ConfigError(str(exc), source=origin, section=setting.section, key=setting.key) from None
    config = Config(values, str(file))
    _check(config)
    _remember_connection(config)
    _warn_unknown_environment(environ)
    return config


def _remember_connection(config: Config) -> None:
    with contextlib.suppress(ConfigError):  # no database configured: the command says so when it needs one
        remember_connection(config.database_url())


def _remember_secrets(setting: Setting, text: str) -> None:
    """Passwords and tokens in the settings, to be masked in every output (see secrets.py)."""
    if (setting.section, setting.key) == ("database", "password"):
        remember_password(text.strip())
    elif setting.kind in ("url", "str", "list"):
        remember(text)


def config_location(explicit: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config file to read, and whether it must exist: ``--config``, ``$SUMMARIZER_CONFIG``, ./config.ini."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit), True
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]), True
    return Path("config.ini"), False


def env_name(setting: Setting) -> str:
    return f"{ENV_PREFIX}{setting.section}_{setting.key}".upper()


def unknown_environment(environ: Mapping[str, str]) -> dict[str, str | None]:
    """``SUMMARIZER_*`` variables that name no setting -> the closest setting's variable (or None)."""
    known = sorted(env_name(s) for s in SETTINGS)
    return {name: next(iter(difflib.get_close_matches(name, known, n=1)), None) for name in sorted(environ)
            if name.startswith(ENV_PREFIX) and name not in known and name != CONFIG_ENV
            and not name.startswith(TEST_PREFIX)}


def _warn_unknown_environment(environ: Mapping[str, str]) -> None:
    for name, close in unknown_environment(environ).items():
        hint = f"did you mean {close}?" if close else f"settings are {ENV_PREFIX}<SECTION>_<KEY>"
        log.warning("environment variable %s matches no setting and is ignored; %s", name, hint)


def _read_file(file: Path, required: bool) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    if not file.exists():
        if required:
            raise ConfigError("file not found (start one with: summarizer config example > config.ini)",
                              source=str(file))
        return parser
    try:
        parser.read(file, encoding="utf-8")
    except configparser.Error as exc:
        raise ConfigError(f"not a valid INI file: {exc.message}", source=str(file)) from None
    return parser


def _check(config: Config) -> None:
    """Rules that span settings or bound numbers."""
    bounds = {("summary", "value_precision"): (10, 65), ("summary", "value_scale"): (0, 30),
              ("refresh", "retry_attempts"): (1, 100), ("refresh", "jobs"): (1, 64),
              ("spark", "fetch_size"): (1, 1_000_000), ("spark", "write_partitions"): (1, 1024),
              ("spark", "shuffle_partitions"): (0, 100_000),
              ("refresh", "swap_lock_timeout"): (1, 3600), ("refresh", "swap_attempts"): (1, 1000),
              ("refresh", "retry_budget_seconds"): (0, 86400), ("refresh", "work_mem"): (0, 2**31 - 1),
              ("api", "port"): (1, 65535), ("api", "max_months"): (1, 1200),
              ("api", "max_limit"): (1, 1_000_000), ("api", "threads"): (1, 256),
              ("api", "cache_bytes"): (0, 2**40),
              ("summary", "asin_length"): (1, 255), ("summary", "marketplace_length"): (1, 255),
              ("summary", "metric_length"): (1, 255), ("follow", "batch_changes"): (1, 1_000_000),
              ("follow", "batch_seconds"): (0.01, 3600), ("follow", "idle_seconds"): (0.01, 60),
              ("follow", "server_id"): (0, 2**32 - 1), ("follow", "refresh_wait"): (0, 86400)}
    for (section, key), (low, high) in bounds.items():
        value = config.get(section, key)
        if not low <= value <= high:
            raise ConfigError(f"expected a number from {low} to {high}, got {value}",
                              source=config.path, section=section, key=key)
    if 0 < config.refresh.work_mem < 65536:
        raise ConfigError(f"expected 0 (the server's default) or at least 65536 bytes (PostgreSQL's 64 kB minimum), "
                          f"got {config.refresh.work_mem}", source=config.path, section="refresh", key="work_mem")
    if config.summary.value_scale >= config.summary.value_precision:
        raise ConfigError("value_scale must be smaller than value_precision",
                          source=config.path, section="summary", key="value_scale")
    if not config.summary.all_marketplace:
        raise ConfigError("must not be empty", source=config.path, section="summary", key="all_marketplace")
    longest = max((m for m, _ in config.source.measures), key=len, default="")
    if len(longest) > config.summary.metric_length:
        raise ConfigError(f"the metric {longest!r} is longer than [summary] metric_length "
                          f"({config.summary.metric_length} characters)", source=config.path, section="source",
                          key="measures")
    _check_choices(config)
    _check_pg_names(config)


def _check_pg_names(config: Config) -> None:
    """PostgreSQL folds unquoted names to lower case, and a slot name has at most 63 characters."""
    for key in ("slot_prefix", "publication"):
        value = config.get("follow", key)
        if value != value.lower() or len(value) > 54:
            raise ConfigError(f"expected lower-case letters, digits and _, at most 54 characters, got {value!r}",
                              source=config.path, section="follow", key=key)


def _check_choices(config: Config) -> None:
    choices = {("refresh", "engine"): ("database", "spark"), ("spark", "source"): ("jdbc", "parquet")}
    for (section, key), allowed in choices.items():
        if config.get(section, key) not in allowed:
            raise ConfigError(f"expected one of {', '.join(allowed)}, got {config.get(section, key)!r}",
                              source=config.path, section=section, key=key)
    if not config.spark.master:
        raise ConfigError("must not be empty", source=config.path, section="spark", key="master")
