"""Huey on Redis and on SQLite (the nearest embedded peer); completion read from huey's result
store (``store_none=True``, so a no-op's None is recorded too)."""

from __future__ import annotations

import os
from typing import Any

from common import Peer, python_tool, spawn, start_redis


class _Huey(Peer):
    """Huey: ``huey_consumer -k process -w W`` (baseline) or W consumers of 4 threads each."""

    kind = "redis"
    settings = {
        "baseline": "`huey_consumer -k process -w W`",
        "throughput": "W x `huey_consumer -k thread -w 4`",
    }
    has_bulk = False  # huey has no bulk enqueue API

    def _storage_env(self) -> dict[str, str]:
        raise NotImplementedError

    def setup(self) -> None:
        """Start the storage; import the huey instance against it."""
        self.env = {"BENCH_HUEY_KIND": self.kind, **self._storage_env()}
        os.environ.update(self.env)
        import huey_tasks

        self.huey = huey_tasks.huey
        self.task = huey_tasks.noop

    def submit_one(self) -> Any:
        """Call the task (huey enqueues it); the handle is its Result."""
        return self.task()

    def start_workers(self, workers: int, setting: str) -> None:
        """The consumer process(es) of ``setting``."""
        consumer = [*python_tool("huey_consumer"), "huey_tasks.huey", "--no-periodic", "-q"]
        if setting == "baseline":
            args = [*consumer, "-k", "process", "-w", str(workers)]
            self.workers.append(spawn(f"huey-{setting}", args, self.work_dir, self.env))
        else:
            for index in range(workers):
                args = [*consumer, "-k", "thread", "-w", "4"]
                self.workers.append(spawn(f"huey-{setting}{index}", args, self.work_dir, self.env))

    def completed(self) -> int:
        """``huey.result_count()``: entries in the result store."""
        return int(self.huey.result_count())

    def is_done(self, handle: Any) -> bool:
        """The result store has an entry for this task."""
        return bool(self.huey.storage.has_data_for_key(handle.id))


class HueyRedis(_Huey):
    """Huey with RedisHuey."""

    name = "huey-redis"
    store = "redis"
    kind = "redis"

    def _storage_env(self) -> dict[str, str]:
        self.redis = start_redis(self.work_dir, databases=1)
        return {"BENCH_BROKER_URL": self.redis.url(0)}

    def teardown(self) -> None:
        """Stop consumers and Redis."""
        super().teardown()
        if hasattr(self, "redis"):
            self.redis.stop()


class HueySqlite(_Huey):
    """Huey with SqliteHuey (a file in the work directory)."""

    name = "huey-sqlite"
    store = "sqlite"
    kind = "sqlite"

    def _storage_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_SQLITE": str(self.work_dir / "huey.db")}
