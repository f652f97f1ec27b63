"""Celery app with one no-op task: Redis broker, Redis result backend (BENCH_RESULT_URL)."""

import os

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_BROKER_URL"], backend=os.environ["BENCH_RESULT_URL"])
app.conf.update(
    task_track_started=False,  # one result key per finished task, nothing else in the db
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="bench",
)


@app.task(name="noop")
def noop() -> None:
    """Do nothing."""
