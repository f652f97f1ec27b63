"""The engine's worker-facing rules: claims, finishes, retries, rescues, archiving.

These call the engine directly (no worker processes), on SQLite and PostgreSQL.
"""

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from jobdeck.domain.errors import NotFound
from jobdeck.domain.jobtypes import JobType
from jobdeck.domain.records import JobCreate, JobError, MessageCreate
from jobdeck.engine import engine as engine_module
from jobdeck.engine.engine import Engine, LogLine, Principal, TaskOutcome
from jobdeck.engine.settings import EngineSettings
from jobdeck.store.schema import jobs, tasks

ALICE = Principal("alice")
FRAMES = JobType(name="frames", kind="builtin", target="noop", task_parameters={"frame": "1-3"})


@pytest.fixture
def settings(settings: EngineSettings) -> EngineSettings:
    settings.job_types["frames"] = FRAMES
    return settings


def submit(engine: Engine, **fields: object) -> str:
    fields.setdefault("job_type", "noop")
    fields.setdefault("start", True)
    return engine.create_job(ALICE, JobCreate.model_validate(fields)).id


def ok(task_seq: int, worker: str = "w1", results: list | None = None) -> TaskOutcome:
    return TaskOutcome(task_seq=task_seq, worker_id=worker, ok=True, results=results or [])


def failure(task_seq: int, *, transient: bool, worker: str = "w1") -> TaskOutcome:
    error = JobError(
        source="worker:w1",
        message="it broke",
        error_code="boom",
        type="transient" if transient else "fatal",
    )
    return TaskOutcome(task_seq=task_seq, worker_id=worker, ok=False, error=error)


def finish(engine: Engine, outcomes: list[TaskOutcome]) -> None:
    engine.finish_tasks(outcomes).result()


def test_claims_follow_priority_then_submission(engine: Engine) -> None:
    low = submit(engine, priority=10)
    first = submit(engine, priority=50)
    second = submit(engine, priority=50)
    high = submit(engine, priority=90)
    claimed = engine.claim_tasks("w1", 3)
    assert [t.job_id for t in claimed] == [high, first, second]
    assert [t.job_id for t in engine.claim_tasks("w1", 10)] == [low]
    assert engine.claim_tasks("w1", 10) == []
    record = engine.get_job(ALICE, high)
    assert record.phase == "EXECUTING" and record.start_time is not None
    assert record.timeline[-1].status == "EXECUTING"
    assert record.timeline[-1].source == "worker:w1"
    assert record.task_status_counts == {"running": 1}


def timeline(engine: Engine, job_id: str) -> list[tuple[str, str]]:
    return [(e.status, e.source) for e in engine.get_job(ALICE, job_id).timeline]


def test_a_job_reported_started_is_queued_until_then(engine: Engine) -> None:
    job = submit(engine)
    [task] = engine.claim_tasks("w1", 10, start_jobs=False)
    record = engine.get_job(ALICE, job)
    assert record.phase == "QUEUED" and record.start_time is None
    assert record.task_status_counts == {"running": 1}
    began = datetime.now(UTC)
    time.sleep(0.05)  # the report is written a while after the task began
    started = {task.job_seq: began}
    assert engine.claim_tasks("w1", 10, started=started, start_jobs=False) == []
    record = engine.get_job(ALICE, job)
    assert record.phase == "EXECUTING" and record.start_time == began
    assert record.timeline[-1].timestamp == began
    finish(engine, [ok(task.task_seq)])
    assert timeline(engine, job) == [
        ("PENDING", "api"),
        ("QUEUED", "api"),
        ("EXECUTING", "worker:w1"),
        ("COMPLETED", "scheduler"),
    ]


def test_a_finish_without_a_reported_start_records_both(engine: Engine) -> None:
    done, multi, broken = submit(engine), submit(engine, job_type="frames"), submit(engine)
    claimed = engine.claim_tasks("w1", 10, start_jobs=False)
    by_job = {}
    for task in claimed:
        by_job.setdefault(task.job_id, []).append(task.task_seq)
    outcomes = [
        ok(by_job[done][0]),
        ok(by_job[multi][0]),
        failure(by_job[broken][0], transient=False),
    ]
    engine.finish_tasks(outcomes, worker_id="w1").result()
    assert timeline(engine, done) == [
        ("PENDING", "api"),
        ("QUEUED", "api"),
        ("EXECUTING", "worker:w1"),
        ("COMPLETED", "scheduler"),
    ]
    record = engine.get_job(ALICE, done)
    assert record.start_time is not None and record.end_time is not None
    # One of three tasks done: started, not finished.
    record = engine.get_job(ALICE, multi)
    assert record.phase == "EXECUTING" and record.start_time is not None
    assert [status for status, _ in timeline(engine, multi)][-1] == "EXECUTING"
    assert [status for status, _ in timeline(engine, broken)] == [
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "ERROR",
    ]


