"""Reads on PostgreSQL: connections lent without a ping, and read again when found dead."""

import logging

import pytest
from conftest import end_connections

from jobdeck.domain.records import JobCreate
from jobdeck.engine.engine import Engine, ListFilter, Principal

ALICE = Principal("alice")


def _drop_read_connections(engine: Engine, count: int) -> None:
    """Open ``count`` connections of the reads' pool, give them back, and have the server
    end them."""
    connections = [engine._reads.connect() for _ in range(count)]
    pids = [c.connection.driver_connection.info.backend_pid for c in connections]
    for connection in connections:
        connection.close()
    assert end_connections(engine.db, "pid = ANY(%(pids)s::int[])", {"pids": pids}) == count


def test_a_read_that_finds_its_connection_dead_reads_again(
    engine: Engine, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reads' pool lends a connection without pinging it first (a round trip of the two
    a read of a job made): a read on a connection the server has ended runs again on a new
    one, once the pool has let go of the dead ones; the caller sees only the answer."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no connection to lose")
    job_id = engine.create_job(ALICE, JobCreate(name="kept")).id
    caplog.set_level(logging.WARNING, logger="jobdeck.engine.engine")
    _drop_read_connections(engine, 2)
    assert engine.get_job(ALICE, job_id).name == "kept"  # on the driver's cursor
    _drop_read_connections(engine, 2)
    assert [j.id for j in engine.list_jobs(ALICE, ListFilter()).jobs] == [job_id]  # via Core
    assert caplog.text.count("reading again") == 2
