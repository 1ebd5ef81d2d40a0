"""Passwords and tokens out of every output: the one place that masks them.

Whatever summarizer prints (``Error:`` lines, status), logs, records in the run table or writes
elsewhere passes through :func:`redact` on its way out:

* a URL SQLAlchemy can parse is rendered with ``render_as_string(hide_password=True)`` (:func:`redact_url`);
* in any other text, ``user:password@`` becomes ``user:***@`` and ``password=...``, ``token=...``
  (and the like) become ``password=***``, which covers URLs too malformed to parse;
* every secret the configuration holds (:func:`remember`, called when the configuration is read) is
  replaced wherever it appears, also percent-encoded, so a password that the patterns above miss
  (one with spaces, or echoed back by a driver) is masked all the same. Secrets shorter than
  :data:`MIN_REMEMBERED` characters are left to the patterns: masking them everywhere would mangle text.

What HTTP clients see goes through :func:`public` as well, which also hides the database's host,
port, user and name (a recorded run error may quote them); the server's own log keeps them.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url

MASK = "***"
MIN_REMEMBERED = 4
SECRET_KEYS = r"password|passwd|pwd|token|access_token|secret|api_key|apikey"
# user:password@ -- the user has no separators; the password runs to the last @ of the token, and does
# not start with // (that would be a scheme's "://", not a password)
USERINFO = re.compile(r"(?P<user>[^\s:/@'\"(){}\[\],;]*):(?!//)(?P<password>[^\s'\"]*)@")
# password=x (URL queries, Spark Connect's ;token=x, also percent-encoded) and "password": "x" (JSON);
# not "password: YES"
KEY_VALUE = re.compile(rf"(?P<key>(?:{SECRET_KEYS}))(?P<sep>\s*=\s*[\"']?|%3D|[\"']\s*:\s*[\"'])"
                       rf"(?P<value>[^\s&;,'\"}})%]+)", re.IGNORECASE)

_remembered: set[str] = set()
_connection: dict[str, str] = {}  # placeholder -> the database's host, port, user, name (see :func:`public`)
_lock = threading.Lock()


def redact(text: str) -> str:
    """``text`` with every password and token it holds replaced by ``***``."""
    for secret in _secrets_longest_first():
        text = text.replace(secret, MASK)
    text = USERINFO.sub(lambda m: f"{m['user']}:{MASK}@" if m["password"] != MASK else m[0], text)
    return KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def redact_url(url: URL | str) -> str:
    """A database or Redis URL as it may be shown: the password masked, even when it does not parse."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except Exception:  # any parse failure: fall back to the patterns
            return redact(url)
    else:
        parsed = url
    return redact(parsed.render_as_string(hide_password=True))


def public(text: str) -> str:
    """``text`` as HTTP clients may see it: redacted, and the database's host, port, user and name hidden."""
    text = redact(text)
    with _lock:
        details = sorted(_connection.items(), key=lambda item: len(item[1]), reverse=True)
    for placeholder, value in details:
        text = re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", placeholder, text)
    return text


def remember_connection(url: URL) -> None:
    """The database's connection details, which :func:`public` keeps from HTTP clients."""
    details = {"<host>": url.host, "<port>": str(url.port or ""), "<user>": url.username, "<database>": url.database}
    with _lock:
        _connection.update({k: str(v) for k, v in details.items() if v and len(str(v)) >= 2})


def remember(*values: str) -> None:
    """Secrets (or text holding them: URLs, ``password=`` options) to mask wherever they appear."""
    found: set[str] = set()
    for value in values:
        found |= _secrets_in(value)
    found = {s for s in found if len(s) >= MIN_REMEMBERED and s != MASK}
    with _lock:
        _remembered.update(*(_spellings(s) for s in found))


def remember_password(password: str) -> None:
    """A value that is a password as a whole (``[database] password``)."""
    if password and len(password) >= MIN_REMEMBERED:
        with _lock:
            _remembered.update(_spellings(password))


def _spellings(secret: str) -> set[str]:
    """The secret as text, percent-encoded (in URLs) and JSON-escaped (in JSON log lines)."""
    return {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}


def _secrets_in(text: str) -> set[str]:
    found = {m["password"] for m in USERINFO.finditer(text)} | {m["value"] for m in KEY_VALUE.finditer(text)}
    try:
        password = make_url(text).password
    except Exception:  # not a URL: the patterns found what there is
        password = None
    if password:
        found.add(str(password))
    return found | {unquote(s) for s in found}


def _secrets_longest_first() -> list[str]:
    with _lock:
        return sorted(_remembered, key=len, reverse=True)