def test_a_finish_dates_a_queued_job_s_start_when_its_task_began(engine: Engine) -> None:
    """A task that ended before its start was reported: its job's EXECUTING entry and start
    time are when the worker began it, not when the finish is written; on the success path
    and the others' (a failure) alike."""
    done, broken = submit(engine), submit(engine)
    claimed = {
        task.job_id: task.task_seq for task in engine.claim_tasks("w1", 10, start_jobs=False)
    }
    began = datetime.now(UTC)
    time.sleep(0.05)
    outcomes = [ok(claimed[done]), failure(claimed[broken], transient=False)]
    for outcome in outcomes:
        outcome.started_at = began
    engine.finish_tasks(outcomes, worker_id="w1").result()
    for job in (done, broken):
        record = engine.get_job(ALICE, job)
        stamps = {entry.status: entry.timestamp for entry in record.timeline}
        assert record.start_time == began
        assert stamps["EXECUTING"] == began
        assert record.end_time is not None and record.end_time >= began + timedelta(seconds=0.05)


def test_jobs_a_write_starts_are_dated_by_the_latest_of_their_tasks_starts(
    engine: Engine,
) -> None:
    """Tasks that began at different times and ended before their starts were reported,
    recorded by one write: their jobs are dated by the latest start (exact for one job;
    none dated before its task began), before the write."""
    first, second = submit(engine), submit(engine)
    claimed = {
        task.job_id: task.task_seq for task in engine.claim_tasks("w1", 10, start_jobs=False)
    }
    early = datetime.now(UTC)
    time.sleep(0.02)
    late = datetime.now(UTC)
    time.sleep(0.02)
    outcomes = [ok(claimed[first]), ok(claimed[second])]
    outcomes[0].started_at, outcomes[1].started_at = early, late
    engine.finish_tasks(outcomes, worker_id="w1").result()
    for job in (first, second):
        record = engine.get_job(ALICE, job)
        assert record.start_time == late
        assert record.end_time is not None and record.end_time > late


def test_a_start_reported_from_a_clock_ahead_is_dated_when_it_is_written(engine: Engine) -> None:
    job = submit(engine)
    [task] = engine.claim_tasks("w1", 10, start_jobs=False)
    outcome = ok(task.task_seq)
    outcome.started_at = datetime.now(UTC) + timedelta(hours=1)
    engine.finish_tasks([outcome], worker_id="w1").result()
    record = engine.get_job(ALICE, job)
    assert record.start_time is not None and record.start_time <= datetime.now(UTC)
    assert record.start_time == record.end_time


def test_a_reported_start_needs_its_worker(engine: Engine) -> None:
    submit(engine)
    [task] = engine.claim_tasks("w1", 10, start_jobs=False)
    with pytest.raises(ValueError, match="worker_id"):
        engine.finish_tasks([], started={task.job_seq: datetime.now(UTC)})
    engine.finish_tasks([], started={task.job_seq: datetime.now(UTC)}, worker_id="w1").result()
    assert engine.get_job(ALICE, task.job_id).phase == "EXECUTING"


def test_pending_jobs_are_not_claimed(engine: Engine) -> None:
    job = submit(engine, start=False)
    assert engine.claim_tasks("w1", 10) == []
    engine.run(ALICE, job)
    assert [t.job_id for t in engine.claim_tasks("w1", 10)] == [job]


def test_success_completes_the_job(engine: Engine, settings: EngineSettings) -> None:
    job = submit(engine)
    [task] = engine.claim_tasks("w1", 10)
    assert task.results_dir == str(settings.results_dir / job)
    results_dir = Path(task.results_dir)
    results_dir.mkdir(parents=True)
    (results_dir / "out.txt").write_text("hello")
    finish(
        engine,
        [ok(task.task_seq, results=[{"path": "out.txt", "size": 5, "mime_type": "text/plain"}])],
    )
    record = engine.get_job(ALICE, job)
    assert record.phase == "COMPLETED" and record.status == "completed"
    assert [e.status for e in record.timeline] == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert record.timeline[-1].source == "scheduler"
    assert record.results[0].id == "out.txt" and record.results[0].size == 5
    assert record.execution.progress["tasks"].value == 1
    path, _ref = engine.result_file(ALICE, job, "out.txt")
    assert path is not None and path.read_text() == "hello"


