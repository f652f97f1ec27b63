"""Celery 5 with a Redis broker; completion read from Celery's Redis result backend."""

from __future__ import annotations

import os
from typing import Any

from common import Peer, python_tool, spawn, start_redis


class CeleryPeer(Peer):
    """Celery: W ``--pool solo`` workers (baseline) or one prefork worker of W processes."""

    name = "celery"
    store = "redis"
    settings = {
        "baseline": "W x `celery worker --pool solo --prefetch-multiplier 1`",
        "throughput": "`celery worker --pool prefork -c W --prefetch-multiplier 64` "
        "--without-gossip/mingle/heartbeat",
    }

    def setup(self) -> None:
        """Private Redis (broker in db 0, results in db 1); import the app against it."""
        self.redis = start_redis(self.work_dir, databases=2)
        self.env = {"BENCH_BROKER_URL": self.redis.url(0), "BENCH_RESULT_URL": self.redis.url(1)}
        os.environ.update(self.env)
        import celery  # noqa: F401  (fail here with a clear reason if it is missing)
        import celery_tasks
        import redis

        self.app = celery_tasks.app
        self.task = celery_tasks.noop
        self.results = redis.Redis.from_url(self.redis.url(1))

    def submit_one(self) -> Any:
        """``noop.delay()``."""
        return self.task.delay()

    def submit_bulk(self, n: int) -> None:
        """``group(noop.s() x n).apply_async()``: one call, one broker connection."""
        from celery import group

        group(self.task.s() for _ in range(n)).apply_async()

    def start_workers(self, workers: int, setting: str) -> None:
        """Start the celery worker processes of ``setting``."""
        celery = python_tool("celery")
        base = [*celery, "-A", "celery_tasks", "worker", "-Q", "bench", "--loglevel", "WARNING"]
        if setting == "baseline":
            for index in range(workers):
                args = [*base, "--pool", "solo", "--prefetch-multiplier", "1"]
                args += ["-n", f"solo{index}@%h"]
                self.workers.append(spawn(f"celery-solo{index}", args, self.work_dir, self.env))
        else:
            args = [*base, "--pool", "prefork", "--concurrency", str(workers)]
            args += ["--prefetch-multiplier", "64", "--without-gossip", "--without-mingle"]
            args += ["--without-heartbeat", "-n", "prefork@%h"]
            self.workers.append(spawn("celery-prefork", args, self.work_dir, self.env))

    def completed(self) -> int:
        """Result keys in the result backend's db (only finished tasks write one)."""
        return int(self.results.dbsize())

    def is_done(self, handle: Any) -> bool:
        """``AsyncResult.successful()`` (reads the result backend)."""
        return bool(handle.successful())

    def teardown(self) -> None:
        """Stop workers and Redis."""
        super().teardown()
        if hasattr(self, "redis"):
            self.redis.stop()
