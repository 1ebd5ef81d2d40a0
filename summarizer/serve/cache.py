"""The read API's response cache: in-process by default, Redis when ``[api] redis_url`` is set.

Keys carry the data version (``version.py``: it changes with every change to the live tiers), so a
refresh invalidates every entry without any time-to-live guessing; old versions' entries are never
asked for again and age out (LRU in process; in Redis an expiry of ``[api] max_age`` that only
collects garbage). The in-process cache is bounded by the bytes of the bodies it holds
(``[api] cache_bytes``), not by their number: one full-year answer can weigh as much as a thousand small ones.

A Redis that does not answer never fails a request: the cache steps aside (``get`` misses, ``put``
does nothing), says so once in the log, and tries Redis again every :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import LRUCache

from ..errors import ConfigError
from ..secrets import redact, redact_url
from ..text import first_line

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
REDIS_TIMEOUT = 0.25  # seconds: a cache that answers slower than this is no use to a dashboard
HIT, MISS, BYPASS = "hit", "miss", "bypass"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0  # requests answered uncached because the cache was unavailable

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class Cache(Protocol):
    """Bytes by key; ``get`` returns (body or None, HIT/MISS/BYPASS); ``put`` never raises."""

    stats: CacheStats
    backend: str

    def get(self, key: str) -> tuple[bytes | None, str]: ...
    def put(self, key: str, body: bytes) -> None: ...


class MemoryCache:
    """A thread-safe LRU holding at most ``max_bytes`` of bodies (0: no caching); a larger body is not kept."""

    backend = "memory"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: LRUCache[str, bytes] = LRUCache(maxsize=max(1, max_bytes), getsizeof=len)
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        """The bytes of the bodies held now (keys and bookkeeping aside)."""
        with self._lock:
            return int(self._entries.currsize)

    def get(self, key: str) -> tuple[bytes | None, str]:
        with self._lock:
            body = self._entries.get(key)
            if body is None:
                self.stats.misses += 1
                return None, MISS
            self.stats.hits += 1
            return body, HIT

    def put(self, key: str, body: bytes) -> None:
        if not 0 < len(body) <= self.max_bytes:  # an empty body would count nothing against the bound
            return
        with self._lock:
            self._entries[key] = body  # evicts the least recently used entries until it fits


class RedisCache:
    """Entries in Redis under ``prefix``; a Redis that fails makes the cache step aside for a while."""

    backend = "redis"

    def __init__(self, url: str, prefix: str, expire_seconds: int, client: Any = None) -> None:
        self.prefix, self.expire_seconds = prefix, max(1, expire_seconds)
        self.stats = CacheStats()
        self._client = client if client is not None else _redis_client(url)
        self._url = url
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bytes | None, str]:
        if self._resting():
            return self._bypass()
        try:
            body = self._client.get(self.prefix + key)
        except Exception as exc:  # any Redis failure: answer uncached
            self._failed(exc)
            return self._bypass()
        self._recovered()
        with self._lock:
            if body is None:
                self.stats.misses += 1
                return None, MISS
            self.stats.hits += 1
        return bytes(body), HIT

    def put(self, key: str, body: bytes) -> None:
        if self._resting():
            return
        try:
            self._client.set(self.prefix + key, body, ex=self.expire_seconds)
        except Exception as exc:
            self._failed(exc)

    def _bypass(self) -> tuple[None, str]:
        with self._lock:
            self.stats.bypasses += 1
        return None, BYPASS

    def _resting(self) -> bool:
        """True while Redis failed less than RETRY_SECONDS ago (no request waits on a dead Redis)."""
        return self._down and time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first = not self._down
            self._down, self._down_until = True, time.monotonic() + RETRY_SECONDS
        if first:
            log.warning("Redis cache at %s is not answering (%s); the API answers uncached and tries Redis "
                        "again every %.0fs", redact_url(self._url), first_line(exc), RETRY_SECONDS)

    def _recovered(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                log.warning("Redis cache at %s answers again; caching resumed", redact_url(self._url))


def _redis_client(url: str) -> Any:
    """A client for ``url`` (it connects on first use); ConfigError when the URL cannot be used."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigError("a Redis cache needs the redis package: pip install 'summarizer[redis]'",
                          section="api", key="redis_url") from None
    try:  # no retries inside redis-py: one failure makes the cache step aside (see RedisCache)
        return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT,
                                    retry=Retry(NoBackoff(), 0))
    except ValueError as exc:
        raise ConfigError(f"not a usable Redis URL ({redact(str(exc))}): expected redis://[:password@]host[:port]"
                          f"[/db], rediss://... or unix:///path; got {redact_url(url)}",
                          section="api", key="redis_url") from None


def namespace(*parts: str) -> str:
    """A short key prefix that keeps two deployments sharing one Redis apart."""
    return "summarizer:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12] + ":"


def make_cache(redis_url: str, cache_bytes: int, prefix: str, expire_seconds: int) -> Cache:
    """Redis when ``redis_url`` is set, else the in-process LRU of at most ``cache_bytes`` of bodies."""
    if redis_url:
        return RedisCache(redis_url, prefix, expire_seconds)
    return MemoryCache(cache_bytes)
