"""Job counts by phase: what each principal may see, after every kind of change."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine as Database
from sqlalchemy import func, literal_column, select, update

from jobdeck.domain.records import JobCreate
from jobdeck.engine import engine as engine_module
from jobdeck.engine.engine import Engine, Principal, TaskOutcome
from jobdeck.engine.maintenance import Maintenance
from jobdeck.engine.settings import EngineSettings
from jobdeck.store.schema import job_counts, jobs

ALICE, BOB, ROOT = Principal("alice"), Principal("bob"), Principal("root", admin=True)


def submit(engine: Engine, who: Principal, *, start: bool) -> str:
    request = JobCreate.model_validate({"job_type": "noop", "start": start})
    return engine.create_job(who, request).id


def counted(database: Database, owner: str | None = None) -> dict[str, int]:
    """The counts straight from the jobs table."""
    query = select(jobs.c.phase, func.count()).group_by(jobs.c.phase)
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    with database.connect() as conn:
        return {phase: count for phase, count in conn.execute(query)}


def test_stats_follow_every_change(engine: Engine, database: Database) -> None:
    pending = [submit(engine, ALICE, start=False) for _ in range(3)]
    queued = [submit(engine, ALICE, start=True) for _ in range(4)]
    engine.create_jobs(BOB, [JobCreate(job_type="noop", start=True)] * 5)
    assert engine.stats(ROOT) == {"PENDING": 3, "QUEUED": 9}
    assert engine.stats(ALICE) == {"PENDING": 3, "QUEUED": 4}
    assert engine.stats(BOB) == {"QUEUED": 5}

    engine.run(ALICE, pending[0])
    engine.abort(ALICE, queued[0])
    engine.delete_job(ALICE, pending[1])
    engine.claim_tasks("w1", 3)
    assert engine.stats(ROOT) == {"PENDING": 1, "QUEUED": 6, "EXECUTING": 3, "ABORTED": 1}
    assert engine.stats(ALICE) == counted(database, "alice")
    assert engine.stats(BOB) == counted(database, "bob")
    assert engine.stats(ROOT) == counted(database)

    # Tasks that finish (one job completes, one fails), in the claim's transaction and alone.
    running = engine.claim_tasks("w1", 0)
    claimed = [task.task_seq for task in engine.claim_tasks("w2", 2)]
    engine.claim_tasks("w2", 0, finished=[TaskOutcome(claimed[0], "w2", ok=True)])
    engine.finish_tasks([TaskOutcome(claimed[1], "w2", ok=False)], worker_id="w2").result()
    assert running == []
    assert engine.stats(ROOT) == counted(database)
    assert engine.stats(ROOT)["COMPLETED"] == 1 and engine.stats(ROOT)["ERROR"] == 1

    # Archived past their destruction time; a copy; a batch of both kinds.
    with database.begin() as conn:
        past = datetime.now(UTC) - timedelta(days=1)
        conn.execute(update(jobs).where(jobs.c.phase == "ABORTED").values(destruction_time=past))
    assert engine.archive_expired() == 1
    engine.copy_job(ALICE, queued[1])
    engine.create_jobs(ALICE, [JobCreate(), JobCreate(start=True)])
    assert engine.stats(ROOT)["ARCHIVED"] == 1
    for who, owner in ((ROOT, None), (ALICE, "alice"), (BOB, "bob")):
        assert engine.stats(who) == counted(database, owner)


def test_counts_fold_into_one_row_each(engine: Engine, database: Database) -> None:
    submit(engine, BOB, start=False)
    engine.compact_counts()
    bobs = select(job_counts.c.n).where(job_counts.c.owner == "bob")
    if database.dialect.name == "postgresql":  # the row's version: rewritten or not
        bobs = bobs.add_columns(literal_column("xmin::text"))
    with database.connect() as conn:
        bob_before = conn.execute(bobs).all()
    for _ in range(5):
        submit(engine, ALICE, start=True)
    engine.claim_tasks("w1", 2)
    before = engine.stats(ROOT)
    engine.compact_counts()
    assert engine.stats(ROOT) == before == counted(database)
    with database.connect() as conn:
        rows = conn.execute(
            select(job_counts.c.phase, job_counts.c.n).where(job_counts.c.owner == "alice")
        ).all()
        bob_after = conn.execute(bobs).all()
    assert sorted(rows) == [("EXECUTING", 2), ("QUEUED", 3)]
    assert bob_after == bob_before  # a count without rows of changes is left alone


def test_the_upkeep_thread_folds_the_counts(engine: Engine, database: Database) -> None:
    for _ in range(4):
        submit(engine, ALICE, start=True)
    upkeep = Maintenance(engine, rescue_every=0.05, fold_every=0.1)
    upkeep.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            with database.connect() as conn:
                rows = conn.execute(select(job_counts.c.phase, job_counts.c.n)).all()
            if rows == [("QUEUED", 4)] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        upkeep.stop()
    assert rows == [("QUEUED", 4)]


def test_a_read_of_piled_up_counts_folds_them(
    engine: Engine, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "COUNT_ROWS_FOLDED_AT", 2)
    for _ in range(4):  # on PostgreSQL, four rows of changes
        submit(engine, ALICE, start=True)
    assert engine.stats(ALICE) == {"QUEUED": 4}
    engine.writer.run(lambda tx: None)  # after the fold the read handed to the writer
    with database.connect() as conn:
        assert conn.execute(select(job_counts.c.phase, job_counts.c.n)).all() == [("QUEUED", 4)]


def test_counts_stay_true_under_writers_in_parallel(
    engine: Engine, database: Database, settings: EngineSettings
) -> None:
    """Two engines on one store (two processes' worth) submit, claim and finish at once."""
    other = Engine(database, settings)
    other.start()
    try:

        def work(each: Engine, worker: str) -> None:
            for _ in range(10):
                each.create_jobs(ALICE, [JobCreate(job_type="noop", start=True)] * 20)
                claimed = each.claim_tasks(worker, 15)
                done = [TaskOutcome(task.task_seq, worker, ok=True) for task in claimed[:10]]
                each.claim_tasks(worker, 5, finished=done)

        threads = [
            threading.Thread(target=work, args=(each, f"w{index}"))
            for index, each in enumerate((engine, other))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        engine.compact_counts()
        assert engine.stats(ROOT) == counted(database)
        assert sum(engine.stats(ROOT).values()) == 400
    finally:
        other.close()
