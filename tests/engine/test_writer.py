"""The writer's own connection."""

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy import Engine as Database
from sqlalchemy.exc import OperationalError

from jobdeck.domain.records import JobCreate, JobRecord
from jobdeck.engine.engine import Engine, Principal, TaskOutcome
from jobdeck.engine.settings import EngineSettings

ALICE = Principal("alice")


def _prepared(engine: Engine) -> list[str]:
    """The statements prepared on the writer's connection."""
    return engine.writer.run(
        lambda tx: [
            text
            for (text,) in tx.conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")
        ]
    )


def test_the_writer_plans_each_statement_for_the_tables_as_they_are(
    engine: Engine, db_url: str
) -> None:
    """A generic plan made while the tables were small kept scanning them whole once they had
    grown (a 10,000-job drain after a light load: 4,400 jobs/s against 10,000): a statement
    the writer runs again and again is not prepared, but for the inserts of new jobs, whose
    plans scan no table."""
    if not db_url.startswith("postgresql"):
        pytest.skip("plan caching is PostgreSQL's")
    for _ in range(10):
        engine.create_job(ALICE, JobCreate(job_type="noop", start=True))
        engine.claim_tasks("w1", 1)
    prepared = _prepared(engine)
    assert {statement.split(" (")[0] for statement in prepared} == {
        "INSERT INTO jobs",
        "INSERT INTO job_counts",
        "INSERT INTO tasks",
    }


def test_the_writer_reads_a_waited_on_job_for_its_waiter_with_a_prepared_statement(
    engine: Engine, db_url: str
) -> None:
    """On PostgreSQL too the writer hands a waiter the record its change committed (a read by
    key, the one statement it prepares: planning it took longer than running it)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("plan caching is PostgreSQL's")
    job_id = engine.create_job(ALICE, JobCreate(job_type="noop")).id

    async def change_and_watch() -> object:
        with engine.notifier.watch_job(job_id) as watch:
            await asyncio.to_thread(engine.run, ALICE, job_id)
            await asyncio.wait_for(watch.changed.wait(), 5)
            return watch.take_record()

    record = asyncio.run(change_and_watch())
    assert isinstance(record, JobRecord) and record.phase == "QUEUED"
    assert record == engine.get_job(ALICE, job_id)
    [read] = [text for text in _prepared(engine) if not text.startswith("INSERT")]
    assert read.startswith("SELECT job.seq")


def _sync_setting(engine: Engine, *, durable: bool) -> "Future[str]":
    """Hand over an operation that reads the transaction's ``synchronous_commit``."""
    return engine.writer.submit(
        lambda tx: tx.conn.exec_driver_sql("SHOW synchronous_commit").scalar_one(),
        durable=durable,
    )


def test_a_batch_of_operations_that_may_be_lost_commits_without_waiting_for_the_disk(
    engine: Engine, db_url: str
) -> None:
    """A claim alone need not wait for the log's flush (0.3 to 1.7 ms a commit here); a batch
    with any durable operation in it waits, for all of them."""
    if not db_url.startswith("postgresql"):
        pytest.skip("synchronous_commit is PostgreSQL's")
    assert _sync_setting(engine, durable=False).result() == "off"
    assert _sync_setting(engine, durable=True).result() == "on"
    # Three operations in one batch: the writer is held busy until all three wait for it.
    release = threading.Event()
    held = engine.writer.submit(lambda tx: release.wait(10))
    mixed = [_sync_setting(engine, durable=d) for d in (False, True, False)]
    release.set()
    assert held.result() is True
    assert [future.result() for future in mixed] == ["on", "on", "on"]
    # What a relaxed commit wrote is committed: others read it at once.
    engine.writer.run(
        lambda tx: tx.conn.exec_driver_sql(
            "CREATE TABLE relaxed (n int); INSERT INTO relaxed VALUES (7)"
        ),
        durable=False,
    )
    with engine.db.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM relaxed").scalar_one() == 7


