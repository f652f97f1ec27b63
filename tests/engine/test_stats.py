"""Job counts by phase: what each principal may see, after every kind of change."""

from sqlalchemy import Engine as Database
from sqlalchemy import func, select

from jobdeck.domain.records import JobCreate
from jobdeck.engine.engine import Engine, Principal
from jobdeck.store.schema import jobs

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
