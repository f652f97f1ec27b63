"""arq worker settings and a no-op job; max_jobs and poll_delay come from the environment."""

import os
from typing import Any

from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any]) -> None:
    """Do nothing."""


class WorkerSettings:
    """Read by ``arq arq_tasks.WorkerSettings``."""

    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_BROKER_URL"])
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "10"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))
    keep_result = 3600
