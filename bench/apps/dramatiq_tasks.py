"""Dramatiq Redis broker with the Results middleware (BENCH_RESULT_URL) and a no-op actor."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=os.environ["BENCH_BROKER_URL"])
backend = RedisBackend(url=os.environ["BENCH_RESULT_URL"])
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", store_results=True, max_retries=0, result_ttl=3_600_000)
def noop() -> None:
    """Do nothing."""
