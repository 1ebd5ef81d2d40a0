"""Load test of the read API: a running `summarizer serve` on loopback, uncached, cached, and the raw tables.

The typical request is /api/dashboard-data for one brand, all marketplaces (ALL), a window of
--months months and every metric. Three measurements, each bounded by --requests and --seconds:

  uncached  distinct (brand, window) pairs drawn at random; only answers with `X-Cache: miss` count
  cached    a few pairs asked first, then asked again and again; only `X-Cache: hit` answers count
  raw       the same question asked of the raw tables (financials joined to products), through the
            database directly (--config / SUMMARIZER_DATABASE_URL); its totals are checked against the API's

Prints p50/p99 latency and requests per second for each, and the raw/uncached ratio.

    python -m benchmarks.loadtest --url http://127.0.0.1:8000 --requests 2000 --seconds 30 --concurrency 1
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import random
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, of the answers that count
    skipped: int = 0  # answers that did not count (a hit while uncached was wanted, or the reverse)
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.latencies:
            return f"{self.name:<9} no answers counted ({self.skipped} skipped)"
        ms = sorted(x * 1000 for x in self.latencies)
        rate = (len(ms) + self.skipped) / self.elapsed if self.elapsed else 0.0
        return (f"{self.name:<9} n={len(ms):<6} p50 {percentile(ms, 50):8.2f} ms   p99 {percentile(ms, 99):8.2f} ms"
                f"   {rate:8.1f} req/s" + (f"   ({self.skipped} not counted)" if self.skipped else ""))


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


class Client:
    """One keep-alive HTTP connection (one per thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.connection = http.client.HTTPConnection(host, port, timeout=30)

    def get(self, path: str) -> tuple[int, str, bytes]:
        try:
            return self._get(path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.connection.close()  # the server closed an idle keep-alive connection: open another
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            return self._get(path)

    def _get(self, path: str) -> tuple[int, str, bytes]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        return response.status, response.getheader("X-Cache", ""), response.read()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server; loopback only")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase (at most)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per phase (at most)")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel connections")
    parser.add_argument("--months", type=int, default=12, help="months per request window")
    parser.add_argument("--cached-set", type=int, default=20, help="distinct requests repeated in the cached phase")
    parser.add_argument("--raw-repeats", type=int, default=5, help="raw-table queries (at most; also --seconds)")
    parser.add_argument("--config", default=None, help="summarizer config for the raw-table comparison "
                        "(the environment, e.g. SUMMARIZER_DATABASE_URL, overrides it)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-table comparison")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the clock)")
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency, args.months, args.cached_set) < 1 or args.seconds <= 0:
        parser.error("--requests, --concurrency, --months, --cached-set and --seconds must be positive")
    return args


def loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        sys.exit(f"--url: expected http://HOST:PORT, got {url!r}")
    address = socket.gethostbyname(parts.hostname)
    if not ipaddress.ip_address(address).is_loopback:
        sys.exit(f"--url: {parts.hostname} is not a loopback address; this load test only runs on loopback")
    return parts.hostname, parts.port or 80


def fetch(client: Client, path: str) -> dict[str, Any]:
    status, _cache, body = client.get(path)
    if status != 200:
        sys.exit(f"GET {path}: {status} {body[:300]!r}")
    return json.loads(body)  # type: ignore[no-any-return]


def discover(client: Client, months: int) -> tuple[list[str], list[int], int]:
    """The windows (first months) and brands to ask about, and the data version."""
    meta = fetch(client, "/api/meta")
    all_months = meta["data"]["months"]
    if len(all_months) < months:
        sys.exit(f"the summaries hold {len(all_months)} months; use --months {len(all_months)} or fewer")
    last = all_months[-1]
    query = {"from": last, "to": last, "metric": meta["data"]["metrics"][0]}
    rows = fetch(client, "/api/dashboard-data?" + urlencode(query))
    brands = sorted({r["brand_id"] for r in rows["data"]} - {0})
    if not brands:
        sys.exit("no brands in the summaries: refresh first")
    return all_months[: len(all_months) - months + 1], brands, meta["meta"]["data_version"]


def window(first: str, months: int) -> tuple[str, str]:
    """(first, last) months of a window of ``months`` months starting at ``first``."""
    index = int(first[:4]) * 12 + int(first[5:7]) - 1 + months - 1
    return first, f"{index // 12:04d}-{index % 12 + 1:02d}"


def window_path(months: int, first: str, brand: int) -> str:
    first, last = window(first, months)
    return "/api/dashboard-data?" + urlencode({"from": first, "to": last, "brand_id": brand})


def run_phase(name: str, host: str, port: int, args: argparse.Namespace, next_path: Callable[[], str | None],
              wanted: str) -> Phase:
    """Up to --requests requests in --seconds over --concurrency connections; counts answers with X-Cache ``wanted``."""
    phase, lock = Phase(name), threading.Lock()
    deadline = time.perf_counter() + args.seconds
    budget = [args.requests]

    def worker() -> None:
        client = Client(host, port)
        while time.perf_counter() < deadline:
            with lock:
                path = next_path() if budget[0] > 0 else None
                budget[0] -= 1
            if path is None:
                return
            start = time.perf_counter()
            status, cache, body = client.get(path)
            took = time.perf_counter() - start
            with lock:
                if status != 200:
                    phase.errors.append(f"GET {path}: {status} {body[:200]!r}")
                    return
                if cache == wanted:
                    phase.latencies.append(took)
                else:
                    phase.skipped += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.elapsed = time.perf_counter() - started
    return phase


