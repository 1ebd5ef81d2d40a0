"""Load test of the reads: the three dashboard questions asked by many clients at once, idle and during a full refresh.

The questions (benchmarks/measure.py asks the same ones, one at a time), each over a window of
--months months drawn at random, its brand, category, marketplace and metric too, so answers are
uncached whatever the cache (the server this starts also runs with its cache off):

  one brand       /api/dashboard-data, one brand, ALL marketplaces, every metric
  one category    /api/profitability-data, one category's revenue, cost and profit
  all brands      /api/dashboard-data, one marketplace and one metric, every brand (the first page)

How a client asks (--via), so the latency can be split between the client, the HTTP server and the database:

  http    GET over a keep-alive connection to `summarizer serve`, started here on loopback with
          [api] threads = --threads (or --url: a running server); the Server-Timing header gives the
          server's own time (queue, db, app, total), beside what the client measured
  sql     the statement the read API would run for that request, as plain SQL over the driver's
          cursor (autocommit), straight to the summaries
  reader  the library's Reader in the client process (summarizer.serve.read), cache off

Each client is a process of its own (no GIL shared between clients). Closed loop by default: ask,
wait for the answer, sleep --think seconds, ask again; --rate R is an open loop instead: R requests
per second over all clients, each timed from when it was due, so queueing shows. Phases (--phases,
KIND:CLIENTS, comma-separated): `idle` asks for --seconds; `refresh` asks while full refreshes
(`summarizer refresh`, a process of its own) run back to back for --seconds (--refresh loop) or
while one runs (--refresh once). Prints p50/p99 per question per phase and the load average.

    SUMMARIZER_DATABASE_URL=mysql+pymysql://root@127.0.0.1:3306/bench python -m benchmarks.loadtest \\
        --via http --phases idle:1,idle:20,refresh:20 --seconds 30 --json-out load.json
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

QUESTIONS = ("one brand", "one category", "all brands")
VIAS = ("http", "sql", "reader")
PHASE_KINDS = ("idle", "refresh")
WARM_UP = 3  # requests each client asks before the phase starts, not counted
SQL_SET = 200  # statements each sql client renders per question before the phase starts


# --- what is asked ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ask:
    """One request: which question, the endpoint and its query parameters."""

    question: int  # index into QUESTIONS
    endpoint: str
    items: tuple[tuple[str, str], ...]

    def path(self) -> str:
        return f"/api/{self.endpoint}?{urlencode(self.items)}"


@dataclass(frozen=True)
class Space:
    """What the questions are drawn from: the summaries' months, ids, marketplaces and metrics."""

    months: tuple[str, ...]
    brands: tuple[int, ...]
    categories: tuple[int, ...]
    marketplaces: tuple[str, ...]
    metrics: tuple[str, ...]
    window: int = 12

    def draw(self, question: int, rng: random.Random) -> Ask:
        first = rng.randrange(len(self.months) - self.window + 1)
        span = (("from", self.months[first]), ("to", self.months[first + self.window - 1]))
        if question == 0:
            return Ask(0, "dashboard-data", (*span, ("brand_id", str(rng.choice(self.brands)))))
        if question == 1:
            return Ask(1, "profitability-data", (*span, ("category_id", str(rng.choice(self.categories)))))
        return Ask(2, "dashboard-data", (*span, ("marketplace", rng.choice(self.marketplaces)),
                                         ("metric", rng.choice(self.metrics))))


def discover(app: Any, window: int) -> Space:
    """The space of questions from the live summaries (a brand and a category must have rows)."""
    from sqlalchemy import select

    from summarizer.serve.read import Reader
    reader = Reader(app)
    meta, brand = reader.meta(), app.schema.live().brand
    with app.dialect.engine.connect() as conn:
        brands = conn.execute(select(brand.c.brand_id).distinct()).scalars().all()
        categories = conn.execute(select(brand.c.category_id).distinct()).scalars().all()
    markets = [m for m in meta["marketplaces"] if m != meta["all_marketplace"]] or meta["marketplaces"]
    if len(meta["months"]) < window or not brands:
        raise SystemExit(f"the summaries hold {len(meta['months'])} months and {len(brands)} brands: refresh "
                         f"first, or ask for --months {len(meta['months'])} or fewer")
    return Space(tuple(meta["months"]), tuple(sorted(brands)), tuple(sorted(categories)), tuple(markets),
                 tuple(meta["metrics"]), window)


# --- one client (a process) ------------------------------------------------------------------------

@dataclass
class Client:
    """What one client process needs; everything picklable (the process is spawned)."""

    via: str
    space: Space
    seed: int
    think: float = 0.0
    rate: float = 0.0  # this client's requests per second; 0: closed loop
    url: str = ""  # http
    environ: dict[str, str] = field(default_factory=dict)  # sql, reader: the summarizer settings