def test_multi_task_job_aggregates(engine: Engine) -> None:
    job = submit(engine, job_type="frames")
    claimed = engine.claim_tasks("w1", 10)
    assert sorted(t.parameters["frame"] for t in claimed) == [1, 2, 3]
    assert {Path(t.results_dir).name for t in claimed} == {"0", "1", "2"}
    finish(engine, [ok(claimed[0].task_seq), ok(claimed[1].task_seq)])
    record = engine.get_job(ALICE, job)
    assert record.phase == "EXECUTING"
    assert record.task_status_counts == {"succeeded": 2, "running": 1}
    assert record.execution.progress["tasks"].model_dump() == {"value": 2, "max_value": 3}
    finish(engine, [ok(claimed[2].task_seq)])
    assert engine.get_job(ALICE, job).phase == "COMPLETED"


@pytest.mark.parametrize("start_jobs", [True, False])
def test_claimed_tasks_carry_their_own_jobs(engine: Engine, start_jobs: bool) -> None:
    """Each task claimed comes with its job's id, type and parameters and its results folder,
    also when an earlier claim took another task of its job (and started the job)."""
    frames = submit(engine, job_type="frames", json_parameters={"scene": "a"}, priority=90)
    plain = submit(engine, json_parameters={"scene": "b"})
    first = engine.claim_tasks("w1", 2, start_jobs=start_jobs)
    rest = engine.claim_tasks("w1", 10, start_jobs=start_jobs)
    assert [t.job_id for t in first] == [frames, frames]
    assert [t.job_id for t in rest] == [frames, plain]
    frame_tasks = [*first, rest[0]]
    assert sorted(t.parameters["frame"] for t in frame_tasks) == [1, 2, 3]
    for task in frame_tasks:
        assert (task.job_type, task.json_parameters) == ("frames", {"scene": "a"})
        assert Path(task.results_dir) == Path(
            engine.settings.results_dir, frames, str(task.task_index)
        )
    task = rest[1]
    assert (task.job_type, task.json_parameters, task.parameters) == ("noop", {"scene": "b"}, {})
    assert Path(task.results_dir) == Path(engine.settings.results_dir, plain)
    phase = "EXECUTING" if start_jobs else "QUEUED"
    assert engine.get_job(ALICE, frames).phase == engine.get_job(ALICE, plain).phase == phase


def test_transient_failure_is_retried_with_backoff(engine: Engine) -> None:
    job = submit(engine, max_retries_per_task=2)
    [task] = engine.claim_tasks("w1", 10)
    finish(engine, [failure(task.task_seq, transient=True)])
    record = engine.get_job(ALICE, job)
    assert record.phase == "EXECUTING"
    assert record.timeline[-1].status == "RETRYING"
    assert "retrying" in record.messages[-1].message
    assert record.errors == []
    retried = []
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while not retried and datetime.now(UTC) < deadline:
        retried = engine.claim_tasks("w2", 10)
    assert [t.task_seq for t in retried] == [task.task_seq]
    assert retried[0].attempt == 2
    finish(engine, [ok(task.task_seq, worker="w2")])
    assert engine.get_job(ALICE, job).phase == "COMPLETED"


def test_retries_run_out(engine: Engine) -> None:
    job = submit(engine, max_retries_per_task=1)
    for attempt in (1, 2):
        claimed = []
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while not claimed and datetime.now(UTC) < deadline:
            claimed = engine.claim_tasks("w1", 10)
        assert claimed[0].attempt == attempt
        finish(engine, [failure(claimed[0].task_seq, transient=True)])
    record = engine.get_job(ALICE, job)
    assert record.phase == "ERROR" and record.status == "failed"
    assert record.errors[0].error_code == "boom"


def test_fatal_failure_is_not_retried(engine: Engine) -> None:
    job = submit(engine, max_retries_per_task=5)
    [task] = engine.claim_tasks("w1", 10)
    finish(engine, [failure(task.task_seq, transient=False)])
    record = engine.get_job(ALICE, job)
    assert record.phase == "ERROR"
    assert record.errors[0].type == "fatal"


