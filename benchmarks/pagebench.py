"""Time each dashboard page to its first chart, in headless Chromium, against `summarizer serve`.

Starts `python -m summarizer serve` on the database given (its summaries already refreshed, or built
here with --generate), opens each page in headless Chromium through Selenium, and reports the time
from navigation start to the `first-chart` performance mark the page sets once its first chart is
drawn. The first visit of each page runs on an empty answer cache (cold); the others are warm (the
cache a dashboard sees after the first user). Needs chromium, chromium-driver and selenium.

    python -m benchmarks.pagebench --url mysql+pymysql://root@127.0.0.1:3306/pagebench --generate --rows 5000000
    python -m benchmarks.pagebench --url ... --repeat 5 --json-out pagebench.json    # reuse the data there

--generate replaces the source tables (financials, products, brands, categories) with synthetic data
in the benchmark's `field` shape (20,000 ASINs, 2,000 brands, 200 categories, 40 raw rows per drawn
key): point it at a scratch database.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from summarizer import Summarizer, load_config
from summarizer.synth import Shape, create_source_tables, generate

PAGES = ("brands", "categories", "profitability", "operations")
MARK = "first-chart"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="database URL (SQLAlchemy form)")
    parser.add_argument("--generate", action="store_true", help="make synthetic data, init and refresh first")
    parser.add_argument("--rows", type=int, default=5_000_000, help="raw rows --generate makes (default 5,000,000)")
    parser.add_argument("--repeat", type=int, default=5, help="warm visits of each page (default 5)")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver", help="chromedriver path")
    parser.add_argument("--json-out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


def environment(url: str) -> dict[str, str]:
    return {**os.environ, "SUMMARIZER_DATABASE_URL": url}


def prepare(url: str, rows: int) -> None:
    app = Summarizer(load_config(Path("/nonexistent.ini"), environment(url)))
    try:
        shape = Shape(rows=rows, asins=20_000, brands=2_000, categories=200, rows_per_key=40)
        started = time.perf_counter()
        with app.dialect.engine.connect() as conn:
            create_source_tables(conn, drop=True)
            counts = generate(conn, shape)
        print(f"generated {counts} in {time.perf_counter() - started:.1f}s", flush=True)
        app.init(source_indexes=True)
        started = time.perf_counter()
        app.refresh()
        print(f"full refresh in {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        app.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(url: str) -> Iterator[str]:
    """`summarizer serve` on a free port; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "summarizer", "serve", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, env=environment(url), stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base, proc)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def wait_until_up(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("summarizer serve exited early")
        try:
            urllib.request.urlopen(f"{base}/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"summarizer serve did not answer within {timeout}s")


@contextmanager
def browser(chromedriver: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def time_to_first_chart(driver: Any, url: str, timeout: float = 30) -> float:
    """Milliseconds from navigation start to the page's first-chart mark (a fresh page load)."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + timeout
    script = f"const m = performance.getEntriesByName('{MARK}'); return m.length ? m[0].startTime : null;"
    while time.monotonic() < deadline:
        found = driver.execute_script(script)
        if found is not None:
            return float(found)
        time.sleep(0.01)
    raise SystemExit(f"{url}: no {MARK} mark within {timeout}s")


def api_requests(driver: Any) -> list[dict[str, Any]]:
    """The page's API requests so far: path and milliseconds from start to the last byte."""
    script = ("return performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/'))"
              ".map((e) => [e.name, e.startTime, e.responseEnd - e.startTime]);")
    return [{"url": url.split("/api/", 1)[1], "start_ms": round(start, 1), "ms": round(ms, 1)}
            for url, start, ms in driver.execute_script(script)]


def measure(driver: Any, base: str, repeat: int) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for page in PAGES:
        url = f"{base}/#/{page}"
        cold = time_to_first_chart(driver, url)
        cold_requests = api_requests(driver)
        warm = [time_to_first_chart(driver, url) for _ in range(repeat)]
        figures[page] = {"cold_ms": round(cold, 1), "warm_ms": [round(w, 1) for w in warm],
                         "warm_median_ms": round(statistics.median(warm), 1) if warm else None,
                         "cold_requests": cold_requests, "warm_requests": api_requests(driver)}
    return figures


def report(figures: dict[str, dict[str, Any]]) -> None:
    print(f"{'page':<15}{'cold ms':>10}{'warm median ms':>17}{'warm max ms':>14}")
    for page, f in figures.items():
        print(f"{page:<15}{f['cold_ms']:>10.1f}{f['warm_median_ms']:>17.1f}{max(f['warm_ms']):>14.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url = make_url(args.url).render_as_string(hide_password=False)
    if args.generate:
        prepare(url, args.rows)
    with server(url) as base, browser(args.chromedriver) as driver:
        figures = measure(driver, base, args.repeat)
    report(figures)
    if args.json_out:
        args.json_out.write_text(json.dumps({"pages": figures, "cpus": os.cpu_count(),
                                             "load_average": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
