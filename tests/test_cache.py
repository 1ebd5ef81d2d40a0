"""The in-process response cache is bounded by the bytes of the bodies it keeps, not by their number."""

from __future__ import annotations

import random

from sqlalchemy.engine import make_url

from summarizer.serve.cache import HIT, MISS, MemoryCache
from summarizer.serve.read import DASHBOARD, Reader

from .oracle import load, random_dataset


def held(cache: MemoryCache, keys: list[str]) -> dict[str, int]:
    """Key -> body size of the entries still there, asked in the order they were put (which keeps that order)."""
    found = {}
    for key in keys:
        body, how = cache.get(key)
        if how == HIT:
            assert body is not None
            found[key] = len(body)
    return found


def newest_that_fit(sizes: list[tuple[str, int]], bound: int) -> list[str]:
    """The most recent entries whose sizes add up to at most ``bound``: what an LRU by bytes keeps."""
    kept, total = [], 0
    for key, size in reversed(sizes):
        if total + size > bound:
            break
        kept.append(key)
        total += size
    return sorted(kept)


def test_bodies_beyond_the_bound_evict_the_oldest():
    bound = 20_000
    cache = MemoryCache(bound)
    rng = random.Random(5)
    put: list[tuple[str, int]] = []
    for i in range(120):  # about 80 KB in all: four times the bound
        key, size = f"dashboard?{i}@7", rng.randint(200, 1_200)
        cache.put(key, bytes([i % 256]) * size)
        put.append((key, size))
        present = held(cache, [k for k, _ in put])
        assert sum(present.values()) <= bound, f"{sum(present.values())} bytes held after {i + 1} puts"
        assert sorted(present) == newest_that_fit(put, bound)
    assert cache.held_bytes == sum(held(cache, [k for k, _ in put]).values()) > bound * 0.9


def test_a_body_larger_than_the_bound_is_not_cached_and_evicts_nothing():
    cache = MemoryCache(1_000)
    cache.put("small", b"x" * 600)
    cache.put("huge", b"y" * 1_001)
    assert cache.get("huge") == (None, MISS)
    assert cache.get("small") == (b"x" * 600, HIT)
    assert cache.held_bytes == 600


def test_zero_bytes_caches_nothing():
    cache = MemoryCache(0)
    cache.put("a", b"body")
    assert cache.get("a") == (None, MISS) and cache.held_bytes == 0


def test_the_api_cache_stays_within_cache_bytes(app_factory, tmp_path):
    """Distinct full-range questions to the read API: the cache keeps at most ``[api] cache_bytes`` of
    answers, and the latest answer is still served from it."""
    app = app_factory(make_url(f"sqlite:///{tmp_path / 'cache.db'}"), api_cache_bytes="60000")
    data = random_dataset(seed=9, rows=400, months=12, huge=False)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    reader = Reader(app)
    assert isinstance(reader.cache, MemoryCache) and reader.cache.max_bytes == 60_000
    sizes = []
    for first in range(1, 13):
        for metric in ("revenue", "units", "refunds", "cogs", None):
            items = [("from", f"2024-{first:02d}"), ("to", "2024-12")] + ([("metric", metric)] if metric else [])
            answer = reader.answer(DASHBOARD, items)
            sizes.append(len(answer.body))
            assert reader.cache.held_bytes <= 60_000
    assert sum(sizes) > 3 * 60_000, "the answers did not add up to more than the bound"
    assert reader.answer(DASHBOARD, items).cache == HIT