def test_failure_budget(engine: Engine) -> None:
    job = submit(engine, job_type="frames", max_failed_tasks=1)
    claimed = engine.claim_tasks("w1", 10)
    finish(engine, [failure(claimed[0].task_seq, transient=False)])
    assert engine.get_job(ALICE, job).phase == "EXECUTING"
    finish(engine, [failure(claimed[1].task_seq, transient=False)])
    record = engine.get_job(ALICE, job)
    assert record.phase == "ERROR"
    assert record.task_status_counts == {"failed": 2, "cancelled": 1}
    # the third task's late success changes nothing
    finish(engine, [ok(claimed[2].task_seq)])
    assert engine.get_job(ALICE, job).phase == "ERROR"


def test_failures_within_budget_still_complete(engine: Engine) -> None:
    job = submit(engine, job_type="frames", max_failed_tasks=1)
    claimed = engine.claim_tasks("w1", 10)
    finish(
        engine,
        [failure(claimed[0].task_seq, transient=False)] + [ok(t.task_seq) for t in claimed[1:]],
    )
    record = engine.get_job(ALICE, job)
    assert record.phase == "COMPLETED" and len(record.errors) == 1


def test_abort_while_running_cancels_tasks_and_keeps_late_results(engine: Engine) -> None:
    job = submit(engine)
    [task] = engine.claim_tasks("w1", 10)
    cancelled: list[set[int]] = []
    engine.notifier.add_task_listener(lambda changes: cancelled.append(changes.tasks_cancelled))
    engine.abort(ALICE, job)
    assert {task.task_seq} in cancelled
    assert engine.heartbeat("w1", [task.task_seq]) == set()
    Path(task.results_dir).mkdir(parents=True)
    (Path(task.results_dir) / "partial.txt").write_text("x")
    finish(
        engine, [ok(task.task_seq, results=[{"path": "partial.txt", "size": 1, "mime_type": None}])]
    )
    record = engine.get_job(ALICE, job)
    assert record.phase == "ABORTED"
    assert [r.id for r in record.results] == ["partial.txt"]
    assert [e.error_code for e in record.errors] == ["aborted"]


