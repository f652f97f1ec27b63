"""PgQueuer (PostgreSQL, asyncpg); completion read from its ``pgqueuer_log`` table."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from common import APPS_DIR, Peer, spawn, start_postgres


class PgqueuerPeer(Peer):
    """PgQueuer: W ``pgq run`` processes, batch size 1 (baseline) or 100."""

    name = "pgqueuer"
    store = "pg"
    settings = {
        "baseline": "W x PgQueuer.run(batch_size=1) (= `pgq run --batch-size 1`)",
        "throughput": "W x PgQueuer.run(batch_size=100)",
    }

    def setup(self) -> None:
        """Private PostgreSQL; ``Queries.install()``; an asyncpg connection on our own loop."""
        import asyncpg
        from pgqueuer.queries import Queries

        self.pg = start_postgres(self.work_dir)
        self.env = {"BENCH_PG_URL": self.pg.url}
        os.environ.update(self.env)
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(self.pg.url))
        self.queries = Queries.from_asyncpg_connection(self.conn)
        self.loop.run_until_complete(self.queries.install())

    def submit_one(self) -> Any:
        """``queries.enqueue("noop", None)``; the handle is the job id."""
        return self.loop.run_until_complete(self.queries.enqueue("noop", None))[0]

    def submit_bulk(self, n: int) -> None:
        """``queries.enqueue(["noop"] * n, [None] * n, [0] * n)``: one statement."""
        self.loop.run_until_complete(self.queries.enqueue(["noop"] * n, [None] * n, [0] * n))

    def start_workers(self, workers: int, setting: str) -> None:
        """W ``PgQueuer.run(batch_size=...)`` processes (``pgqueuer_tasks.py``, the same as
        ``pgq run pgqueuer_tasks:main --batch-size N``, whose CLI fails under typer 0.29)."""
        batch = "1" if setting == "baseline" else "100"
        for index in range(workers):
            args = [sys.executable, str(APPS_DIR / "pgqueuer_tasks.py"), batch]
            self.workers.append(spawn(f"pgq-{setting}{index}", args, self.work_dir, self.env))

    def _fetchval(self, query: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.conn.fetchval(query, *args))

    def completed(self) -> int:
        """Log entries with status ``successful``."""
        return int(self._fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"))

    def is_done(self, handle: Any) -> bool:
        """The log has a ``successful`` entry for the job."""
        query = "SELECT 1 FROM pgqueuer_log WHERE job_id = $1 AND status = 'successful'"
        return self._fetchval(query, handle) is not None

    def started_at(self, handle: Any) -> float | None:
        """Time of the ``picked`` log entry, if pgqueuer logs one."""
        query = (
            "SELECT extract(epoch FROM created) FROM pgqueuer_log "
            "WHERE job_id = $1 AND status = 'picked' ORDER BY created LIMIT 1"
        )
        value = self._fetchval(query, handle)
        return None if value is None else float(value)

    def teardown(self) -> None:
        """Stop workers, close the connection, stop PostgreSQL."""
        super().teardown()
        if hasattr(self, "conn"):
            self.loop.run_until_complete(self.conn.close())
            self.loop.close()
        if hasattr(self, "pg"):
            self.pg.stop()
