"""Creating jobs: in one transaction, and once per idempotency key."""

import asyncio

import pytest
from sqlalchemy import Engine as Database
from sqlalchemy import Table, func, select

from jobdeck.domain.errors import ValidationFailed
from jobdeck.domain.jobtypes import JobType, ParameterSpec
from jobdeck.domain.records import JobBatchCreated, JobCreate
from jobdeck.engine.engine import Engine, Principal
from jobdeck.engine.writer import Tx
from jobdeck.store.schema import jobs, tasks

ALICE = Principal("alice")
FRAMES = JobType(
    name="frames",
    kind="builtin",
    target="noop",
    parameters={"frames": ParameterSpec("string", "1-3")},
    task_parameters={"frame": "{frames}"},
)


def count(database: Database, table: Table = jobs) -> int:
    with database.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_async_creation_is_the_same_as_sync(engine: Engine, database: Database) -> None:
    requests = [JobCreate(job_type="noop", start=True), JobCreate(name="idle")]
    created = asyncio.run(engine.create_jobs_async(ALICE, requests))
    assert [ref.phase for ref in created.jobs] == ["QUEUED", "PENDING"]
    assert sum(engine.get_job(ALICE, created.jobs[0].id).task_status_counts.values()) == 1
    assert (count(database), count(database, tasks)) == (2, 1)
    # A large batch is prepared in a thread, with the same outcome.
    many = asyncio.run(engine.create_jobs_async(ALICE, [requests[0]] * 150))
    assert len(many.jobs) == len({ref.id for ref in many.jobs}) == 150
    assert (count(database), count(database, tasks)) == (152, 151)


def test_a_key_taken_between_look_up_and_insert_returns_the_first_jobs(
    engine: Engine, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = engine.create_jobs(ALICE, [JobCreate(name="first")], idempotency_key="k")
    # As if another process had inserted them just after this request looked the key up.
    look_ups: list[str] = []
    real = Engine._created_with

    def missed_once(tx: Tx, principal: Principal, key: str) -> JobBatchCreated | None:
        look_ups.append(key)
        return None if len(look_ups) == 1 else real(tx, principal, key)

    monkeypatch.setattr(Engine, "_created_with", staticmethod(missed_once))
    again = engine.create_jobs(ALICE, [JobCreate(name="second")], idempotency_key="k")
    assert again == first
    assert look_ups == ["k", "k"]
    assert count(database) == 1
    # The writer goes on: the failed insert was rolled back to its savepoint only.
    assert engine.create_jobs(ALICE, [JobCreate(name="third")]).jobs[0].phase == "PENDING"
    assert count(database) == 2


def test_jobs_of_a_batch_given_no_parameters_get_their_types_defaults(
    engine: Engine, database: Database
) -> None:
    # Jobs of one type without parameters share the checked defaults within a batch: each
    # still gets its type's own, whatever else the batch holds.
    requests = [
        JobCreate(job_type="sleep", start=True),
        JobCreate(job_type="sleep", parameters={"seconds": 5}, start=True),
        JobCreate(job_type="sleep"),
        JobCreate(job_type="noop", start=True),
        JobCreate(job_type="sleep", start=True),
        JobCreate(name="own"),
    ]
    created = engine.create_jobs(ALICE, requests)
    records = [engine.get_job(ALICE, ref.id) for ref in created.jobs]
    seconds = [
        r.parameters["seconds"].value if "seconds" in r.parameters else None for r in records
    ]
    assert seconds == [1.0, 5.0, 1.0, None, 1.0, None]
    assert [r.phase for r in records] == [
        "QUEUED",
        "QUEUED",
        "PENDING",
        "QUEUED",
        "QUEUED",
        "PENDING",
    ]
    assert [sum(r.task_status_counts.values()) for r in records] == [1, 1, 0, 1, 1, 0]
    assert records[3].parameters == {} and records[5].parameters == {}
    assert (count(database), count(database, tasks)) == (6, 4)


def test_a_submission_makes_at_most_as_many_tasks_as_a_job_may_have(
    engine: Engine, database: Database
) -> None:
    # Each job was held to 100,000 tasks, a batch of them to nothing: 20 such jobs in one
    # request held the writer 13 s and the service at 690 MB, and 10,000 would have taken
    # all the machine's memory.
    engine.settings.job_types["frames"] = FRAMES
    big = JobCreate(job_type="frames", parameters={"frames": "1-60000"}, start=True)
    with pytest.raises(ValidationFailed) as refused:
        engine.create_jobs(ALICE, [big, JobCreate(name="idle"), big])
    assert "at most 100000 tasks" in refused.value.message
    assert "by job 3 of 3" in refused.value.message
    assert (count(database), count(database, tasks)) == (0, 0)
    # Jobs that are not queued yet make no tasks; one job may have all it may.
    engine.create_jobs(ALICE, [big.model_copy(update={"start": False})] * 3)
    whole = JobCreate(job_type="frames", parameters={"frames": "1-100000"}, start=True)
    engine.create_jobs(ALICE, [whole])
    assert (count(database), count(database, tasks)) == (4, 100_000)
