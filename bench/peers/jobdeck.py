"""jobdeck itself, driven only through its CLI (``jobdeck serve`` / ``jobdeck worker``) and its
HTTP API (httpx), on SQLite and on PostgreSQL; completion read from ``GET /api/v1/stats``."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import (
    Peer,
    PeerFailed,
    Proc,
    compile_package,
    free_port,
    percentile,
    python_tool,
    spawn,
    start_postgres,
    wait_done,
    wait_until,
)

API = "/api/v1"
NOOP = {"job_type": "noop", "start": True}
SEED_BATCH = 10_000  # the batch endpoint's limit
API_LOAD_CLIENTS = (1, 10, 50)


def _iso_to_epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp (``Z`` accepted)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class _Jobdeck(Peer):
    """Shared by both stores: one ``jobdeck serve`` for the whole run takes the submissions
    with no worker processes; to run the queued jobs, an admin gives it W. Completion is read
    from ``GET /api/v1/stats``. ``cold_start_per_s`` (an extra figure) is the other way: the
    server stopped and started again with ``--workers W``."""

    has_bulk = True

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.server: Proc | None = None
        self.db_url: str | None = None
        self.data_dir = work_dir / "data"
        self.port = free_port()
        self.ids: list[str] = []
        self.records: dict[str, dict[str, Any]] = {}
        self.rss_peak = {"server_mb": 0.0, "server_and_workers_mb": 0.0}
        self.starts = 0

    # -- the server --------------------------------------------------------------------------

    def _serve(self, workers: int) -> None:
        """Start ``jobdeck serve --workers N`` and wait until it answers with a token."""
        args = [*python_tool("jobdeck"), "serve", "--data-dir", str(self.data_dir)]
        args += ["--port", str(self.port), "--workers", str(workers)]
        if self.db_url:
            args += ["--db", self.db_url]
        self.starts += 1
        self.server = spawn(f"jobdeck-serve{self.starts}-w{workers}", args, self.work_dir)
        base = f"http://127.0.0.1:{self.port}"
        token_file = self.data_dir / "admin-token"

        def ready() -> bool:
            if self.server is not None and not self.server.alive():
                raise PeerFailed(f"jobdeck serve exited: {self.server.tail()}")
            return token_file.exists() and httpx.get(f"{base}{API}/health").status_code == 200

        if not wait_until(ready, 60, 0.02):
            raise PeerFailed(f"jobdeck serve did not answer in 60s: {self.server.tail()}")
        token = token_file.read_text().strip()
        self.client = httpx.Client(
            base_url=f"{base}{API}", headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    def _stop_server(self) -> None:
        if self.server is not None:
            if hasattr(self, "client"):
                self.client.close()
            self.server.stop(30)
            self.server = None

    def _sample_rss(self) -> None:
        """Keep the peak RSS of the server process, alone and with its worker children."""
        import psutil

        if self.server is None:
            return
        try:
            main = psutil.Process(self.server.popen.pid)
            own = main.memory_info().rss
            children = sum(c.memory_info().rss for c in main.children(recursive=True))
        except psutil.Error:
            return
        self.rss_peak["server_mb"] = max(self.rss_peak["server_mb"], own / 2**20)
        total = (own + children) / 2**20
        self.rss_peak["server_and_workers_mb"] = max(self.rss_peak["server_and_workers_mb"], total)

    # -- the interface -----------------------------------------------------------------------

    def setup(self) -> None:
        """Compile jobdeck's modules, then start the API-only server (``--workers 0``)."""
        compile_package("jobdeck")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._serve(0)

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 300:
            raise PeerFailed(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def submit_one(self) -> Any:
        """``POST /jobs`` with ``{"job_type": "noop", "start": true}``; the handle is the id."""
        job_id = str(self._check(self.client.post("/jobs", json=NOOP))["id"])
        self.ids.append(job_id)
        return job_id

    def submit_bulk(self, n: int, job: dict[str, Any] | None = None) -> None:
        """``POST /jobs/batch`` with n jobs (one transaction)."""
        body = {"jobs": [job or NOOP] * n}
        created = self._check(self.client.post("/jobs/batch", json=body))["jobs"]
        if len(created) != n:
            raise PeerFailed(f"batch of {n} created {len(created)} jobs")
        self.ids.extend(str(item["id"]) for item in created)

    def completed(self) -> int:
        """``GET /stats`` → ``phases.COMPLETED``; a job in ERROR fails the run."""
        self._sample_rss()
        phases = self._check(self.client.get("/stats"))["phases"]
        if phases.get("ERROR"):
            raise PeerFailed(f"{phases['ERROR']} no-op jobs ended in ERROR")
        return int(phases.get("COMPLETED", 0))

    def submit_and_wait(self) -> Any:
        """``POST /jobs?wait=5`` (the client's ``create(..., wait=5)``): the job is submitted
        and the answer comes once it has run, in one HTTP exchange (its record is kept for
        ``is_done`` and ``started_at``)."""
        record = self._check(self.client.post("/jobs", json=NOOP, params={"wait": 5}))
        job_id = str(record["id"])
        self.ids.append(job_id)
        self.records[job_id] = record
        return job_id

    def is_done(self, handle: Any) -> bool:
        """Phase COMPLETED, in the record last read, else in a new one: ``GET
        /jobs/{id}?wait=5``, the blocking GET (what ``jobdeck.client``'s ``wait`` uses), which
        answers as soon as the job's phase changes, instead of at the next poll. (The record
        is kept for ``started_at``.)"""
        record = self.records.get(handle)
        if record is None or record["phase"] != "COMPLETED":
            record = self._check(self.client.get(f"/jobs/{handle}", params={"wait": 5}))
            self.records[handle] = record
        if record["phase"] in {"ERROR", "ABORTED"}:
            raise PeerFailed(f"job {handle} ended in {record['phase']}")
        return bool(record["phase"] == "COMPLETED")

    def started_at(self, handle: Any) -> float | None:
        """The EXECUTING entry of the job's timeline."""
        record = self.records.pop(handle, None) or {}
        for entry in record.get("timeline") or []:
            if str(entry.get("status", "")).upper() == "EXECUTING":
                return _iso_to_epoch(str(entry["timestamp"]))
        return None

    def check_workers(self) -> None:
        """The server (and worker processes) still run."""
        if self.server is not None and not self.server.alive():
            raise PeerFailed(f"jobdeck serve exited: {self.server.tail()}")
        super().check_workers()

    def teardown(self) -> None:
        """Stop workers and the server; stop PostgreSQL if we started it."""
        super().teardown()
        self._stop_server()
        if hasattr(self, "pg"):
            self.pg.stop()

    def start_workers(self, workers: int, setting: str) -> None:
        """Have the running server start W worker processes (``PUT /api/v1/workers``, what
        ``jobdeck workers --set W`` sends), as the peers start worker processes beside a
        broker or database that runs already."""
        self._resize(workers)

    def stop_workers(self) -> None:
        """Back to no worker processes (what they were handed, they finish)."""
        super().stop_workers()
        if self.server is not None:
            self._resize(0)

    def _resize(self, workers: int) -> None:
        local = self._check(self.client.put("/workers", json={"processes": workers}))
        if local["processes"] != workers:
            raise PeerFailed(f"asked for {workers} worker processes, the server runs {local}")

    # -- jobdeck-only figures ----------------------------------------------------------------

    def extra_figures(self, args: Any) -> dict[str, Any]:
        """Latency by two requests, the drain of a server started with its workers, RSS,
        embedded submission, and (by flag) API load and PostgreSQL scale-out."""
        extra: dict[str, Any] = {
            "latency_two_requests_ms": self._two_request_latency(args.workers, 100),
            "cold_start_per_s": self._cold_start(args.jobs, args.workers),
        }
        if args.scale_out and self.db_url:
            extra["scale_out_per_s"] = self._scale_out(args.jobs)
        extra["embedded"] = self._embedded(args.jobs)
        if args.api_load or args.million:
            stored = 1_000_000 if args.million else 10_000
            extra["api_load"] = self._api_load(stored)
        self._sample_rss()
        extra["rss_peak"] = dict(self.rss_peak)
        return extra

    def _scale_out(self, jobs: int) -> dict[str, float]:
        """Throughput with 1, 2 and 4 ``jobdeck worker --workers 1`` processes (one per simulated
        node) against the API-only server's PostgreSQL."""
        rates: dict[str, float] = {}
        for nodes in (1, 2, 4):
            target = self._queue(jobs)
            began = time.monotonic()
            for index in range(nodes):
                self._spawn_worker_command(f"scale{nodes}-{index}", 1)
            seconds = self._drain(target, jobs, began, f"scale-out with {nodes} workers")
            rates[str(nodes)] = jobs / seconds
            self.stop_workers()
        return rates

    def _spawn_worker_command(self, name: str, processes: int) -> None:
        """Start ``jobdeck worker --db URL --workers N`` beside the API-only server (PG)."""
        args = [*python_tool("jobdeck"), "worker", "--db", str(self.db_url)]
        args += ["--data-dir", str(self.data_dir), "--workers", str(processes)]
        self.workers.append(spawn(name, args, self.work_dir))

    def _queue(self, jobs: int) -> int:
        """Queue ``jobs`` more no-op jobs, 1,000 a batch; the completed count to wait for."""
        target = self.completed() + jobs
        for start in range(0, jobs, 1000):
            self.submit_bulk(min(1000, jobs - start))
        return target

    def _drain(self, target: int, jobs: int, began: float, what: str) -> float:
        """Seconds from ``began`` until ``target`` jobs show completed (``jobs`` of them new)."""
        deadline = began + max(60.0, jobs / 25)
        while self.completed() < target:
            if time.monotonic() > deadline:
                raise PeerFailed(f"{what} did not finish in time")
            self.check_workers()
            time.sleep(0.02)
        return time.monotonic() - began

    def _two_request_latency(self, workers: int, samples: int) -> dict[str, float]:
        """Submit → COMPLETED seen, the way without ``?wait`` on the submission: ``POST
        /jobs``, then blocking GETs until COMPLETED; ``samples`` jobs one at a time, W worker
        processes."""
        self._resize(workers)
        took: list[float] = []
        for _ in range(samples + 5):
            began = time.perf_counter()
            handle = self.submit_one()
            wait_done(self, handle, 0.0)  # is_done blocks in the server: no poll interval
            took.append((time.perf_counter() - began) * 1000)
            self.records.pop(handle, None)
        self._resize(0)
        took = took[5:]  # the first few warm up the path
        return {"p50": percentile(took, 50), "p99": percentile(took, 99), "samples": len(took)}

    def _cold_start(self, jobs: int, workers: int) -> float:
        """N jobs queued on the server without workers, which is then stopped; completed
        jobs/s from the start of ``jobdeck serve --workers W`` (its imports, its store, its
        web stack, its worker processes) to the last completion seen."""
        target = self._queue(jobs)
        self._stop_server()
        began = time.monotonic()
        self._serve(workers)
        rate = jobs / self._drain(target, jobs, began, "the cold-start drain")
        self._stop_server()
        self._serve(0)
        return rate

    def _embedded(self, jobs: int) -> dict[str, Any]:
        """Submission one at a time through the embedded Python API
        (``jobdeck.embedded.JobStore(data_dir).create_job(name, user, request, result)``), in a
        SQLite store of its own: idle jobs, no HTTP."""
        try:
            from jobdeck.embedded import JobStore
        except ImportError:
            return {"submit_one_per_s": None, "note": "jobdeck.embedded not available"}
        store = JobStore(self.work_dir / "embedded")
        try:
            count = min(jobs, 5000)
            start = time.perf_counter()
            for _ in range(count):
                store.create_job("noop", "bench", {}, None)
            return {"submit_one_per_s": count / (time.perf_counter() - start), "jobs": count}
        finally:
            store.close()

    def _api_load(self, stored: int) -> dict[str, Any]:
        """GET one job and list jobs (100 a page), p50/p99 at 1/10/50 concurrent clients, with
        at least ``stored`` jobs in the store (seeded through the batch endpoint)."""
        seed_started = time.monotonic()
        phases = self._check(self.client.get("/stats"))["phases"]
        have = sum(int(v) for v in phases.values())
        deadline = time.monotonic() + 3600
        while have < stored:
            chunk = min(SEED_BATCH, stored - have)
            self.submit_bulk(chunk, {"job_type": "noop", "start": False})
            have += chunk
            if time.monotonic() > deadline:
                raise PeerFailed(f"seeding {stored} jobs took over an hour")
        result: dict[str, Any] = {
            "stored_jobs": have,
            "seed_seconds": round(time.monotonic() - seed_started, 1),
        }
        ids = self.ids
        for clients in API_LOAD_CLIENTS:
            for kind in ("get_job", "list_jobs"):
                paths = (
                    [f"/jobs/{random.choice(ids)}" for _ in range(2000)]
                    if kind == "get_job"
                    else ["/jobs?limit=100"] * 500
                )
                latencies = asyncio.run(self._load(paths, clients, 60.0))
                result[f"{kind}_c{clients}_ms"] = {
                    "p50": percentile(latencies, 50),
                    "p99": percentile(latencies, 99),
                    "requests": len(latencies),
                }
                self._sample_rss()
        return result

    async def _load(self, paths: list[str], clients: int, limit: float) -> list[float]:
        """``clients`` concurrent loops over ``paths`` (each path once), bounded by ``limit``
        seconds; the milliseconds of each request.

        Each simulated client is one keep-alive HTTP/1.1 connection on asyncio streams (as a
        load generator such as wrk does it): httpx's AsyncClient, in the one client process
        that shares the cores with the server, added tails of its own (measured: GET job at
        10 clients, p99 102 ms through one AsyncClient, 14.6 ms this way; at 50 clients, 838
        against 40 ms)."""
        latencies: list[float] = []
        queue = list(reversed(paths))
        deadline = time.monotonic() + limit
        url = httpx.URL(str(self.client.base_url))
        host, port = url.host, url.port or 80
        prefix = url.raw_path.decode().rstrip("/")
        authorization = self.client.headers["Authorization"]

        async def loop() -> None:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                while queue and time.monotonic() < deadline:
                    path = queue.pop()
                    start = time.perf_counter()
                    request = (
                        f"GET {prefix}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Authorization: {authorization}\r\n\r\n"
                    )
                    writer.write(request.encode())
                    status, _body = await asyncio.wait_for(_read_response(reader), 60)
                    if status != 200:
                        raise PeerFailed(f"GET {path}: HTTP {status}")
                    latencies.append((time.perf_counter() - start) * 1000)
            finally:
                writer.close()

        await asyncio.gather(*(loop() for _ in range(clients)))
        return latencies


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (what the API sends): status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


class JobdeckSqlite(_Jobdeck):
    """jobdeck on SQLite (the default store)."""

    name = "jobdeck-sqlite"
    store = "sqlite"
    settings = {
        "baseline": "`jobdeck workers --set W` on the running `jobdeck serve` (SQLite, jobs "
        "queued before)"
    }


class JobdeckPostgres(_Jobdeck):
    """jobdeck on PostgreSQL (a private server). ``worker_command_per_s`` (an extra figure) is
    the drain by a ``jobdeck worker --db URL --workers W`` process beside the API-only server,
    the way to run workers on other machines."""

    name = "jobdeck-pg"
    store = "pg"
    settings = {
        "baseline": "`jobdeck workers --set W` on the running `jobdeck serve --db URL` (PG, "
        "jobs queued before)"
    }

    def setup(self) -> None:
        """Private PostgreSQL, then the API-only server on it."""
        self.pg = start_postgres(self.work_dir)
        self.db_url = self.pg.url
        super().setup()

    def extra_figures(self, args: Any) -> dict[str, Any]:
        """The common extras, and the drain by a ``jobdeck worker`` process."""
        extra = {"worker_command_per_s": self._worker_command(args.jobs, args.workers)}
        return {**extra, **super().extra_figures(args)}

    def _worker_command(self, jobs: int, workers: int) -> float:
        """N jobs queued; completed jobs/s from the start of ``jobdeck worker --workers W``
        (its imports, its engine, its connections, its worker processes) to the last seen."""
        target = self._queue(jobs)
        began = time.monotonic()
        self._spawn_worker_command("jobdeck-worker", workers)
        rate = jobs / self._drain(target, jobs, began, "the `jobdeck worker` drain")
        self.stop_workers()
        return rate
