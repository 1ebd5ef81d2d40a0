"""Short texts for people, used across the package: how long something took, an error in one line."""

from __future__ import annotations

from .secrets import redact


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def first_line(exc: BaseException | None, *, named: bool = False) -> str:
    """An error in one line, secrets masked: the driver's own message (a SQLAlchemy error's ``orig``, without
    the statement dump), its first line, or the error's type when it has no message; ``named``: always
    prefixed with the type (``OperationalError: ...``)."""
    if exc is None:
        return ""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip()
    line = message.splitlines()[0] if message else ""
    return redact(f"{type(orig).__name__}: {line}" if named else line or type(orig).__name__)[:1000]