def test_only_claims_and_leases_may_be_lost(engine: Engine) -> None:
    """Which of the engine's writes it hands over as ``durable=False``: a claim alone and a
    lease's extension; a claim that also records finished tasks, and a submission, are
    durable."""
    handed: list[bool] = []
    submit = engine.writer.submit

    def spy(operation: Any, *, durable: bool = True) -> "Future[Any]":
        handed.append(durable)
        return submit(operation, durable=durable)

    engine.writer.submit = spy  # type: ignore[method-assign]
    admin = Principal(user="admin", admin=True)
    engine.create_jobs(admin, [JobCreate(start=True, job_type="noop")] * 2)
    first = engine.claim_tasks("w1", 1)
    engine.heartbeat("w1", [first[0].task_seq])
    done = TaskOutcome(task_seq=first[0].task_seq, worker_id="w1", ok=True)
    assert len(engine.claim_tasks("w1", 1, finished=[done])) == 1
    assert handed == [True, False, False, True]


def test_an_operation_cancelled_before_it_runs_is_not_written(engine: Engine) -> None:
    """A caller that gives up (an asyncio task cancelled while awaiting the commit) cancels
    its future: the operation is not run, and the writer goes on (resolving a cancelled
    future raised, and stopped the writing thread)."""
    release = threading.Event()
    held = engine.writer.submit(lambda tx: release.wait(10))
    ran: list[str] = []
    given_up = engine.writer.submit(lambda tx: ran.append("given up"))
    assert given_up.cancel()
    kept = engine.writer.submit(lambda tx: ran.append("kept"))
    release.set()
    assert held.result(timeout=10) is True and kept.result(timeout=10) is None
    assert ran == ["kept"]
    assert engine.writer.submit(lambda tx: "still writing").result(timeout=10) == "still writing"


def test_a_database_that_cannot_be_reached_fails_the_writes_and_the_writer_goes_on(
    settings: EngineSettings, unreachable_pg: Database
) -> None:
    """With PostgreSQL down (nothing listens on its port), each write fails at once with the
    connection's error instead of stopping the writing thread (which left every later
    write waiting for ever)."""
    engine = Engine(unreachable_pg, settings)
    engine.writer.start()  # the writer alone: the notifier would only retry its LISTEN
    try:
        for _ in range(2):
            with pytest.raises(OperationalError):
                engine.writer.submit(lambda tx: None).result(timeout=10)
    finally:
        engine.writer.stop()


def test_what_an_operation_asks_for_after_its_commit_is_called_once_it_is_committed(
    engine: Engine,
) -> None:
    """``Tx.after_commit``: called after the commit, before the operation's future resolves;
    not for an operation that failed, nor for any operation of a batch that failed."""
    seen: list[tuple[str, bool]] = []

    def committed(name: str) -> None:
        # Another connection reads what the operation wrote: it is committed.
        with engine.db.connect() as conn:
            found = conn.exec_driver_sql(f"SELECT count(*) FROM marks WHERE name = '{name}'")
            seen.append((name, found.scalar_one() == 1))

    def mark(name: str, *, fail: bool = False) -> Any:
        def op(tx: Any) -> None:
            tx.conn.exec_driver_sql(f"INSERT INTO marks VALUES ('{name}')")
            tx.after_commit.append(lambda: committed(name))
            if fail:
                raise ValueError(name)

        return op

    engine.writer.run(lambda tx: tx.conn.exec_driver_sql("CREATE TABLE marks (name text)"))
    engine.writer.run(mark("alone"))
    assert seen == [("alone", True)]
    # One batch: the failed operation's savepoint is rolled back, the others commit.
    release = threading.Event()
    held = engine.writer.submit(lambda tx: release.wait(10))
    batch = [engine.writer.submit(mark(n, fail=n == "b")) for n in ("a", "b", "c")]
    release.set()
    held.result(timeout=10)
    assert batch[0].result(timeout=10) is None and batch[2].result(timeout=10) is None
    with pytest.raises(ValueError):
        batch[1].result(timeout=10)
    assert seen[1:] == [("a", True), ("c", True)]
    with pytest.raises(ValueError):
        engine.writer.run(mark("failed alone", fail=True))
    assert len(seen) == 3
