"""Procrastinate app on PostgreSQL (BENCH_PG_URL) with a no-op task."""

import os

import procrastinate

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_PG_URL"])
)


@app.task(name="noop", queue="bench")
async def noop() -> None:
    """Do nothing."""
