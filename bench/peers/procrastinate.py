"""Procrastinate (PostgreSQL); completion read from its ``procrastinate_jobs`` table."""

from __future__ import annotations

import os
from typing import Any

from common import Peer, python_tool, spawn, start_postgres


class ProcrastinatePeer(Peer):
    """Procrastinate: W ``procrastinate worker`` processes, concurrency 1 (baseline) or 10."""

    name = "procrastinate"
    store = "pg"
    settings = {
        "baseline": "W x `procrastinate worker --concurrency 1`",
        "throughput": "W x `procrastinate worker --concurrency 10`",
    }

    def setup(self) -> None:
        """Private PostgreSQL; apply procrastinate's schema; open the app (sync)."""
        import psycopg

        self.pg = start_postgres(self.work_dir)
        self.env = {"BENCH_PG_URL": self.pg.url}
        os.environ.update(self.env)
        import procrastinate_tasks

        self.app = procrastinate_tasks.app
        self.task = procrastinate_tasks.noop
        self.app.open()
        self.app.schema_manager.apply_schema()
        self.db = psycopg.connect(self.pg.url, autocommit=True)

    def submit_one(self) -> Any:
        """``noop.defer()``; the handle is the job id."""
        return self.task.defer()

    def submit_bulk(self, n: int) -> None:
        """``noop.batch_defer({} x n)``: one INSERT of n rows."""
        self.task.batch_defer(*({} for _ in range(n)))

    def start_workers(self, workers: int, setting: str) -> None:
        """W worker processes."""
        concurrency = "1" if setting == "baseline" else "10"
        for index in range(workers):
            args = [*python_tool("procrastinate"), "--app=procrastinate_tasks.app", "worker"]
            args += ["--queues", "bench", "--concurrency", concurrency]
            self.workers.append(
                spawn(f"procrastinate-{setting}{index}", args, self.work_dir, self.env)
            )

    def completed(self) -> int:
        """Jobs whose status is ``succeeded``."""
        row = self.db.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        ).fetchone()
        return int(row[0]) if row else 0

    def is_done(self, handle: Any) -> bool:
        """The job's status is ``succeeded``."""
        row = self.db.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s", (handle,)
        ).fetchone()
        return bool(row and row[0] == "succeeded")

    def started_at(self, handle: Any) -> float | None:
        """The ``started`` event procrastinate recorded for the job."""
        row = self.db.execute(
            "SELECT extract(epoch FROM at) FROM procrastinate_events "
            "WHERE job_id = %s AND type = 'started' ORDER BY id LIMIT 1",
            (handle,),
        ).fetchone()
        return float(row[0]) if row else None

    def teardown(self) -> None:
        """Stop workers, close connections, stop PostgreSQL."""
        super().teardown()
        if hasattr(self, "db"):
            self.db.close()
        if hasattr(self, "app"):
            self.app.close()
        if hasattr(self, "pg"):
            self.pg.stop()
