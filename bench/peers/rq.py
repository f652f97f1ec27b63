"""RQ with SimpleWorker (no fork per job); completion read from RQ's FinishedJobRegistry."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from common import Peer, python_tool, spawn, start_redis

TASK = "rq_tasks.noop"


class RqPeer(Peer):
    """RQ: W ``rq worker -w SimpleWorker`` processes. RQ has no batching or in-process
    concurrency knob, so there is only the baseline."""

    name = "rq"
    store = "redis"
    settings = {"baseline": "W x `rq worker -w rq.worker.SimpleWorker` (no fork per job)"}

    def setup(self) -> None:
        """Private Redis; the ``bench`` queue."""
        from redis import Redis
        from rq import Queue

        self.redis = start_redis(self.work_dir, databases=1)
        self.connection = Redis.from_url(self.redis.url(0))
        self.queue = Queue("bench", connection=self.connection)

    def submit_one(self) -> Any:
        """``queue.enqueue("rq_tasks.noop")``."""
        return self.queue.enqueue(TASK, result_ttl=3600)

    def submit_bulk(self, n: int) -> None:
        """``queue.enqueue_many([Queue.prepare_data(...)] * n)`` (one Redis pipeline)."""
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(TASK, result_ttl=3600) for _ in range(n)])

    def start_workers(self, workers: int, setting: str) -> None:
        """W SimpleWorker processes."""
        rq = python_tool("rq")
        for index in range(workers):
            args = [*rq, "worker", "--url", self.redis.url(0), "-w", "rq.worker.SimpleWorker"]
            args += ["--name", f"bench-{setting}-{index}", "--logging_level", "WARNING", "bench"]
            self.workers.append(spawn(f"rq-{setting}-{index}", args, self.work_dir))

    def completed(self) -> int:
        """Size of the queue's FinishedJobRegistry."""
        return int(self.queue.finished_job_registry.count)

    def is_done(self, handle: Any) -> bool:
        """The job's status in Redis is ``finished``."""
        return str(handle.get_status(refresh=True)) in {"finished", "JobStatus.FINISHED"}

    def started_at(self, handle: Any) -> float | None:
        """``job.started_at`` as RQ recorded it (UTC)."""
        handle.refresh()
        started = handle.started_at
        if started is None:
            return None
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return float(started.timestamp())

    def teardown(self) -> None:
        """Stop workers and Redis."""
        super().teardown()
        if hasattr(self, "redis"):
            self.redis.stop()
