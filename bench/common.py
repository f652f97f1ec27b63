"""Shared pieces of the benchmark: the peer interface, private brokers, processes, statistics.

Everything here talks to loopback only (127.0.0.1). Every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
LOOPBACK = "127.0.0.1"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED_REDIS_PORT = 6379
SHARED_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class PeerFailed(Exception):
    """A peer could not be installed, started or measured; the message is the one-line reason."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Call ``check`` until it returns True or ``timeout`` seconds pass; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(interval)
    return False


def wait_done(peer: Peer, handle: Any, poll: float) -> None:
    """Ask ``peer.is_done(handle)`` every ``poll`` seconds until it says so (latency: a job
    submitted to idle workers); PeerFailed after 30 s."""
    deadline = time.monotonic() + 30
    while not peer.is_done(handle):
        if time.monotonic() > deadline:
            raise PeerFailed("a job submitted to idle workers did not complete in 30s")
        time.sleep(poll)


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile (0-100) of ``values`` by nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    """A subprocess started in its own session, so that it and its children stop together."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def tail(self, lines: int = 5) -> str:
        """The last lines of its log, on one line (for a failure reason)."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        plain = [line.strip() for line in text if line.strip() and line.strip()[0] not in "│╭╰"]
        return " | ".join(plain[-lines:])[-400:]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Children of a process group leader may outlive it: always sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(
    name: str,
    args: Sequence[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``args`` in a new session with stdout/stderr to ``log_dir/name.log``."""
    log = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS_DIR), *filter(None, [full_env.get("PYTHONPATH")])]
    )
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd or APPS_DIR),
            start_new_session=True,
        )
    return Proc(name, popen, log)


def compile_package(name: str) -> None:
    """Write the bytecode of an installed package's modules, as installing it from a wheel
    does. An editable install has none until a run writes it, and with
    ``PYTHONDONTWRITEBYTECODE`` set no run does: every start would compile the sources anew."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise PeerFailed(f"{name} is not installed")
    for location in spec.submodule_search_locations:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", location],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )


def python_tool(module_or_script: str) -> list[str]:
    """Command line for a console script installed beside this Python (``celery``, ``rq``...)."""
    candidate = Path(sys.executable).parent / module_or_script
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which(module_or_script)
    if found:
        return [found]
    raise PeerFailed(f"{module_or_script} not installed (pip install -r bench/requirements.txt)")


# --------------------------------------------------------------------------------------------
# Brokers and databases


@dataclass
class RedisInstance:
    """Redis for one peer: a private server on a free port, or db numbers of the shared one."""

    port: int
    dbs: list[int]
    private: bool
    proc: Proc | None = None

    def url(self, index: int = 0) -> str:
        """URL of this peer's ``index``-th database."""
        return f"redis://{LOOPBACK}:{self.port}/{self.dbs[index]}"

    def stop(self) -> None:
        """Stop the private server, or empty the borrowed databases of the shared one."""
        if self.proc is not None:
            self.proc.stop(5)
            return
        import redis

        for db in self.dbs:
            with contextlib.suppress(Exception):
                redis.Redis(host=LOOPBACK, port=self.port, db=db).flushdb()


def start_redis(log_dir: Path, databases: int = 2) -> RedisInstance:
    """A private ``redis-server`` on a free loopback port; else fresh dbs on 127.0.0.1:6379."""
    import redis

    server = shutil.which("redis-server")
    if server:
        port = free_port()
        args = [server, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly"]
        args += ["no", "--daemonize", "no", "--dir", str(log_dir), "--protected-mode", "yes"]
        proc = spawn("redis-server", args, log_dir, cwd=log_dir)
        private = redis.Redis(host=LOOPBACK, port=port)
        if wait_until(lambda: bool(private.ping()), 10):
            return RedisInstance(port, list(range(databases)), True, proc)
        proc.stop(2)
    try:
        empty = [
            db
            for db in range(15, 0, -1)
            if redis.Redis(port=SHARED_REDIS_PORT, db=db).dbsize() == 0
        ]
    except redis.RedisError as error:
        raise PeerFailed(f"no Redis: private server did not start, shared one: {error}") from error
    if len(empty) < databases:
        raise PeerFailed("no Redis: private server did not start and shared one has no free db")
    return RedisInstance(SHARED_REDIS_PORT, empty[:databases], False)


@dataclass
class PostgresInstance:
    """A PostgreSQL database for one peer: a private cluster, or a fresh db on the shared one."""

    url: str
    private: bool
    data_dir: Path | None = None
    database: str | None = None
    _as_postgres: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop and remove the private cluster, or drop the fresh database."""
        if self.data_dir is not None:
            subprocess.run(
                [
                    *self._as_postgres,
                    *(str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data_dir)),
                    *("-m", "immediate", "-w", "-t", "20"),
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
            return
        if self.database:
            import psycopg

            with (
                contextlib.suppress(Exception),
                psycopg.connect(SHARED_PG_URL, autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def start_postgres(log_dir: Path) -> PostgresInstance:
    """A private cluster (initdb + pg_ctl, as the postgres user when root) on a free loopback
    port; else a fresh database on 127.0.0.1:5432."""
    reason = ""
    if (PG_BIN / "initdb").exists():
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        data = base / "data"
        port = free_port()
        try:
            if as_postgres:
                shutil.chown(base, "postgres")
            subprocess.run(
                [
                    *as_postgres,
                    *(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres"),
                    *("--auth=trust", "-E", "UTF8", "--no-sync"),
                ],
                capture_output=True,
                timeout=120,
                check=True,
            )
            options = f"-p {port} -c listen_addresses={LOOPBACK} -k {base} -c max_connections=200"
            subprocess.run(
                [
                    *as_postgres,
                    *(str(PG_BIN / "pg_ctl"), "start", "-D", str(data), "-w"),
                    *("-t", "60", "-l", str(base / "postgres.log"), "-o", options),
                ],
                capture_output=True,
                timeout=90,
                check=True,
            )
            url = f"postgresql://postgres@{LOOPBACK}:{port}/postgres"
            return PostgresInstance(url, True, data, None, as_postgres)
        except (subprocess.SubprocessError, OSError, LookupError) as error:
            reason = str(error)
            shutil.rmtree(base, ignore_errors=True)
    import psycopg

    name = f"bench_{os.getpid()}_{int(time.time())}"
    try:
        with psycopg.connect(SHARED_PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        raise PeerFailed(f"no PostgreSQL: private: {reason[:100]}; shared: {error}") from error
    return PostgresInstance(SHARED_PG_URL.rsplit("/", 1)[0] + f"/{name}", False, None, name)


# --------------------------------------------------------------------------------------------
# The peer interface


class Peer:
    """One system under test. The harness (``measure.py``) calls, in this order:

    ``setup()``; ``submit_one()`` x N (timed: single submission); ``before_workers()``, then
    ``start_workers(W, "baseline")`` and ``completed()`` until N (throughput, timed from
    ``start_workers``); ``submit_and_wait()``/``is_done()`` one job at a time (latency);
    ``stop_workers()``; ``submit_bulk(k)`` until N (bulk submission); for each other setting
    ``before_workers()``, ``start_workers(W, setting)`` (throughput) and ``stop_workers()``;
    ``teardown()``.

    ``completed()`` must read the system's own record of finished jobs (a results store, a
    registry, a jobs table), never a counter of our own.
    """

    name = "peer"
    #: setting name -> what it is, shown in the table. "baseline": W worker processes,
    #: one job at a time each. Other settings: what the docs suggest for throughput.
    settings: dict[str, str] = {}
    #: Store kind, used to choose which jobdeck a ratio compares with: "sqlite"/"redis"/"pg".
    store = "redis"
    #: Whether ``submit_bulk`` uses a real bulk API (else the figure is n/a).
    has_bulk = True

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.workers: list[Proc] = []

    def setup(self) -> None:
        """Start the broker/database and prepare the schema."""
        raise NotImplementedError

    def submit_one(self) -> Any:
        """Enqueue one no-op job; return a handle for ``is_done``/``started_at``."""
        raise NotImplementedError

    def submit_bulk(self, n: int) -> None:
        """Enqueue ``n`` no-op jobs through the peer's bulk API."""
        raise NotImplementedError

    def before_workers(self) -> None:
        """Untimed: put away what only submission needed (nothing, by default)."""

    def start_workers(self, workers: int, setting: str) -> None:
        """Start ``workers`` worker processes in ``setting`` (a key of ``settings``)."""
        raise NotImplementedError

    def stop_workers(self) -> None:
        """Stop all worker processes."""
        for proc in self.workers:
            proc.stop()
        self.workers = []

    def completed(self) -> int:
        """How many jobs the system itself records as completed successfully, so far."""
        raise NotImplementedError

    def submit_and_wait(self) -> Any:
        """Latency: enqueue one no-op job and return its handle for ``is_done``. A system
        whose API can wait for the job's outcome in the submitting call (jobdeck's ``POST
        /jobs?wait=``) returns once the job has run; by default, ``submit_one()``."""
        return self.submit_one()

    def is_done(self, handle: Any) -> bool:
        """Whether the system records this job as completed."""
        raise NotImplementedError

    def started_at(self, handle: Any) -> float | None:
        """Epoch seconds at which the system recorded the job as started; None if it does not
        record it."""
        return None

    def check_workers(self) -> None:
        """Raise PeerFailed if a worker process has exited."""
        for proc in self.workers:
            if not proc.alive():
                raise PeerFailed(f"worker {proc.name} exited: {proc.tail()}")

    def extra_figures(self, args: Any) -> dict[str, Any]:
        """Figures beyond the common ones (jobdeck's API load, RSS, scale-out); none by default."""
        return {}

    def teardown(self) -> None:
        """Stop everything this peer started."""
        self.stop_workers()
