"""A TPC-H-like shape for the benchmark: data that hardly compresses.

TPC-H's order lines summed per part, nation, month and metric give one raw row per key: loaded as the raw
table, tier 1 holds about as many rows as the raw table (~99%), so a full refresh is bound by writing, not
reading. :data:`TPCH_SHAPE` draws such a table with synth: 200,000 parts (ASINs) drawn uniformly (skew 1), 25
nations (marketplaces, ISO codes of TPC-H's nations), 1,000 brands, 150 categories (TPC-H's part types), one
raw row per drawn key. ``python -m benchmarks.bench --shape tpch`` uses it.
"""

from __future__ import annotations

from typing import Any

NATIONS = ("DZ", "AR", "BR", "CA", "EG", "ET", "FR", "DE", "IN", "ID", "IR", "IQ", "JP", "JO", "KE", "MA", "MZ",
           "PE", "CN", "RO", "SA", "VN", "RU", "GB", "US")
TPCH_SHAPE: dict[str, Any] = dict(asins=200_000, brands=1_000, categories=150, skew=1, rows_per_key=1,
                                  marketplaces=NATIONS)
