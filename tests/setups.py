"""The setup many behaviour tests start from: source rows loaded, ``init`` and one full refresh run.

:func:`load_and_refresh` does it on a given Summarizer; the ``refreshed_on`` fixture (conftest.py)
makes the Summarizer too and closes it after the test. Both return a :class:`Refreshed`: the app, the
dataset, the source tables and the tiers as the refresh left them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table

from summarizer import Summarizer

from .oracle import Dataset, actual_tiers, load, random_dataset

Tiers = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


@dataclass
class Refreshed:
    app: Summarizer
    data: Dataset
    tables: dict[str, Table]
    tiers: Tiers  # the live tiers' rows right after the refresh

    def current_tiers(self) -> Tiers:
        """The live tiers' rows now, to compare with :attr:`tiers`."""
        return live_tiers(self.app)


def live_tiers(app: Summarizer) -> Tiers:
    return actual_tiers(app.dialect.engine, app.schema.live().by_name())


def load_and_refresh(app: Summarizer, data: Dataset | None = None, *, source_indexes: bool = False,
                     **dataset: Any) -> Refreshed:
    """Load ``data`` (else ``random_dataset(**dataset)``, exact decimals where the engine keeps them),
    run init and a full refresh, and snapshot the tiers."""
    if data is None:
        data = random_dataset(**{"huge": app.dialect.EXACT_DECIMAL, **dataset})
    tables = load(app.dialect.engine, data)
    app.init(source_indexes=source_indexes)
    app.refresh()
    return Refreshed(app, data, tables, live_tiers(app))