Sample = tuple[int, float, float, float, float, int]  # question, latency s, server total ms, db ms, queue ms, status


def client_main(client: Client, ready: Any, go: Any, stop: Any, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the clients
    try:
        asker = make_asker(client)
        rng = random.Random(client.seed)
        for _ in range(WARM_UP):
            asker(client.space.draw(rng.randrange(len(QUESTIONS)), rng))
        ready.put(os.getpid())
        go.wait()
        results.put(ask_until(client, asker, rng, stop))
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which then fails
        ready.put(f"client failed: {type(exc).__name__}: {exc}")
        results.put([])


def ask_until(client: Client, asker: Any, rng: random.Random, stop: Any) -> list[Sample]:
    samples: list[Sample] = []
    question, due = rng.randrange(len(QUESTIONS)), time.monotonic()
    while not stop.is_set():
        if client.rate:
            due += rng.expovariate(client.rate)  # Poisson arrivals
            wait = due - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
        ask = client.space.draw(question, rng)
        start = due if client.rate else time.monotonic()
        status, total, db, queue = asker(ask)
        samples.append((question, time.monotonic() - start, total, db, queue, status))
        question = (question + 1) % len(QUESTIONS)
        if client.think and stop.wait(client.think):
            break
    return samples


def make_asker(client: Client) -> Any:
    """A function asking one Ask and returning (status, server total ms, db ms, queue ms); NaN where unknown."""
    if client.via == "http":
        return http_asker(client.url)
    os.environ.update(client.environ)
    from summarizer import Summarizer, load_config
    app = Summarizer(load_config(os.environ.get("SUMMARIZER_CONFIG"), required=False), pool_size=1)
    return sql_asker(app, client) if client.via == "sql" else reader_asker(app)


def http_asker(url: str) -> Any:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connection = [http.client.HTTPConnection(host, port, timeout=60)]

    def ask(item: Ask) -> tuple[int, float, float, float]:
        try:
            connection[0].request("GET", item.path())
            response = connection[0].getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            connection[0].close()  # the server closed an idle keep-alive connection: open another
            connection[0] = http.client.HTTPConnection(host, port, timeout=60)
            connection[0].request("GET", item.path())
            response = connection[0].getresponse()
        response.read()
        timing = server_timing(response.getheader("Server-Timing", ""))
        nan = math.nan
        return response.status, timing.get("total", nan), timing.get("db", nan), timing.get("queue", nan)
    return ask


def server_timing(value: str) -> dict[str, float]:
    """``queue;dur=0.2, db;dur=1.1`` -> {"queue": 0.2, "db": 1.1} (milliseconds)."""
    found = {}
    for part in value.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            found[name] = float(duration)
    return found


def sql_asker(app: Any, client: Client) -> Any:
    """Plain SQL: the read API's statement for the request, rendered with its values, run over the driver's cursor."""
    from summarizer.serve.read import Reader
    reader, rng = Reader(app), random.Random(client.seed + 1)
    rendered: dict[int, list[str]] = {}
    for question in range(len(QUESTIONS)):
        asks = [client.space.draw(question, rng) for _ in range(SQL_SET)]
        rendered[question] = [app.dialect.render(reader.statement(a.endpoint, reader.parse(a.endpoint, a.items)))
                              for a in asks]
    raw = app.read_dialect.engine.raw_connection()  # autocommit, as the read API's connections
    cursor, counter, nan = raw.cursor(), [0], math.nan

    def ask(item: Ask) -> tuple[int, float, float, float]:
        counter[0] += 1
        started = time.perf_counter()
        cursor.execute(rendered[item.question][counter[0] % SQL_SET])
        cursor.fetchall()
        return 200, nan, (time.perf_counter() - started) * 1000, nan
    return ask


def reader_asker(app: Any) -> Any:
    from summarizer.serve import timing
    from summarizer.serve.read import Reader
    reader, nan = Reader(app), math.nan

    def ask(item: Ask) -> tuple[int, float, float, float]:
        timing.db_reset()
        started = time.perf_counter()
        reader.answer(item.endpoint, item.items)
        return 200, (time.perf_counter() - started) * 1000, timing.db_seconds() * 1000, nan
    return ask


# --- a phase ---------------------------------------------------------------------------------------

@dataclass
class PhaseResult:
    name: str
    kind: str
    clients: int
    seconds: float
    samples: list[Sample]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    refreshes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        per: dict[str, Any] = {}
        for index, name in enumerate(QUESTIONS):
            mine = [s for s in self.samples if s[0] == index]
            good = [s for s in mine if s[5] == 200]
            per[name] = {"n": len(good), "errors": len(mine) - len(good), **figures("", [s[1] * 1000 for s in good]),
                         **figures("server_", [s[2] for s in good]), **figures("db_", [s[3] for s in good]),
                         **figures("queue_", [s[4] for s in good])}
        return {"name": self.name, "kind": self.kind, "clients": self.clients, "seconds": self.seconds,
                "requests": len(self.samples), "per_second": len(self.samples) / self.seconds if self.seconds else 0,
                "load_before": self.load_before, "load_after": self.load_after, "questions": per,
                "refreshes": self.refreshes, "problems": self.problems}


def figures(prefix: str, values: list[float]) -> dict[str, float | None]:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return {}
    return {f"{prefix}p50_ms": percentile(values, 50), f"{prefix}p99_ms": percentile(values, 99)}


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest rank."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


def run_phase(kind: str, clients: int, args: argparse.Namespace, space: Space, url: str,
              environ: dict[str, str], rng: random.Random) -> PhaseResult:
    context = multiprocessing.get_context("spawn")
    ready, results, go, stop = context.Queue(), context.Queue(), context.Event(), context.Event()
    rate = args.rate / clients if args.rate else 0.0
    procs = [context.Process(target=client_main, daemon=True, args=(
        Client(args.via, space, rng.randrange(2**31), args.think, rate, url, environ), ready, go, stop, results))
        for _ in range(clients)]
    for proc in procs:
        proc.start()
    started_up = [ready.get(timeout=120) for _ in procs]
    problems = [s for s in started_up if isinstance(s, str)]
    load_before = os.getloadavg()
    refreshes: list[dict[str, Any]] = []
    began = time.monotonic()
    go.set()
    if problems:
        stop.set()
    elif kind == "refresh":
        refreshes = refresh_while(args, environ, began)
    else:
        time.sleep(args.seconds)
    stop.set()
    seconds = time.monotonic() - began
    samples = [sample for _ in procs for sample in results.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=30)
    name = f"{kind}, {clients} client{'s' if clients > 1 else ''}"
    problems += [f"refresh {r['number']} exited {r['exit']}: {r['tail']}" for r in refreshes if r["exit"] != 0]
    return PhaseResult(name, kind, clients, seconds, samples, load_before, os.getloadavg(), refreshes, problems)


def refresh_while(args: argparse.Namespace, environ: dict[str, str], began: float) -> list[dict[str, Any]]:
    """Full refreshes, one process each, back to back for --seconds (or one, --refresh once)."""
    done: list[dict[str, Any]] = []
    while True:
        start = time.monotonic()
        with tempfile.TemporaryFile("w+") as log:
            exit_code = subprocess.run([sys.executable, "-m", "summarizer", "refresh", "--quiet"], env=environ,
                                       stdout=subprocess.DEVNULL, stderr=log, check=False).returncode
            log.seek(0)
            tail = log.read()[-300:]
        done.append({"number": len(done) + 1, "seconds": time.monotonic() - start, "exit": exit_code, "tail": tail})
        if args.refresh == "once" or time.monotonic() - began >= args.seconds or exit_code != 0:
            return done


# --- the server ------------------------------------------------------------------------------------

def start_server(environ: dict[str, str], threads: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {**environ, "SUMMARIZER_API_THREADS": str(threads)}
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "summarizer", "serve", "--port", str(port)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"summarizer serve exited early: {log.read_text()[-500:]}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/api/health")
            connection.getresponse().read()
            return server, url
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    server.terminate()
    raise SystemExit("summarizer serve did not answer within 60 s")


def loopback(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"--url: expected http://HOST:PORT, got {url!r}")
    if not ipaddress.ip_address(socket.gethostbyname(parts.hostname)).is_loopback:
        raise SystemExit(f"--url: {parts.hostname} is not a loopback address; this load test only runs on loopback")
    return url


# --- the run ---------------------------------------------------------------------------------------

def parse_phases(text: str) -> list[tuple[str, int]]:
    phases = []
    for part in text.split(","):
        kind, _, count = part.strip().partition(":")
        if kind not in PHASE_KINDS or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"expected KIND:CLIENTS with KIND one of {', '.join(PHASE_KINDS)}, "
                                             f"got {part!r}")
        phases.append((kind, int(count)))
    return phases


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--via", choices=VIAS, default="http", help="how clients ask (default http)")
    parser.add_argument("--phases", type=parse_phases, default=parse_phases("idle:1,idle:20,refresh:20"),
                        help="KIND:CLIENTS,... with KIND idle or refresh (default idle:1,idle:20,refresh:20)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--refresh", choices=("loop", "once"), default="loop",
                        help="refresh phase: full refreshes back to back for --seconds, or one (default loop)")
    parser.add_argument("--think", type=float, default=0.0, help="closed loop: seconds a client waits between asks")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second over all clients")
    parser.add_argument("--months", type=int, default=12, help="months per question (default 12)")
    parser.add_argument("--threads", type=int, default=8, help="[api] threads of the server started here")
    parser.add_argument("--url", default=None, help="http: a running server on loopback instead of starting one "
                        "(its cache should be off: [api] cache_bytes = 0)")
    parser.add_argument("--config", default=None, help="summarizer config (the environment, e.g. "
                        "SUMMARIZER_DATABASE_URL, overrides it)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the clock)")
    parser.add_argument("--json-out", type=Path, default=None, help="write the report as JSON to this file")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.think < 0 or args.rate < 0 or args.months < 1 or not 1 <= args.threads <= 256:
        parser.error("--seconds and --months must be positive, --think and --rate not negative, --threads 1..256")
    return args


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The settings every process of the run gets: the caller's, the cache off, no staleness 503s."""
    env = {**os.environ, "SUMMARIZER_API_CACHE_BYTES": "0", "SUMMARIZER_API_REDIS_URL": "",
           "SUMMARIZER_API_MAX_AGE": "3650d"}
    if args.config:
        env["SUMMARIZER_CONFIG"] = str(Path(args.config).resolve())
    return env