def test_lapsed_lease_is_rescued_and_retried(engine: Engine) -> None:
    job = submit(engine)
    [task] = engine.claim_tasks("dead-worker", 10)
    assert engine.rescue_lapsed() == 0
    with engine.db.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.seq == task.task_seq)
            .values(lease_expires=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert engine.rescue_lapsed() == 1
    record = engine.get_job(ALICE, job)
    assert record.timeline[-1].status == "RETRYING"
    assert record.timeline[-1].source == "rescuer"
    rescued = []
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while not rescued and datetime.now(UTC) < deadline:
        rescued = engine.claim_tasks("w2", 10)
    assert [t.task_seq for t in rescued] == [task.task_seq]
    # the dead worker's late report no longer counts; the new one's does
    finish(engine, [failure(task.task_seq, transient=False, worker="dead-worker")])
    assert engine.get_job(ALICE, job).phase == "EXECUTING"
    finish(engine, [ok(task.task_seq, worker="w2")])
    assert engine.get_job(ALICE, job).phase == "COMPLETED"


def test_heartbeat_and_release(engine: Engine) -> None:
    submit(engine)
    [task] = engine.claim_tasks("w1", 10)
    assert engine.heartbeat("w1", [task.task_seq]) == {task.task_seq}
    assert engine.heartbeat("w2", [task.task_seq]) == set()
    engine.release_tasks("w1", [task.task_seq])
    [again] = engine.claim_tasks("w2", 10)
    assert again.task_seq == task.task_seq and again.attempt == 1


def test_archiving_deletes_results_and_keeps_status(engine: Engine) -> None:
    done = submit(engine)
    [task] = engine.claim_tasks("w1", 10)
    Path(task.results_dir).mkdir(parents=True)
    (Path(task.results_dir) / "r.txt").write_text("r")
    finish(engine, [ok(task.task_seq, results=[{"path": "r.txt", "size": 1}])])
    waiting = submit(engine)
    future = submit(engine)
    with engine.db.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_([done, waiting]))
            .values(destruction_time=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert engine.archive_expired() == 2
    record = engine.get_job(ALICE, done)
    assert record.phase == "ARCHIVED" and record.status == "completed"
    assert record.results == [] and not Path(task.results_dir).exists()
    aborted = engine.get_job(ALICE, waiting)
    assert aborted.phase == "ARCHIVED" and aborted.status == "cancelled"
    assert [e.status for e in aborted.timeline][-2:] == ["ABORTED", "ARCHIVED"]
    assert engine.get_job(ALICE, future).phase == "QUEUED"
    assert engine.archive_expired() == 0


def test_deleting_a_job_deletes_its_tasks(engine: Engine) -> None:
    """No foreign key removes a job's tasks with it (migration 0003): the engine does, for a
    queued job's tasks and a running one's, and leaves other jobs' tasks alone."""
    running = engine.create_job(ALICE, JobCreate(job_type="frames", start=True)).id
    claimed = engine.claim_tasks("w1", 1)
    assert [task.job_id for task in claimed] == [running]
    queued = submit(engine)
    kept = submit(engine)
    engine.delete_job(ALICE, running)
    engine.delete_job(ALICE, queued)
    with engine.db.connect() as conn:
        left = conn.execute(select(jobs.c.id).join(tasks, tasks.c.job_seq == jobs.c.seq)).all()
        assert conn.execute(select(func.count()).select_from(tasks)).scalar() == len(left)
    assert [row.id for row in left] == [kept]
    assert [task.job_id for task in engine.claim_tasks("w2", 10)] == [kept]


def test_tasks_of_a_job_deleted_by_hand_are_dropped_at_their_claim(engine: Engine) -> None:
    """A job deleted in SQL, not through the engine, leaves its tasks (no foreign key): the
    claim that meets them deletes them and hands out the others."""
    gone = submit(engine)
    kept = submit(engine)
    with engine.db.begin() as conn:
        conn.execute(delete(jobs).where(jobs.c.id == gone))
    assert [task.job_id for task in engine.claim_tasks("w1", 10)] == [kept]
    with engine.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar() == 1
    assert engine.claim_tasks("w1", 10) == []


def test_concurrent_claims_never_share_a_task(engine: Engine) -> None:
    engine.create_jobs(ALICE, [JobCreate(job_type="noop", start=True) for _ in range(300)])
    seen: list[int] = []
    lock = threading.Lock()

    def claim(worker: str) -> None:
        while batch := engine.claim_tasks(worker, 7):
            with lock:
                seen.extend(t.task_seq for t in batch)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 300 == len(set(seen))


def test_two_engines_on_one_database_claim_disjointly(engine: Engine, db_url: str) -> None:
    """Two processes' worth of engines (as `jobdeck worker`s on PostgreSQL would be)."""
    from jobdeck.store.database import open_database

    other = Engine(open_database(db_url), engine.settings)
    other.start()
    try:
        engine.create_jobs(ALICE, [JobCreate(job_type="noop", start=True) for _ in range(200)])
        seen: list[int] = []
        lock = threading.Lock()

        def claim(which: Engine, worker: str) -> None:
            while batch := which.claim_tasks(worker, 9):
                with lock:
                    seen.extend(t.task_seq for t in batch)

        threads = [
            threading.Thread(target=claim, args=(e, f"w{i}"))
            for i, e in enumerate([engine, other, engine, other])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 200 == len(set(seen))
    finally:
        other.close()
        other.db.dispose()


def test_quote_follows_recent_completions(engine: Engine) -> None:
    # create_jobs, not submit: reading a record before the first completion would cache
    # "no history" for the type (for 10 s).
    engine.create_jobs(ALICE, [JobCreate(job_type="noop", start=True)])
    [task] = engine.claim_tasks("w1", 10)
    finish(engine, [ok(task.task_seq)])
    queued = engine.get_job(ALICE, submit(engine))
    assert queued.queue_position == 0
    assert queued.quote is not None and queued.quote >= queued.creation_time


def test_queue_position_is_counted_up_to_the_cap(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobdeck.engine.engine.QUEUE_POSITION_CAP", 3)
    urgent = submit(engine, priority=90)
    ids = [submit(engine) for _ in range(5)]
    positions = [engine.get_job(ALICE, job_id).queue_position for job_id in ids]
    # One job of higher priority is ahead of all; the count stops at the cap.
    assert positions == [1, 2, 3, 3, 3]
    assert engine.get_job(ALICE, urgent).queue_position == 0


def test_one_statement_reads_the_record_the_statements_of_sqlite_read(
    engine: Engine, db_url: str
) -> None:
    """PostgreSQL reads a job in one statement (one snapshot, one round trip): the record is
    the one the separate statements read, each note, result and task count once and in
    order, a queued job's place included, and nobody else's job."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite reads in parts, in a transaction")
    busy = submit(engine, job_type="frames", max_retries_per_task=1)
    first, second = engine.claim_tasks("w1", 2)
    results = [{"path": name, "size": 1, "mime_type": "text/plain"} for name in ("a", "b")]
    finish(
        engine,
        [ok(first.task_seq, results=results), failure(second.task_seq, transient=True)],
    )
    engine.add_message(ALICE, busy, MessageCreate(message="first"))
    engine.add_message(ALICE, busy, MessageCreate(message="second", level="warning"))
    queued = [submit(engine, priority=priority) for priority in (10, 90, 50)]
    idle = engine.create_job(ALICE, JobCreate(name="idle")).id
    for job_id in (busy, *queued, idle):
        with engine._reads.connect() as conn:
            whole = engine._whole_record(conn, ALICE, job_id)
            parts = engine._record_read_in_parts(conn, ALICE, job_id)
        # The quote is an expected time, computed from the clock at each read.
        assert whole.model_dump(exclude={"quote"}) == parts.model_dump(exclude={"quote"})
    record = engine.get_job(ALICE, busy)
    assert [m.message for m in record.messages][-2:] == ["first", "second"]
    assert [r.id for r in record.results] == ["0/a", "0/b"]  # task 0's
    assert record.task_status_counts == {"succeeded": 1, "ready": 2}
    positions = [engine.get_job(ALICE, job_id).queue_position for job_id in queued]
    assert positions == [2, 0, 1]
    with pytest.raises(NotFound):
        engine.get_job(Principal("bob"), busy)


def test_a_batchs_tasks_are_queued_in_the_order_of_its_jobs_and_their_tasks(
    engine: Engine,
) -> None:
    """Within a priority, claims take tasks in the order they were inserted: a batch's jobs in
    the order given, each job's tasks by index. (Inserted with their jobs in one statement, a
    join of the two on PostgreSQL did not keep that order.)"""
    created = engine.create_jobs(
        ALICE,
        [JobCreate(job_type="frames", start=True, name=f"job {i}") for i in range(6)]
        + [JobCreate(job_type="noop", start=True)],
    )
    order = [ref.id for ref in created.jobs]
    with engine.db.connect() as conn:
        found = conn.execute(
            select(jobs.c.id, tasks.c.task_index, tasks.c.parameters)
            .join(jobs, jobs.c.seq == tasks.c.job_seq)
            .order_by(tasks.c.seq)
        ).all()
    expected = [(job_id, index) for job_id in order[:6] for index in range(3)] + [(order[6], 0)]
    assert [(row.id, row.task_index) for row in found] == expected
    assert [row.parameters for row in found[:3]] == [{"frame": 1}, {"frame": 2}, {"frame": 3}]
    assert found[-1].parameters == {}
    claimed = engine.claim_tasks("w1", 100)
    assert [(task.job_id, task.task_index) for task in claimed] == expected


def test_log_lines_wait_for_the_writer_past_a_bound(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lines were handed to the writer without a bound: a task printing faster than the
    # store takes its lines grew the service's memory with them (680 MB for 2 million).
    monkeypatch.setattr(engine_module, "LOG_LINES_IN_FLIGHT", 10)
    job = submit(engine)
    seq = engine.writer.run(lambda tx: tx.conn.execute(select(jobs.c.seq)).scalar_one())
    now = datetime.now(UTC)
    hold = threading.Event()
    engine.writer.submit(lambda tx: hold.wait(10))  # the writer is busy until released
    engine.append_logs([LogLine(seq, 0, "info", now, f"a{n}") for n in range(11)])
    more = threading.Thread(target=engine.append_logs, args=([LogLine(seq, 0, "info", now, "b")],))
    more.start()
    more.join(0.3)
    assert more.is_alive()  # 11 lines wait: the next ones wait for them
    hold.set()
    more.join(10)
    assert not more.is_alive()
    engine.writer.run(lambda tx: None)
    messages = [line.message for line in engine.logs(ALICE, job).logs]
    assert messages == [f"a{n}" for n in range(11)] + ["b"]
