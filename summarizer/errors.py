"""The errors summarizer raises, under one root.

::

    SummarizerError                 exit 1: something failed; the message says what to do next
    ├── ConfigError                 exit 2: the configuration is wrong (file, section, key named)
    │   └── TableClash              exit 2: a configured table name is taken by a table of another shape
    ├── UsageError                  exit 2: a command-line argument is wrong
    ├── LockHeld                    exit 75: another run holds the refresh lock
    ├── SchemaError                 exit 1: a table is missing or has the wrong shape
    ├── SourceError                 exit 2: a source table or column the rollup reads is missing
    │   │                                   (the configuration names data that is not there)
    │   └── SourceDataError         exit 1: source rows the rollup cannot sum as they are (bad month, duplicates)
    ├── DatabaseUnavailable         exit 69: the database cannot be reached (EX_UNAVAILABLE)
    ├── PrivilegeMissing            exit 1: the database user may not do what the command needs
    ├── RefreshFailed               exit 1: a refresh step failed; live tables are untouched
    ├── FollowFailed                exit 1: following cannot start or go on (the message says what to run)
    └── VerifyMismatch              exit 1: summaries and raw data disagree

The CLI turns each into ``Error: <message>`` and its exit code in one place (``cli.py``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE, as 75 is EX_TEMPFAIL
EXIT_LOCKED = 75


class SummarizerError(Exception):
    """Root of every error summarizer raises on purpose."""

    exit_code = EXIT_FAILURE


class ConfigError(SummarizerError):
    """The configuration file or environment holds a value that cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, source: str = "", section: str = "", key: str = "") -> None:
        where = ", ".join(part for part in (
            source,
            f"section [{section}]" if section else "",
            f"key '{key}'" if key else "",
        ) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.source, self.section, self.key = source, section, key


class UsageError(SummarizerError):
    """A command-line argument cannot be used."""

    exit_code = EXIT_USAGE


class LockHeld(SummarizerError):
    """Another run holds the refresh lock."""

    exit_code = EXIT_LOCKED


class SchemaError(SummarizerError):
    """A summary or bookkeeping table is missing or has the wrong shape."""


class TableClash(ConfigError, SchemaError):
    """A table exists under a configured summary name with another shape: it is never renamed or dropped.

    A configuration error (exit 2: the name in [summary] is what to change) and a schema error."""


class SourceError(SummarizerError):
    """A source table or column the rollup reads does not exist: the [source] settings or the data are wrong."""

    exit_code = EXIT_USAGE


class SourceDataError(SourceError):
    """Source rows that the rollup cannot sum as they are; the message names table, column and an example."""

    exit_code = EXIT_FAILURE  # the data, not the configuration, is wrong


class DatabaseUnavailable(SummarizerError):
    """The database cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


class PrivilegeMissing(SummarizerError):
    """The database refused the command a privilege (the message names it and the GRANT that fixes it)."""


class RefreshFailed(SummarizerError):
    """A refresh step failed; the live summary tables were left as they were."""


class FollowFailed(SummarizerError):
    """Following cannot start or go on: a server setting, a purged stream, a schema change, tiers changed by
    something else. The tiers stay exact at the last applied batch."""


class VerifyMismatch(SummarizerError):
    """The summary tiers do not add up to the raw data."""
