"""A database user without the privileges a command needs: said in one ``Error:`` line, with the fix.

Commands run inside :func:`named_privileges`; a refusal by the database (MySQL's "command denied",
PostgreSQL's "permission denied" and "must be owner") becomes :class:`~summarizer.errors.PrivilegeMissing`
naming the account, what the server refused, and the GRANT an administrator runs (see ``dialects.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from .dialects import Dialect
from .errors import PrivilegeMissing, SummarizerError


@contextmanager
def named_privileges(dialect: Dialect, command: str) -> Iterator[None]:
    """Run a command; a missing privilege anywhere in it becomes PrivilegeMissing."""
    try:
        yield
    except (DBAPIError, SummarizerError) as exc:
        refused = _refusal(dialect, exc)
        if refused is None:
            raise
        raise PrivilegeMissing(describe(dialect, command, refused)) from exc


def describe(dialect: Dialect, command: str, exc: DBAPIError) -> str:
    message = _first_line(exc)
    account, schema = _whoami(dialect)
    advice = dialect.grant_advice(account, schema, message)
    return f"{command}: the database user {account} lacks a privilege ({message})" + (f"; {advice}" if advice else "")


def _refusal(dialect: Dialect, exc: BaseException) -> DBAPIError | None:
    """The database error refusing a privilege, in ``exc`` or what caused it (a failed refresh wraps it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and dialect.is_missing_privilege(seen):
            return seen
        seen = seen.__cause__
    return None


def _whoami(dialect: Dialect) -> tuple[str, str]:
    try:
        with dialect.engine.connect() as conn:
            return dialect.whoami(conn)
    except DBAPIError:  # say what we can without it
        return str(dialect.engine.url.username or "?"), str(dialect.engine.url.database or "?")


def _first_line(exc: DBAPIError) -> str:
    args: tuple[object, ...] = tuple(getattr(exc.orig, "args", ()))
    text = str(args[1] if len(args) == 2 and isinstance(args[0], int) else exc.orig).strip()  # PyMySQL: (code, text)
    return text.splitlines()[0] if text else type(exc.orig).__name__
