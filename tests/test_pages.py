"""The dashboard pages in a real headless Chromium, against `summarizer serve` on real MariaDB data.

One server and one browser serve every test of the module (starting them is the slow part). The data
is synthetic (summarizer.synth): one good full refresh, one failed (a raw row uses the label reserved for all
marketplaces), then a good incremental one. Each chart's numbers are read back from its table in the
DOM and compared with a direct API request for the same parameters. Screenshots of each page go to
$SUMMARIZER_SCREENSHOTS when set (docs/screenshots/ for the README), else to the test's tmp dir.

Needs chromium, chromium-driver (Debian packages) and selenium; skipped, saying so, without them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from summarizer import Summarizer
from summarizer.errors import RefreshFailed
from summarizer.months import add_months
from summarizer.synth import Shape, generate

from .databases import env_for, make_app, scratch_database
from .test_api_http import _wait_until_up, free_port

pytestmark = [pytest.mark.slow, pytest.mark.mysql]

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,1400")
SETTINGS = {"api_revenue_metrics": "revenue", "api_cost_metrics": "cogs,refunds"}
PAGES = ("brands", "categories", "profitability", "operations")


def _missing() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    if not Path(CHROMEDRIVER).exists() or not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


@dataclass
class Site:
    base: str
    driver: Any
    app: Summarizer
    shots: Path
    url: Any
    tmp: Path

    def api(self, endpoint: str, params: Any) -> Any:
        response = httpx.get(f"{self.base}/api/{endpoint}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def open(self, fragment: str) -> None:
        self.driver.get(f"{self.base}/#/{fragment}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.driver.execute_script(
                "const s = document.querySelector('#view section'); return s && s.dataset.state;")
            if state == "ready":
                return
            assert state != "error", self.driver.find_element("css selector", "#view").text
            time.sleep(0.05)
        raise AssertionError(f"page not ready within {timeout}s: {self.driver.current_url}")

    def numbers(self, chart: str) -> dict[str, dict[str, str]]:
        """A chart's table: series key -> row label -> the text in the cell."""
        return self.driver.execute_script("""
            const table = document.querySelector(`table[data-numbers="${arguments[0]}"]`);
            if (!table) return null;
            const keys = [...table.tHead.rows[0].cells].slice(1).map((c) => c.dataset.key);
            const out = Object.fromEntries(keys.map((k) => [k, {}]));
            for (const row of table.tBodies[0].rows) {
              const label = row.cells[0].textContent;
              keys.forEach((k, i) => {
                const text = row.cells[i + 1].textContent;
                if (text !== '') out[k][label] = text;
              });
            }
            return out;""", chart)

    def texts(self, selector: str) -> list[str]:
        return list(self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", selector))

    def state(self) -> dict[str, str]:
        fragment = urlsplit(self.driver.current_url).fragment
        return {k: v[0] for k, v in parse_qs(fragment.partition("?")[2]).items()}

    def choose(self, name: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select
        before = self.driver.current_url
        Select(self.driver.find_element("css selector", f"select[name={name}]")).select_by_value(value)
        deadline = time.monotonic() + 10
        while self.driver.current_url == before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.wait_ready()

    def shoot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))


@pytest.fixture(scope="module")
def site(server_urls, tmp_path_factory) -> Iterator[Site]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    server = server_urls["mysql"]
    if isinstance(server, str):
        pytest.skip(server)
    tmp = tmp_path_factory.mktemp("pages")
    shots = Path(os.environ.get("SUMMARIZER_SCREENSHOTS") or tmp)
    shots.mkdir(parents=True, exist_ok=True)
    for url in scratch_database(server, f"summarizer_p_{uuid.uuid4().hex[:10]}"):
        app = make_app(url, tmp, **SETTINGS)
        try:
            _history(app)
            with _server(url, tmp) as base, _browser() as driver:
                yield Site(base, driver, app, shots, url, tmp)
        finally:
            app.close()


