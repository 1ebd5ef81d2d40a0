"""A Spark standalone cluster of the test's own: a master and workers, each its own JVM, on loopback ports.

pyspark's wheel (4.x) ships ``bin/`` and ``sbin/`` but not ``sbin/start-master.sh`` or
``sbin/start-worker.sh``. Each daemon is started instead with the installation's own launcher,
``bin/spark-class org.apache.spark.deploy.master.Master`` (``...deploy.worker.Worker``), as a child
process whose PID we hold; spark-class execs the JVM, so that PID is the JVM's. Stopping sends
SIGTERM to that PID and waits (a worker kills its executors as it stops); then anything still in the
daemon's own process group (an executor JVM), whose id is that PID, gets SIGKILL before the daemon is
reaped, so the id cannot have been reused. :func:`standalone` is a context manager that stops
everything on the way out, whatever happened inside::

    with sparkcluster.standalone(workers=2) as cluster:
        cluster.master_url          # spark://127.0.0.1:PORT
        cluster.status()            # the master's /json/: its workers and applications
        cluster.worker_status(0)    # worker 0's /json/: the executors it runs

Every port is a free loopback port of its own (the master's REST submission server, on a fixed
port by default, is switched off). The daemons run with small heaps (``SPARK_DAEMON_MEMORY``) and the
quick JIT compiler only (``QUICK_JVM``, which halved the CPU the test module used); each worker
offers ``cores`` and ``memory`` to applications. The machine's JDBC jars reach the
executors the way a real cluster gets them: the driver ships them (``spark.jars``). Parquet paths
are local paths, valid on the workers because they run on this machine.

:func:`missing` says why a cluster cannot be started here (no pyspark, no Java), for a test to skip.
The benchmark (``benchmarks/sparkbench.py``) starts its clusters with this module too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .servers import free_port

START_TIMEOUT = 120.0  # two JVMs at once on a busy 2-core machine take their time
STOP_TIMEOUT = 30.0
DAEMON_MEMORY = "256m"  # the master's and each worker's own heap, not what they offer to applications
# Short-lived JVMs on a small machine: the quick JIT compiler only and one GC thread cost a daemon less CPU
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
JARS = ("/usr/share/java/mariadb-java-client.jar", "/usr/share/java/postgresql.jar")


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def missing() -> str | None:
    """Why a standalone cluster cannot be started here, or None."""
    try:
        home = spark_home()
    except ImportError:
        return "pyspark is not installed: pip install 'summarizer-tiers[spark]'"
    if shutil.which("java") is None:
        return "no java on the PATH (Debian: default-jre-headless)"
    if not (home / "bin" / "spark-class").is_file():
        return f"{home} has no bin/spark-class"
    absent = [jar for jar in JARS if not Path(jar).is_file()]
    return f"no JDBC driver {', '.join(absent)} (Debian: libmariadb-java libpostgresql-jdbc-java)" if absent else None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


@dataclass
class Daemon:
    """One JVM of the cluster: its process, its log, and the port of its web UI (which serves /json/)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    web_port: int

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the PID (SIGKILL if it has not exited in time); then, while its exited JVM is not yet
        reaped (so neither its PID nor its process group id can be reused), SIGKILL to what is left in its
        process group: the executors of a worker that died before it could stop them."""
        pid = self.process.pid
        if self.process.returncode is None:  # not reaped yet (os.kill: Popen.send_signal would reap it first)
            os.kill(pid, signal.SIGTERM)
            if not self._exited(STOP_TIMEOUT):
                os.kill(pid, signal.SIGKILL)
                self._exited(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait()

    def _exited(self, timeout: float) -> bool:
        """Whether the process exited within ``timeout`` seconds, leaving it unreaped."""
        deadline = time.monotonic() + timeout
        while os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class Cluster:
    """A master and its workers under ``root``; :meth:`start` brings them up, :meth:`stop` takes them down."""

    def __init__(self, root: Path, workers: int, cores: int, memory: str) -> None:
        self.root, self.worker_count, self.cores, self.memory = root, workers, cores, memory
        self.port = free_port()
        self.master: Daemon | None = None
        self.workers: list[Daemon] = []
        self.properties = root / "spark-defaults.conf"
        self.properties.write_text("spark.master.rest.enabled false\n")

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        """The master's own account (``/json/``): ``workers``, ``aliveworkers``, ``activeapps``, ..."""
        assert self.master is not None
        result: dict[str, Any] = _get_json(f"http://127.0.0.1:{self.master.web_port}/json/")
        return result

    def worker_status(self, index: int) -> dict[str, Any]:
        """A worker's own account (``/json/``): ``executors`` lists those it runs, with their ``appid``."""
        result: dict[str, Any] = _get_json(f"http://127.0.0.1:{self.workers[index].web_port}/json/")
        return result

    def pids(self) -> list[int]:
        return [d.process.pid for d in ([self.master] if self.master else []) + self.workers]

    def start(self) -> None:
        self.master = self._daemon("master", MASTER, "--port", str(self.port))
        self._wait(lambda: self.status().get("status") == "ALIVE", "the master")
        for n in range(self.worker_count):
            work = self.root / f"worker-{n}"
            work.mkdir()
            self.workers.append(self._daemon(f"worker-{n}", WORKER, "--port", str(free_port()), "--cores",
                                             str(self.cores), "--memory", self.memory, "--work-dir", str(work),
                                             self.master_url))
        self._wait(lambda: self.status().get("aliveworkers") == self.worker_count, "the workers")

    def stop(self) -> None:
        """Workers first (each takes its executors down), then the master; every one of them even if
        stopping another failed (that error is raised afterwards)."""
        failed: list[BaseException] = []
        for daemon in [*self.workers, *([self.master] if self.master else [])]:
            try:
                daemon.stop()
            except Exception as exc:
                failed.append(exc)
        self.workers, self.master = [], None
        if failed:
            raise failed[0]

    def _daemon(self, name: str, main: str, *args: str) -> Daemon:
        web_port, log = free_port(), self.root / f"{name}.log"
        command = [str(spark_home() / "bin" / "spark-class"), main, "--host", "127.0.0.1", "--webui-port",
                   str(web_port), "--properties-file", str(self.properties), *args]
        with open(log, "wb") as out:
            process = subprocess.Popen(command, env=self._environment(), stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return Daemon(name, process, log, web_port)

    def _environment(self) -> dict[str, str]:
        spark = {"HOME": str(spark_home()), "CONF_DIR": str(self.root), "LOCAL_IP": "127.0.0.1",
                 "LOCAL_DIRS": str(self.root), "LOG_DIR": str(self.root), "PID_DIR": str(self.root),
                 "DAEMON_MEMORY": DAEMON_MEMORY, "DAEMON_JAVA_OPTS": QUICK_JVM}
        return {**os.environ, **{f"SPARK_{name}": value for name, value in spark.items()}}

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            dead = [d for d in ([self.master] if self.master else []) + self.workers if not d.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited while starting:\n{_tail(dead[0].log)}")
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                if ready():
                    return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {d.name}\n{_tail(d.log)}" for d in [self.master, *self.workers] if d)
                raise RuntimeError(f"{what} did not come up within {START_TIMEOUT:.0f}s:\n{logs}")
            time.sleep(0.25)


@contextlib.contextmanager
def standalone(workers: int = 2, cores: int = 1, memory: str = "1g") -> Iterator[Cluster]:
    """A running master with ``workers`` workers of ``cores`` cores and ``memory`` each; stopped by PID afterwards."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="summarizer-spark-")), workers, cores, memory)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(cluster.root, ignore_errors=True)
