"""The tier engines, by the name ``[refresh] engine`` gives them.

Adding an engine means adding one module here that implements :class:`~summarizer.engines.base.TierEngine`
and one line in :data:`ENGINES` (and the name among the setting's choices in ``config.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Context, TierEngine
from .database import DATABASE, DatabaseEngine
from .spark import SPARK, SparkEngine

ENGINES: dict[str, Callable[[Context], TierEngine]] = {DATABASE: DatabaseEngine, SPARK: SparkEngine}


def engine_for(context: Context) -> TierEngine:
    """The engine ``[refresh] engine`` names, given ``context``."""
    return ENGINES[context.config.refresh.engine](context)


__all__ = ["ENGINES", "Context", "TierEngine", "engine_for"]
