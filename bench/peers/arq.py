"""arq (asyncio, Redis); completion read from arq's result keys (``arq:result:*``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from common import Peer, python_tool, spawn, start_redis

POLL_DELAY = "0.01"


class ArqPeer(Peer):
    """arq: W ``arq`` worker processes, max_jobs 1 (baseline) or 100; poll_delay 10 ms (its
    default, 0.5 s, caps a worker at max_jobs / 0.5 s jobs per second)."""

    name = "arq"
    store = "redis"
    settings = {
        "baseline": "W x `arq` worker, max_jobs=1, poll_delay=0.01",
        "throughput": "W x `arq` worker, max_jobs=100, poll_delay=0.01",
    }
    has_bulk = False  # arq has no bulk enqueue API

    def setup(self) -> None:
        """Private Redis; an ArqRedis pool on our own event loop."""
        from arq import create_pool
        from arq.connections import RedisSettings

        self.redis = start_redis(self.work_dir, databases=1)
        self.env = {"BENCH_BROKER_URL": self.redis.url(0), "BENCH_ARQ_POLL_DELAY": POLL_DELAY}
        os.environ.update(self.env)
        self.loop = asyncio.new_event_loop()
        settings = RedisSettings.from_dsn(self.redis.url(0))
        self.pool = self.loop.run_until_complete(create_pool(settings))
        self.submitted = 0

    def submit_one(self) -> Any:
        """``await pool.enqueue_job("noop")``."""
        self.submitted += 1
        return self.loop.run_until_complete(self.pool.enqueue_job("noop"))

    def start_workers(self, workers: int, setting: str) -> None:
        """W ``arq arq_tasks.WorkerSettings`` processes."""
        env = {**self.env, "BENCH_ARQ_MAX_JOBS": "1" if setting == "baseline" else "100"}
        for index in range(workers):
            args = [*python_tool("arq"), "arq_tasks.WorkerSettings"]
            self.workers.append(spawn(f"arq-{setting}{index}", args, self.work_dir, env))

    def completed(self) -> int:
        """Result keys, counted with SCAN once the queue is empty (ZCARD of the queue first, to
        keep a 10k-key SCAN off Redis while the workers run)."""

        async def count() -> int:
            queued = await self.pool.zcard("arq:queue")
            if queued:
                return self.submitted - int(queued) - 1  # below target until the queue drains
            total = 0
            async for _ in self.pool.scan_iter(match="arq:result:*", count=5000):
                total += 1
            return total

        return self.loop.run_until_complete(count())

    def is_done(self, handle: Any) -> bool:
        """``await job.status()`` is ``complete``."""
        from arq.jobs import JobStatus

        return bool(self.loop.run_until_complete(handle.status()) == JobStatus.complete)

    def started_at(self, handle: Any) -> float | None:
        """``(await job.result_info()).start_time`` as arq recorded it."""
        info = self.loop.run_until_complete(handle.result_info())
        return None if info is None else float(info.start_time.timestamp())

    def teardown(self) -> None:
        """Stop workers, close the pool, stop Redis."""
        super().teardown()
        if hasattr(self, "pool"):
            self.loop.run_until_complete(self.pool.aclose())
            self.loop.close()
        if hasattr(self, "redis"):
            self.redis.stop()
