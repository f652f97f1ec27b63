"""PgQueuer factory for ``pgq run pgqueuer_tasks:main`` with a no-op entrypoint."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.models import Job


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """Connect to BENCH_PG_URL and register the no-op entrypoint."""
    connection = await asyncpg.connect(os.environ["BENCH_PG_URL"])
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Do nothing."""

    try:
        yield pgq
    finally:
        await connection.close()


async def run(batch_size: int) -> None:
    """What ``pgq run pgqueuer_tasks:main --batch-size N`` does, without the CLI (pgqueuer 1.6's
    CLI fails to set up its logger under typer 0.29: 'str' object has no attribute 'name')."""
    async with main() as pgq:
        await pgq.run(batch_size=batch_size)


if __name__ == "__main__":
    import asyncio
    import sys

    asyncio.run(run(int(sys.argv[1])))
