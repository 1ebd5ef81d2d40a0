"""summarizer: keep pre-aggregated summary tables fresh inside the database.

The public API is the :class:`Summarizer` facade, :func:`load_config` and the errors. It is
installed as the distribution ``summarizer-tiers`` (the name ``summarizer`` on the package index
belongs to an unrelated project); the import package and the command are ``summarizer``.
"""

__version__ = "0.1.0"
DISTRIBUTION = "summarizer-tiers"

from .config import Config, load_config  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DatabaseUnavailable,
    LockHeld,
    RefreshFailed,
    SchemaError,
    SourceError,
    SummarizerError,
    UsageError,
    VerifyMismatch,
)
from .facade import Status, Summarizer  # noqa: E402

__all__ = [
    "Config", "ConfigError", "DatabaseUnavailable", "LockHeld", "RefreshFailed", "SchemaError", "SourceError",
    "DISTRIBUTION", "Status", "Summarizer", "SummarizerError", "UsageError", "VerifyMismatch", "__version__",
    "load_config",
]
