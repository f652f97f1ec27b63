"""Huey instance (Redis or SQLite, from BENCH_HUEY_KIND) with a result store and a no-op task."""

import os

from huey import RedisHuey, SqliteHuey

if os.environ.get("BENCH_HUEY_KIND", "redis") == "sqlite":
    huey = SqliteHuey("bench", filename=os.environ["BENCH_HUEY_SQLITE"], store_none=True)
else:
    huey = RedisHuey("bench", url=os.environ["BENCH_BROKER_URL"], store_none=True)


@huey.task()
def noop() -> None:
    """Do nothing (store_none=True: the result store records it)."""