def uncached_paths(firsts: list[str], brands: list[int], args: argparse.Namespace,
                   rng: random.Random) -> Callable[[], str | None]:
    seen: set[tuple[str, int]] = set()
    space = len(firsts) * len(brands)

    def next_path() -> str | None:
        if len(seen) >= space:
            return None
        while True:
            pair = (rng.choice(firsts), rng.choice(brands))
            if pair not in seen:
                seen.add(pair)
                return window_path(args.months, *pair)
    return next_path


def cached_paths(client: Client, firsts: list[str], brands: list[int], args: argparse.Namespace,
                 rng: random.Random) -> Callable[[], str | None]:
    paths = [window_path(args.months, rng.choice(firsts), rng.choice(brands)) for _ in range(args.cached_set)]
    for path in paths:
        client.get(path)  # warm: the second ask is a hit
    counter = iter(range(10**12))
    return lambda: paths[next(counter) % len(paths)]


def raw_phase(client: Client, firsts: list[str], brands: list[int], args: argparse.Namespace,
              rng: random.Random) -> tuple[Phase, list[str]]:
    """The same question asked of the raw tables; returns the phase and any total that disagrees with the API."""
    from sqlalchemy import Date, bindparam, func, select

    from summarizer import Summarizer, load_config
    app = Summarizer(load_config(args.config, required=args.config is not None), pool_size=1)
    s = app.source
    f, p = s.financials.alias("f"), s.products.alias("p")
    month, metric, value = f.c[s.month.name], f.c[s.metric.name], f.c[s.value.name]
    question = (select(month, metric, func.sum(value), func.count())
                .select_from(f.join(p, p.c[s.product_asin.name] == f.c[s.asin.name]))
                .where(p.c[s.product_brand.name] == bindparam("brand"),
                       month.between(bindparam("first", type_=Date), bindparam("last", type_=Date)))
                .group_by(month, metric))
    phase, problems = Phase("raw"), []
    deadline = time.perf_counter() + args.seconds
    started = time.perf_counter()
    with app.dialect.engine.connect() as conn:
        for _ in range(args.raw_repeats):
            if time.perf_counter() > deadline:
                break
            first, brand = rng.choice(firsts), rng.choice(brands)
            path = window_path(args.months, first, brand)
            first, last = window(first, args.months)
            bounds = {"first": _date(first), "last": _date(last), "brand": brand}
            start = time.perf_counter()
            rows = list(conn.execute(question, bounds).all())
            phase.latencies.append(time.perf_counter() - start)
            problems += compare(rows, fetch(client, path)["data"], path)
    phase.elapsed = time.perf_counter() - started
    app.close()
    return phase, problems


def _date(month: str) -> Any:
    import datetime as dt
    return dt.date(int(month[:4]), int(month[5:7]), 1)


def compare(raw: list[Any], api: list[dict[str, Any]], path: str) -> list[str]:
    """Differences between the raw tables' totals and the API's (exact; 1e-9 relative for SQLite's REAL)."""
    want = {(str(m)[:7], k): (Decimal(str(v)), int(n)) for m, k, v, n in raw}
    have = {(r["month"], r["metric"]): (Decimal(r["value"]), r["row_count"]) for r in api}
    if set(want) != set(have):
        return [f"{path}: the API answers {len(have)} (month, metric) pairs, the raw tables {len(want)}"]
    return [f"{path} {key}: API {have[key]}, raw tables {want[key]}" for key in sorted(want)
            if want[key][1] != have[key][1] or abs(want[key][0] - have[key][0]) > abs(want[key][0]) * Decimal("1e-9")]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    host, port = loopback(args.url)
    rng = random.Random(args.seed if args.seed is not None else time.time_ns())
    client = Client(host, port)
    firsts, brands, version = discover(client, args.months)
    print(f"server {args.url}, data version {version}: {len(brands)} brands, {len(firsts)} windows of {args.months} "
          f"months; typical request: /api/dashboard-data, one brand, ALL marketplaces, every metric")
    print(f"bounds: {args.requests} requests or {args.seconds:.0f}s per phase, concurrency {args.concurrency}")
    uncached = run_phase("uncached", host, port, args, uncached_paths(firsts, brands, args, rng), "miss")
    print(uncached.line())
    cached = run_phase("cached", host, port, args, cached_paths(client, firsts, brands, args, rng), "hit")
    print(cached.line())
    for error in uncached.errors + cached.errors:
        print(f"ERROR: {error}")
    if uncached.errors or cached.errors:
        return 1
    if args.no_raw:
        return 0
    from summarizer.errors import SummarizerError
    try:
        raw, problems = raw_phase(client, firsts, brands, args, rng)
    except SummarizerError as exc:
        print(f"raw-table comparison not run: {exc} (or pass --no-raw)")
        return 2
    print(raw.line().replace("req/s", "q/s  "))
    if raw.latencies and uncached.latencies:
        ratio = statistics.median(raw.latencies) / statistics.median(uncached.latencies)
        print(f"raw tables / uncached API, p50: {ratio:,.0f}x")
    for problem in problems:
        print(f"MISMATCH: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
