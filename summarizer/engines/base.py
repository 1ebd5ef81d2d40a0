"""What a tier engine is: the one seam between a refresh and whatever computes the tiers.

The refresh (``refresh.py``) keeps everything that makes a run safe: the run lock, the run record,
the shadow tables and their swap, the month transactions. An engine only computes: it checks what it
needs before the run (:meth:`TierEngine.preflight`), says how it will work (:meth:`TierEngine.plan`),
fills the empty shadow tiers of a full refresh (:meth:`TierEngine.fill_shadows`) and gives the
per-month replacement of an incremental one (:meth:`TierEngine.months`). Each engine is given the
same :class:`Context`, whose :class:`~summarizer.steps.Steps` retries, times and runs its statements.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ..config import Config
from ..dialects import Dialect
from ..model import Schema, Source, Tiers
from ..plan import RefreshPlan
from ..rollup import Rollup
from ..runs import Mode
from ..steps import Steps

MonthWork = Callable[[dt.date], Counter[str]]  # replaces one month of the live tiers; the rows each table changed


@dataclass(frozen=True)
class Context:
    """What every engine is given: the database, the configuration, the tables and the step machinery."""

    dialect: Dialect
    config: Config
    schema: Schema
    source: Source
    rollup: Rollup
    steps: Steps


class TierEngine(Protocol):
    """Computes the three tiers for a refresh (one module per engine, registered in ``engines/__init__.py``)."""

    # capability constants: what the refresh has to know about an engine
    VALUE_PRECISION_CAP: int  # the widest DECIMAL the engine sums exactly (0: no limit of its own)
    REPORTS_DUPLICATES_AS_FAILURE: bool  # a duplicate key comes back as RefreshFailed, not IntegrityError

    def preflight(self, mode: Mode) -> None:
        """Raise before any run is recorded if the engine cannot do a refresh of ``mode``."""

    def reads_source_here(self) -> bool:
        """Whether the raw rows are read from the serving database (so its months are checked first)."""

    def plan(self) -> RefreshPlan:
        """How the tiers will be computed, for the run record and the log."""

    def fill_shadows(self, shadow: Tiers, plan: RefreshPlan, stamp: dt.datetime, check: Callable[[], None],
                     jobs: int) -> dict[str, int] | None:
        """A full refresh's compute step: every month of every tier, into the empty shadow tables. The rows
        written into each tier (by tier name) where the engine counted them; None: the refresh counts them."""

    def months(self, months: Sequence[dt.date], stamp: dt.datetime,
               check: Callable[[], None]) -> AbstractContextManager[MonthWork]:
        """An incremental refresh: the work that replaces one month of the live tiers (one transaction)."""