def _history(app: Summarizer) -> None:
    """Synthetic data; a good full refresh, a failed one, a good incremental one."""
    shape = Shape(rows=40_000, months=12, asins=800, brands=40, categories=8)
    with app.dialect.engine.connect() as conn:
        generate(conn, shape)
    app.init()
    app.refresh()
    first, last = shape.first_month, add_months(shape.first_month, shape.months - 1)
    with app.dialect.engine.begin() as conn:  # the label reserved for all marketplaces: the full refresh fails
        conn.execute(text("INSERT INTO financials (asin, marketplace, month, metric, value) "
                          "VALUES ('B000000001', 'ALL', :month, 'revenue', 1)"), {"month": first})
    with pytest.raises(RefreshFailed):
        app.refresh()
    with app.dialect.engine.begin() as conn:
        conn.execute(text("DELETE FROM financials WHERE marketplace = 'ALL'"))
    app.refresh(months=[last])


class _server:
    def __init__(self, url: Any, tmp: Path, **settings: str) -> None:
        self.url, self.tmp, self.settings = url, tmp, {**SETTINGS, **settings}

    def __enter__(self) -> str:
        port = free_port()
        self.log = (self.tmp / f"serve-{port}.log").open("w")
        command = [sys.executable, "-m", "summarizer", "serve", "--port", str(port)]
        self.proc = subprocess.Popen(command, env=env_for(self.url, **self.settings), stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=self.tmp)
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, self.proc)
        return base

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


class _browser:
    def __enter__(self) -> Any:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        self.profile = tempfile.TemporaryDirectory()
        options = webdriver.ChromeOptions()
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile.name}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        return self.driver

    def __exit__(self, *exc: object) -> None:
        self.driver.quit()
        self.profile.cleanup()


