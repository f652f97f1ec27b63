"""Dramatiq with the Redis broker; completion read from its Results middleware (Redis)."""

from __future__ import annotations

import os
from typing import Any

from common import Peer, python_tool, spawn, start_redis


class DramatiqPeer(Peer):
    """Dramatiq: ``dramatiq --processes W`` with 1 thread each (baseline) or its default 8."""

    name = "dramatiq"
    store = "redis"
    settings = {
        "baseline": "`dramatiq --processes W --threads 1`",
        "throughput": "`dramatiq --processes W --threads 8` (its default)",
    }

    def setup(self) -> None:
        """Private Redis (broker db 0, results db 1); import the actor against it."""
        import redis

        self.redis = start_redis(self.work_dir, databases=2)
        self.env = {"BENCH_BROKER_URL": self.redis.url(0), "BENCH_RESULT_URL": self.redis.url(1)}
        os.environ.update(self.env)
        import dramatiq_tasks

        self.actor = dramatiq_tasks.noop
        self.backend = dramatiq_tasks.backend
        self.results = redis.Redis.from_url(self.redis.url(1))

    def submit_one(self) -> Any:
        """``noop.send()``."""
        return self.actor.send()

    def submit_bulk(self, n: int) -> None:
        """``dramatiq.group([noop.message()] * n).run()``."""
        import dramatiq

        dramatiq.group(self.actor.message() for _ in range(n)).run()

    def start_workers(self, workers: int, setting: str) -> None:
        """One ``dramatiq`` command: W worker processes, 1 or 8 threads each."""
        threads = "1" if setting == "baseline" else "8"
        args = [*python_tool("dramatiq"), "dramatiq_tasks", "--processes", str(workers)]
        args += ["--threads", threads, "--queues", "bench"]
        self.workers.append(spawn(f"dramatiq-{setting}", args, self.work_dir, self.env))

    def completed(self) -> int:
        """Result keys in the Results backend's db (one per finished message)."""
        return int(self.results.dbsize())

    def is_done(self, handle: Any) -> bool:
        """``message.get_result(block=False)`` answers (ResultMissing while not done)."""
        from dramatiq.results import ResultMissing

        try:
            handle.get_result(backend=self.backend, block=False)
        except ResultMissing:
            return False
        return True

    def teardown(self) -> None:
        """Stop workers and Redis."""
        super().teardown()
        if hasattr(self, "redis"):
            self.redis.stop()