def run(args: argparse.Namespace, echo: Any = print) -> dict[str, Any]:
    from summarizer import Summarizer, load_config
    environ = environment(args)  # passed to every process it starts: this process's own environment stays as it was
    app = Summarizer(load_config(args.config, environ, required=args.config is not None))
    space = discover(app, args.months)
    engine = app.dialect.name
    app.close()
    rng = random.Random(args.seed if args.seed is not None else time.time_ns())
    server, url = None, ""
    with tempfile.TemporaryDirectory() as scratch:
        if args.via == "http":
            server, url = (None, loopback(args.url)) if args.url else start_server(
                environ, args.threads, Path(scratch) / "serve.log")
        echo(f"{engine}, via {args.via}: {len(space.brands)} brands, {len(space.categories)} categories, "
             f"{len(space.months)} months, {args.months}-month questions; "
             + (f"open loop {args.rate:g} req/s" if args.rate else f"closed loop, think {args.think:g} s"))
        try:
            phases = []
            for kind, clients in args.phases:
                phase = run_phase(kind, clients, args, space, url, environ, rng)
                phases.append(phase.report())
                echo(render_phase(phases[-1], args.via))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    return {"engine": engine, "via": args.via, "threads": args.threads if args.via == "http" and not args.url else None,
            "think": args.think, "rate": args.rate, "months": args.months, "cpus": os.cpu_count(), "phases": phases,
            "space": {k: len(v) for k, v in asdict(space).items() if isinstance(v, tuple)}}


