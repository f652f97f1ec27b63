"""Reads on PostgreSQL: connections lent without a ping, and read again when found dead."""

import logging

import pytest
from conftest import end_connections

from jobdeck.domain.records import JobCreate
from jobdeck.engine.engine import (
    QUEUE_POSITION_CAP,
    Engine,
    ListFilter,
    Principal,
    TaskOutcome,
    _whole_job,
)

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


def test_the_read_of_a_job_that_is_not_queued_counts_no_queue(engine: Engine, db_url: str) -> None:
    """PostgreSQL's one-statement read computes a job's place in the queue only when it is
    QUEUED. (Computed for every job and dropped after, the counts read the whole jobs table
    for a finished job when the statistics still had the jobs queued: 13 ms a read among
    10,000, and the light-load latency of a benchmark tripled.)"""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite reads a queued job's place only for a queued job, in Python")
    created = engine.create_jobs(ALICE, [JobCreate(job_type="noop", start=True)] * 2000)
    with engine.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE jobs")  # statistics that have every job queued
    claimed = engine.claim_tasks("w1", 2000)
    engine.claim_tasks("w1", 0, finished=[TaskOutcome(t.task_seq, "w1", True) for t in claimed])
    job_id = created.jobs[-1].id
    assert engine.get_job(ALICE, job_id).phase == "COMPLETED"
    every, _own = _whole_job()
    with engine._reads.connect() as conn:
        sql, arguments, _process = every._prepare(conn.dialect)
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql,
            arguments({"job_id": job_id, "cap": QUEUE_POSITION_CAP}),
        )
        plan = cursor.fetchone()[0][0]["Plan"]
    # The job by its id, its details: a few pages; the counts were 2,000 and more.
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 100, plan