# --- the tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES)
def test_each_page_loads_without_console_errors_or_other_hosts(site: Site, page: str):
    site.driver.get_log("browser")  # drop what came before
    site.open(page)
    charts = site.driver.find_elements("css selector", "figure[data-chart] svg")
    assert charts, f"{page}: no chart drawn"
    assert site.driver.execute_script("return performance.getEntriesByName('first-chart').length") == 1
    errors = [e for e in site.driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    urls = site.driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert urls and all(u.startswith(site.base + "/") for u in urls), urls
    site.shoot(page)


def _months(site: Site) -> list[str]:
    return list(site.api("meta", {})["data"]["months"])


def _dashboard_totals(site: Site, params: dict[str, str]) -> dict[int, Decimal]:
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for row in site.api("dashboard-data", params)["data"]:
        totals[row["brand_id"]] += Decimal(row["value"])
    return totals


def _expected_brand_chart(site: Site, params: dict[str, str], top: int) -> dict[str, dict[str, str]]:
    totals = _dashboard_totals(site, params)
    ids = sorted(totals, key=lambda b: (-totals[b], b))[:top]
    want: dict[str, dict[str, str]] = {str(b): {} for b in ids}
    for row in site.api("dashboard-data", {**params, "brand_id": ids})["data"]:
        want[str(row["brand_id"])][row["month"]] = row["value"]
    return want


def test_brands_chart_holds_the_api_numbers_and_follows_the_marketplace(site: Site):
    months = _months(site)
    params = {"from": months[0], "to": months[-1], "marketplace": "ALL", "metric": "revenue"}
    site.open(f"brands?from={months[0]}&to={months[-1]}&marketplace=ALL&metric=revenue&top=5")
    shown = site.numbers("brand-months")
    assert shown == _expected_brand_chart(site, params, 5)
    names = site.texts("[data-table=brands-totals] tbody tr td:first-child")
    assert "Unassigned" in names and any(n.startswith("Brand ") for n in names), names
    site.choose("marketplace", "JP")
    assert site.state()["marketplace"] == "JP"
    jp = site.numbers("brand-months")
    assert jp == _expected_brand_chart(site, {**params, "marketplace": "JP"}, 5) and jp != shown
    site.driver.back()  # the URL is the state: back gives the ALL view again
    site.wait_ready()
    assert site.state()["marketplace"] == "ALL" and site.numbers("brand-months") == shown


def test_categories_chart_holds_the_api_numbers_and_follows_the_month_range(site: Site):
    months = _months(site)
    site.open(f"categories?from={months[0]}&to={months[-1]}&metric=units")
    shown = site.numbers("category-months")
    rows = site.api("categories-dashboard-data", {"from": months[0], "to": months[-1], "metric": "units"})["data"]
    want: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        want[str(row["category_id"])][row["month"]] = row["value"]
    assert shown == {k: want[k] for k in shown} and len(shown) == min(10, len(want))
    site.choose("from", months[2])
    assert site.state()["from"] == months[2]
    later = site.numbers("category-months")
    assert all(set(v) <= set(months[2:]) for v in later.values()) and later != shown
    assert later == {k: {m: v for m, v in want[k].items() if m >= months[2]} for k in later}


def test_profitability_shows_the_api_totals_and_its_metrics(site: Site):
    months = _months(site)
    site.open(f"profitability?from={months[0]}&to={months[-1]}&marketplace=US&by=brand&top=15")
    assert "revenue" in site.driver.find_element("css selector", "[data-metrics=revenue]").text
    assert "cogs + refunds" in site.driver.find_element("css selector", "[data-metrics=cost]").text
    shown = site.numbers("profit-top")
    sums: dict[str, dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    params = {"from": months[0], "to": months[-1], "marketplace": "US", "by": "brand"}
    for row in site.api("profitability-data", params)["data"]:
        for field in ("revenue", "cost", "profit"):
            sums[field][row["brand_id"]] += Decimal(row[field])
    top = sorted(sums["profit"], key=lambda b: (-sums["profit"][b], b))[:15]
    assert len(site.texts("table[data-numbers=profit-top] tbody th")) == 15
    assert len(site.texts("[data-table=profit-totals] tbody tr")) == len(sums["profit"])  # every brand
    for field in ("revenue", "cost", "profit"):
        assert sorted(Decimal(v) for v in shown[field].values()) == sorted(sums[field][b] for b in top), field


def test_operations_shows_the_failed_run_as_failed(site: Site):
    site.open("operations")
    runs = site.app.runs.latest(3)
    rows = site.driver.find_elements("css selector", "[data-table=runs] tbody tr")
    cells = [(r.get_attribute("data-id"), r.find_elements("css selector", "td")[1]) for r in rows]
    statuses = {i: f"{c.get_attribute('class')} {c.text}" for i, c in cells}
    assert statuses == {str(r.id): f"status-{r.status} {r.status}" for r in runs}
    assert [r.status for r in runs] == ["succeeded", "failed", "succeeded"]
    steps = site.numbers("runs-steps")
    failed = runs[1]
    assert f"#{failed.id} ✗" in steps["other"] and f"#{runs[0].id}" in steps["tier2"]
    full = runs[2]
    assert steps["tier2"][f"#{full.id}"] == f"{full.steps['tier2']:.3f}"
    assert steps["months"][f"#{runs[0].id}"] == f"{runs[0].steps['months']:.3f}"  # the incremental run's months
    assert site.driver.find_element("css selector", "[data-freshness]").get_attribute("data-freshness") == "ok"
    share = site.numbers("unassigned-share")["share"]
    api = {r["tier"]: r["share"] for r in site.api("unassigned", {})["data"]}
    assert share == {tier: f"{100 * s:.3f}" for tier, s in api.items()}


def test_pages_page_through_answers_when_the_server_allows_fewer_rows(site: Site):
    """[api] max_limit below what a page asks for: it pages through meta.next and shows every row."""
    months = _months(site)
    fragment = f"profitability?from={months[0]}&to={months[-1]}&marketplace=ALL&by=brand&top=5"
    site.open(fragment)
    everything = site.texts("[data-table=profit-totals] tbody tr td:first-child")
    top = site.numbers("profit-top")
    with _server(site.url, site.tmp, api_max_limit="7") as capped:
        site.driver.get(f"{capped}/#/{fragment}")
        site.wait_ready()
        assert sorted(site.texts("[data-table=profit-totals] tbody tr td:first-child")) == sorted(everything)
        assert site.numbers("profit-top") == top and len(everything) > 7