def render_phase(phase: dict[str, Any], via: str) -> str:
    load = "/".join(f"{x:.1f}" for x in phase["load_after"])
    lines = [f"{phase['name']}: {phase['requests']} requests in {phase['seconds']:.1f}s "
             f"({phase['per_second']:.0f}/s), load average {load}"
             + "".join(f"; refresh {r['seconds']:.1f}s" for r in phase["refreshes"])]
    server = via == "http"
    lines.append(f"  {'question':<14}{'n':>7}{'err':>5}{'p50 ms':>10}{'p99 ms':>10}"
                 + (f"{'server p50/p99':>18}{'db p50/p99':>16}{'queue p50/p99':>17}" if server else
                    f"{'db p50/p99':>16}"))
    for name, q in phase["questions"].items():
        line = (f"  {name:<14}{q['n']:>7}{q['errors']:>5}{q.get('p50_ms', math.nan):>10.2f}"
                f"{q.get('p99_ms', math.nan):>10.2f}")
        lines.append(line + (f"{_pair(q, 'server_'):>18}{_pair(q, 'db_'):>16}{_pair(q, 'queue_'):>17}" if server
                             else f"{_pair(q, 'db_'):>16}"))
    lines += [f"  PROBLEM: {p}" for p in phase["problems"]]
    return "\n".join(lines)


def _pair(question: dict[str, Any], prefix: str) -> str:
    if prefix + "p50_ms" not in question:
        return "-"
    return f"{question[prefix + 'p50_ms']:.1f}/{question[prefix + 'p99_ms']:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(p["problems"] or any(q["errors"] for q in p["questions"].values()) for p in report["phases"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
