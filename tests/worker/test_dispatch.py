"""Workers end to end: the engine, the dispatcher and real worker processes.

Runs on SQLite and PostgreSQL. Process trees are checked through /proc.
"""

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import alive, parent_of
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from jobdeck.domain.errors import Conflict
from jobdeck.domain.jobtypes import JobType, ParameterSpec
from jobdeck.domain.phases import FINAL_PHASES
from jobdeck.domain.records import JobCreate, JobRecord
from jobdeck.engine.engine import Engine, Principal
from jobdeck.engine.settings import EngineSettings
from jobdeck.store.schema import jobs, tasks
from jobdeck.worker import dispatcher as dispatcher_module
from jobdeck.worker.dispatcher import Dispatcher
from jobdeck.worker.pool import ProcessPool
from jobdeck.worker.protocol import TaskLog

ALICE = Principal("alice")
HERE = Path(__file__).parent

TEST_TYPES = {
    "pidsleep": JobType(
        name="pidsleep",
        kind="command",
        command=("sh", "-c", "echo $$ > {pidfile}; exec sleep {seconds}"),
        parameters={"pidfile": ParameterSpec("path"), "seconds": ParameterSpec("int", 30)},
    ),
    "tree": JobType(
        name="tree",
        kind="command",
        command=("sh", "-c", "sleep 60 & echo $! > {pidfile}; echo started; wait"),
        parameters={"pidfile": ParameterSpec("path")},
    ),
    "chatty": JobType(
        name="chatty",
        kind="command",
        command=("sh", "-c", "echo one; echo two >&2; sleep 30"),
    ),
    "nul": JobType(
        name="nul", kind="command", command=("sh", "-c", "printf 'a\\000b\\n'; echo after")
    ),
    "nul_failure": JobType(
        name="nul_failure",
        kind="command",
        command=("sh", "-c", "printf 'bad\\000input\\n' >&2; exit 2"),
    ),
    "count": JobType(
        name="count",
        kind="python",
        target="dispatch_jobs:count",
        parameters={"n": ParameterSpec("int", 3)},
    ),
    "status_error": JobType(
        name="status_error", kind="python", target="dispatch_jobs:status_error"
    ),
    "odd_file_name": JobType(
        name="odd_file_name", kind="python", target="dispatch_jobs:odd_file_name"
    ),
    "deep_result": JobType(name="deep_result", kind="python", target="dispatch_jobs:deep_result"),
    "long_mime_type": JobType(
        name="long_mime_type", kind="python", target="dispatch_jobs:long_mime_type"
    ),
    "lock_error": JobType(name="lock_error", kind="python", target="dispatch_jobs:lock_error"),
    "long_code_error": JobType(
        name="long_code_error", kind="python", target="dispatch_jobs:long_code_error"
    ),
    "leaves_child": JobType(
        name="leaves_child",
        kind="command",
        command=("sh", "-c", "sleep 300 & echo $! > {pidfile}"),
        parameters={"pidfile": ParameterSpec("path")},
    ),
    "leaves_daemon": JobType(
        name="leaves_daemon",
        kind="command",
        command=(
            "sh",
            "-c",
            "(setsid sh -c 'sleep 300 & echo $! > {pidfile}' &); "
            "while [ ! -s {pidfile} ]; do sleep 0.01; done",
        ),
        parameters={"pidfile": ParameterSpec("path")},
    ),
    "leaves_subprocess": JobType(
        name="leaves_subprocess",
        kind="python",
        target="dispatch_jobs:leaves_subprocess",
        parameters={"pidfile": ParameterSpec("path")},
    ),
    "spew": JobType(
        name="spew",
        kind="command",
        command=("seq", "1", "5000"),
        max_log_bytes=1000,
    ),
    "spew_python": JobType(
        name="spew_python",
        kind="python",
        target="dispatch_jobs:spew",
        max_log_bytes=1000,
    ),
    "frames": JobType(
        name="frames",
        kind="command",
        command=("sh", "-c", "echo frame {frame} parent $PPID"),
        parameters={"frames": ParameterSpec("string", "1-40")},
        task_parameters={"frame": "{frames}"},
    ),
}


@pytest.fixture
def settings(settings: EngineSettings, monkeypatch: pytest.MonkeyPatch) -> EngineSettings:
    # The worker processes import the python job types from this directory.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))
    settings.job_types.update(TEST_TYPES)
    return settings


@pytest.fixture
def dispatcher(engine: Engine) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(engine, ProcessPool(2, engine.job_types), worker_id="test-worker")
    dispatcher.start()
    yield dispatcher
    dispatcher.stop(timeout=5)


def submit(engine: Engine, job_type: str, **fields: object) -> str:
    request = JobCreate.model_validate({"job_type": job_type, "start": True, **fields})
    return engine.create_job(ALICE, request).id


def wait_for(
    engine: Engine, job_id: str, done: Callable[[JobRecord], bool], timeout: float = 20
) -> JobRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = engine.get_job(ALICE, job_id)
        if done(record):
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck: {engine.get_job(ALICE, job_id)}")


def finished(engine: Engine, job_id: str, timeout: float = 20) -> JobRecord:
    return wait_for(engine, job_id, lambda r: r.phase in FINAL_PHASES, timeout)


def read_pid(path: Path, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path} never got a pid")


def test_many_jobs_complete_across_processes(engine: Engine, dispatcher: Dispatcher) -> None:
    created = engine.create_jobs(
        ALICE, [JobCreate(job_type="noop", start=True) for _ in range(1000)]
    )
    deadline = time.monotonic() + 60
    while engine.stats(ALICE).get("COMPLETED", 0) < 1000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.stats(ALICE) == {"COMPLETED": 1000}
    record = engine.get_job(ALICE, created.jobs[0].id)
    assert [e.status for e in record.timeline] == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert record.timeline[2].source == "worker:test-worker"


def claimed_at(engine: Engine, job_id: str) -> list[Any]:
    """When the job's tasks were claimed (their ``started_at``, set by the claim)."""
    with engine.db.connect() as conn:
        seq = conn.execute(select(jobs.c.seq).where(jobs.c.id == job_id)).scalar_one()
        found = conn.execute(select(tasks.c.started_at).where(tasks.c.job_seq == seq))
        return list(found.scalars())


def test_a_job_submitted_to_idle_workers_is_claimed_by_its_submission(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    for _ in range(5):
        time.sleep(0.2)  # the workers are idle, and have said so
        job_id = submit(engine, "noop")
        record = finished(engine, job_id)
        assert record.phase == "COMPLETED"
        # The claim's time is its transaction's: the same as the job's creation.
        assert claimed_at(engine, job_id) == [record.creation_time]
        assert [e.status for e in record.timeline] == [
            "PENDING",
            "QUEUED",
            "EXECUTING",
            "COMPLETED",
        ]


def test_a_job_submitted_to_busy_workers_waits_for_their_claim(
    engine: Engine, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    sleeps = [
        submit(engine, "pidsleep", parameters={"pidfile": str(tmp_path / f"{i}"), "seconds": 3})
        for i in range(2)
    ]
    for i in range(2):
        read_pid(tmp_path / f"{i}")
    waiting = submit(engine, "noop")
    record = finished(engine, waiting)
    assert record.phase == "COMPLETED"
    # Claimed once a process was free, by the worker itself.
    assert claimed_at(engine, waiting)[0] > record.creation_time
    assert all(finished(engine, job_id).phase == "COMPLETED" for job_id in sleeps)


def test_a_batch_submitted_to_idle_workers_claims_a_task_per_idle_process(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    time.sleep(0.2)  # the workers are idle, and have said so
    created = engine.create_jobs(ALICE, [JobCreate(job_type="noop", start=True)] * 50)
    records = [finished(engine, ref.id) for ref in created.jobs]
    assert {record.phase for record in records} == {"COMPLETED"}
    in_submission = [
        record.id for record in records if claimed_at(engine, record.id) == [record.creation_time]
    ]
    assert in_submission == [records[0].id, records[1].id]


def test_jobs_submitted_from_many_threads_while_workers_go_idle_and_busy_all_run_once(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    """Submissions that claim for idle workers race the workers' own claims and finishes:
    every job still runs once, and no task is left claimed."""

    def submit_some(count: int) -> None:
        for index in range(count):
            submit(engine, "noop")
            time.sleep(0.001 * (index % 3))

    threads = [threading.Thread(target=submit_some, args=(50,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 30
    while engine.stats(ALICE).get("COMPLETED", 0) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats(ALICE) == {"COMPLETED": 200}
    with engine.db.connect() as conn:
        states = dict(
            conn.execute(select(tasks.c.state, func.count()).group_by(tasks.c.state)).all()
        )
        executing = conn.execute(select(jobs.c.timeline)).scalars().all()
        attempts = conn.execute(select(tasks.c.attempts).distinct()).scalars().all()
    assert states == {"succeeded": 200}
    assert attempts == [1]  # none was lost by its worker and rescued after its lease
    assert all([entry[0] for entry in timeline].count("EXECUTING") == 1 for timeline in executing)
    assert dispatcher.held() == 0


def test_tasks_of_one_job_run_in_parallel(engine: Engine, dispatcher: Dispatcher) -> None:
    job = submit(engine, "frames")
    record = finished(engine, job)
    assert record.phase == "COMPLETED"
    assert record.task_status_counts == {"succeeded": 40}
    assert record.execution.progress["tasks"].model_dump() == {"value": 40, "max_value": 40}
    lines = engine.logs(ALICE, job, limit=1000).logs
    assert len(lines) == 40
    assert len({line.message.split("parent ")[1] for line in lines}) == 2


def test_python_job_progress_logs_and_result(engine: Engine, dispatcher: Dispatcher) -> None:
    job = submit(engine, "count", parameters={"n": 4})
    record = finished(engine, job)
    assert record.phase == "COMPLETED", record.errors
    assert record.execution.progress["steps"].model_dump() == {"value": 4, "max_value": 4}
    messages = [line.message for line in engine.logs(ALICE, job).logs]
    assert "step 4 of 4" in messages and "printed line" in messages
    path, ref = engine.result_file(ALICE, job, "result.json")
    assert path is not None and ref.mime_type == "application/json"
    assert '"steps": 4' in path.read_text()


def test_abort_kills_the_process_tree(
    engine: Engine, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    pidfile = tmp_path / "tree.pid"
    job = submit(engine, "tree", parameters={"pidfile": str(pidfile)})
    sleeper = read_pid(pidfile)
    shell = parent_of(sleeper)
    assert alive(sleeper) and alive(shell)
    started = time.monotonic()
    engine.abort(ALICE, job)
    while (alive(sleeper) or alive(shell)) and time.monotonic() - started < 5:
        time.sleep(0.02)
    assert not alive(sleeper) and not alive(shell)
    assert time.monotonic() - started < 2
    record = engine.get_job(ALICE, job)
    assert record.phase == "ABORTED"
    assert [e.error_code for e in record.errors] == ["aborted"]
    # the pool goes on working with a fresh process
    assert finished(engine, submit(engine, "noop")).phase == "COMPLETED"


def test_execution_duration_is_enforced(engine: Engine, dispatcher: Dispatcher) -> None:
    started = time.monotonic()
    job = submit(engine, "sleep", parameters={"seconds": 30}, execution_duration=1)
    record = finished(engine, job, timeout=10)
    assert time.monotonic() - started < 5
    assert record.phase == "ERROR"
    assert record.errors[0].error_code == "timeout"


def test_killed_worker_process_task_is_retried(
    engine: Engine, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    pidfile = tmp_path / "sleep.pid"
    job = submit(engine, "pidsleep", parameters={"pidfile": str(pidfile), "seconds": 2})
    sleeper = read_pid(pidfile)
    worker_process = parent_of(sleeper)
    pidfile.unlink()
    os.kill(worker_process, signal.SIGKILL)
    record = finished(engine, job, timeout=30)
    assert record.phase == "COMPLETED", record
    assert "RETRYING" in [e.status for e in record.timeline]
    assert read_pid(pidfile) != sleeper  # it ran again


def test_retries_with_backoff_then_failure(engine: Engine, dispatcher: Dispatcher) -> None:
    job = submit(
        engine,
        "fail",
        parameters={"code": "flaky", "message": "try again", "transient": 1},
        max_retries_per_task=2,
    )
    record = finished(engine, job)
    assert record.phase == "ERROR"
    assert [e.status for e in record.timeline].count("RETRYING") == 2
    assert record.errors[-1].error_code == "flaky"
    assert record.errors[-1].type == "transient"


def test_a_task_keeps_the_beginning_of_its_log_up_to_its_type_s_limit(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    # Every line a task printed was stored: 50 MB of output became a 190 MB database, and
    # the service held 680 MB while its writer caught up.
    for job_type in ("spew", "spew_python", "spew"):
        job = submit(engine, job_type)
        assert finished(engine, job).phase == "COMPLETED"
        lines = [(line.level, line.message) for line in engine.logs(ALICE, job).logs]
        *kept, (reached_level, reached), (summary_level, summary) = lines
        assert reached_level == summary_level == "warning"
        assert reached.startswith("log limit of 1000 bytes reached")
        # The log kept is the beginning of the task's, as much of it as fits.
        assert [message for _, message in kept] == [str(n) for n in range(1, len(kept) + 1)]
        kept_bytes = sum(len(message) + 1 for _, message in kept)
        assert kept_bytes <= 1000 < kept_bytes + len(str(len(kept) + 1)) + 1
        left_out = 5000 - len(kept)
        left_out_bytes = sum(len(str(n)) + 1 for n in range(len(kept) + 1, 5001))
        assert summary == (
            f"{left_out} lines of log ({left_out_bytes} bytes) were left out, "
            "past the limit of 1000 bytes"
        )


@pytest.mark.parametrize("job_type", ["leaves_child", "leaves_daemon", "leaves_subprocess"])
def test_what_a_task_leaves_running_is_killed_at_its_end(
    engine: Engine, dispatcher: Dispatcher, tmp_path: Path, job_type: str
) -> None:
    # A background process, a daemon (setsid, its parent gone) or a python task's subprocess
    # ran on after its task had COMPLETED, past any limit of its job.
    pidfile = tmp_path / "left.pid"
    job = submit(engine, job_type, parameters={"pidfile": str(pidfile)})
    record = finished(engine, job)
    assert record.phase == "COMPLETED", record.errors
    left = read_pid(pidfile)
    deadline = time.monotonic() + 5
    while alive(left) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(left)
    messages = [line.message for line in engine.logs(ALICE, job).logs]
    assert "1 process the task left running killed at its end" in messages
    # The worker process goes on with the next task.
    assert finished(engine, submit(engine, "noop")).phase == "COMPLETED"


def test_logs_readable_while_running(engine: Engine, dispatcher: Dispatcher) -> None:
    job = submit(engine, "chatty")

    def both_lines(record: JobRecord) -> bool:
        return {"one", "two"} <= {line.message for line in engine.logs(ALICE, record.id).logs}

    record = wait_for(engine, job, both_lines, timeout=10)
    assert record.phase == "EXECUTING"
    levels = {line.message: line.level for line in engine.logs(ALICE, job).logs}
    assert levels["one"] != levels["two"]  # stdout and stderr are told apart
    engine.abort(ALICE, job)


def test_a_job_s_log_lines_are_stored_after_its_start(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's start and its first lines reach the dispatcher together: the lines are
    stored once the job reads EXECUTING, never while it still reads QUEUED (a reader saw
    its log with the job not yet started)."""
    dispatcher = Dispatcher(engine, ProcessPool(1, engine.job_types), worker_id="w")
    held: list[Any] = []
    deliver = dispatcher._on_events

    def together(events: list[Any]) -> None:
        held.extend(events)
        if any(isinstance(event, TaskLog) for event in held):
            deliver(held[:])
            held.clear()

    phases_when_stored: list[str] = []
    append = engine.append_logs

    def checked(lines: Any) -> None:
        seqs = [line.job_seq for line in lines]

        def look(tx: Any) -> None:
            query = select(jobs.c.phase).where(jobs.c.seq.in_(seqs))
            phases_when_stored.extend(tx.conn.execute(query).scalars())

        if lines:
            engine.writer.submit(look)
        append(lines)

    monkeypatch.setattr(dispatcher, "_on_events", together)
    monkeypatch.setattr(engine, "append_logs", checked)
    dispatcher.start()
    try:
        job = submit(engine, "chatty")
        wait_for(engine, job, lambda record: bool(engine.logs(ALICE, record.id).logs))
        engine.abort(ALICE, job)
    finally:
        dispatcher.stop(timeout=5)
    assert phases_when_stored and set(phases_when_stored) == {"EXECUTING"}


def test_a_nul_byte_in_output_and_errors_is_kept_as_a_replacement_character(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    job = submit(engine, "nul")
    wait_for(engine, job, lambda record: record.phase == "COMPLETED")
    assert [line.message for line in engine.logs(ALICE, job).logs] == ["a\ufffdb", "after"]
    failed = wait_for(engine, submit(engine, "nul_failure"), lambda r: r.phase == "ERROR")
    assert "bad\ufffdinput" in (failed.errors[0].detail or "")


def test_a_task_error_whose_code_is_not_text_still_ends_its_job(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    # An int error code once failed the dispatcher's round that read it: the job, and any
    # other task that ended in that round, stayed EXECUTING for good. (One that cannot be
    # pickled crashed the worker process.)
    failed = finished(engine, submit(engine, "status_error"), timeout=10)
    assert failed.phase == "ERROR"
    assert (failed.errors[0].error_code, failed.errors[0].message) == (
        "503",
        "the upstream service refused",
    )
    assert failed.errors[0].detail == "503"
    locked = finished(engine, submit(engine, "lock_error"), timeout=10)
    assert (locked.phase, locked.errors[0].message) == ("ERROR", "locked out")
    assert "lock" in (locked.errors[0].error_code or "")
    # One PostgreSQL could not keep failed every write of the task's end, for good.
    long = finished(engine, submit(engine, "long_code_error"), timeout=10)
    assert (long.phase, long.errors[0].error_code) == ("ERROR", "c" * 64)
    assert finished(engine, submit(engine, "count"), timeout=10).phase == "COMPLETED"


def test_a_result_file_no_store_keeps_as_an_id_is_left_out_with_a_warning(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    # A name that is not UTF-8 (Python holds its other bytes as surrogates) failed every
    # write of the task's end on both stores, a path over 512 characters on PostgreSQL: the
    # round, and the next ones that held it, failed (with every other task end they held)
    # until it was dropped and the task rescued, to fail so again.
    odd = finished(engine, submit(engine, "odd_file_name"), timeout=10)
    deep = finished(engine, submit(engine, "deep_result"), timeout=10)
    for job, warning in (
        (odd, "result 'caf\\udce9.txt' left out: its name is not UTF-8"),
        (deep, f"result {'d' * 60}... left out: its path is longer than 512 characters"),
    ):
        assert job.phase == "COMPLETED"
        assert [result.id for result in job.results] == ["plain.txt"]
        lines = [line.message for line in engine.logs(ALICE, job.id).logs]
        assert [line for line in lines if "left out" in line] == [warning]
    # Logged as Python holds it: the bytes that are not UTF-8 are replaced.
    assert any(
        line.message.startswith("wrote caf\ufffd") for line in engine.logs(ALICE, odd.id).logs
    )
    assert finished(engine, submit(engine, "count"), timeout=10).phase == "COMPLETED"


def test_a_task_end_a_store_refuses_fails_its_job_alone(
    engine: Engine, dispatcher: Dispatcher, db_url: str
) -> None:
    # A stand-in for any value a store refuses in a task's end (PostgreSQL keeps a MIME type
    # of 128 characters at most; SQLite keeps it). Such a write failed again and again, with
    # every other task end it held, then its task was rescued, to fail so again: its job
    # never ended. Now the ends of that write are written apart, and the one that fails
    # alone is written as its task's failure.
    odd = submit(engine, "long_mime_type")
    others = [submit(engine, "noop") for _ in range(20)]
    job = finished(engine, odd, timeout=10)
    if db_url.startswith("sqlite"):
        assert job.phase == "COMPLETED"
        assert [result.id for result in job.results] == ["a.weird"]
    else:
        assert (job.phase, job.errors[0].error_code) == ("ERROR", "unrecordable")
        assert job.errors[0].message.startswith("the task's end could not be recorded: ")
        assert "too long" in job.errors[0].message
        assert job.results == []
    for job_id in others:
        assert finished(engine, job_id, timeout=10).phase == "COMPLETED"
    attempts = engine.writer.run(
        lambda tx: tx.conn.execute(select(tasks.c.attempts)).scalars().all()
    )
    assert set(attempts) == {1}  # none ran twice


def test_results_download_and_traversal(
    engine: Engine, dispatcher: Dispatcher, server: object, alice: httpx.Client
) -> None:
    job = alice.post(
        "/jobs", json={"job_type": "echo", "parameters": {"message": "hello"}, "start": True}
    ).json()
    record = alice.get(f"/jobs/{job['id']}", params={"wait": 10}).json()
    record = alice.get(f"/jobs/{job['id']}", params={"wait": 10}).json()
    assert record["phase"] == "COMPLETED", record
    assert [r["id"] for r in record["results"]] == ["echo.txt"]
    download = alice.get(f"/jobs/{job['id']}/results/echo.txt")
    assert download.status_code == 200 and download.text.strip() == "hello"
    for sneaky in ("..%2F..%2Fadmin-token", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"):
        response = alice.get(f"/jobs/{job['id']}/results/{sneaky}")
        assert response.status_code == 404


def test_fewer_processes_give_waiting_tasks_back_to_the_queue(
    engine: Engine, tmp_path: Path
) -> None:
    # window=1: each process holds only its running task; the rest wait in the pool.
    pool = ProcessPool(2, engine.job_types, window=1)
    dispatcher = Dispatcher(engine, pool, worker_id="resized")
    dispatcher.start()
    try:
        sleeps = [
            submit(engine, "pidsleep", parameters={"pidfile": str(tmp_path / f"{i}"), "seconds": 1})
            for i in range(2)
        ]
        for i in range(2):
            read_pid(tmp_path / f"{i}")
        waiting = [submit(engine, "noop") for _ in range(2)]
        deadline = time.monotonic() + 10
        while dispatcher.held() < 4:  # the two noops, claimed, wait for a process
            assert time.monotonic() < deadline, dispatcher.held()
            time.sleep(0.01)

        dispatcher.resize(0)
        for job_id in sleeps:  # the running tasks finish where they run
            assert finished(engine, job_id).phase == "COMPLETED"
        time.sleep(0.5)
        assert dispatcher.processes == 0 and dispatcher.held() == 0
        for job_id in waiting:  # back in the queue, the attempt not counted
            record = engine.get_job(ALICE, job_id)
            assert record.phase == "QUEUED", record
            assert record.task_status_counts == {"ready": 1}

        dispatcher.resize(1)
        for job_id in waiting:
            record = finished(engine, job_id)
            assert record.phase == "COMPLETED"
            assert [e.status for e in record.timeline].count("EXECUTING") == 1
    finally:
        dispatcher.stop(timeout=5)


def test_a_stopped_dispatcher_refuses_to_resize(engine: Engine) -> None:
    dispatcher = Dispatcher(engine, ProcessPool(0, engine.job_types), worker_id="stopped")
    dispatcher.start()
    dispatcher.stop(timeout=5)
    with pytest.raises(Conflict):
        dispatcher.resize(1)


def test_a_busy_worker_claims_the_next_tasks_as_it_finishes_without_polling(
    engine: Engine,
) -> None:
    """Jobs queued while a worker is busy run as its tasks end, one claim after another,
    not at its next look for unannounced work (here half a minute away)."""
    dispatcher = Dispatcher(engine, ProcessPool(1, engine.job_types), idle_wait=60)
    dispatcher.start()
    try:
        created = engine.create_jobs(ALICE, [JobCreate(job_type="noop", start=True)] * 60)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            phases = {engine.get_job(ALICE, ref.id).phase for ref in created.jobs}
            if phases == {"COMPLETED"}:
                break
            time.sleep(0.1)
        assert phases == {"COMPLETED"}
    finally:
        dispatcher.stop(timeout=5)


def test_task_ends_a_failed_write_lost_are_written_by_the_next_one(
    engine: Engine, dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database gone for a moment when the worker records its tasks' ends (with a claim,
    or alone): the next round writes them, well inside the tasks' leases (5 s here); no task
    runs twice, as it would once its lease had run out."""
    failures = {"claim": 1, "finish": 1}
    claim, finish = engine.claim_tasks, engine.finish_tasks
    gone = OperationalError("COMMIT", {}, Exception("the database went away"))

    def failing_claim(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("finished") and failures["claim"]:
            failures["claim"] -= 1
            raise gone
        return claim(*args, **kwargs)

    def failing_finish(outcomes: Any, **kwargs: Any) -> Any:
        if outcomes and failures["finish"]:
            failures["finish"] -= 1
            failed: Future[None] = Future()
            failed.set_exception(gone)
            return failed
        return finish(outcomes, **kwargs)

    monkeypatch.setattr(engine, "claim_tasks", failing_claim)
    monkeypatch.setattr(engine, "finish_tasks", failing_finish)
    job_ids = [submit(engine, "noop") for _ in range(6)]
    for job_id in job_ids:
        assert finished(engine, job_id, timeout=4).phase == "COMPLETED"
    assert sum(failures.values()) < 2  # a write failed
    attempts = engine.writer.run(
        lambda tx: tx.conn.execute(select(tasks.c.attempts)).scalars().all()
    )
    assert set(attempts) == {1}


def test_a_short_job_s_timeline_dates_its_start_by_the_worker(
    engine: Engine, dispatcher: Dispatcher
) -> None:
    """A task that starts and ends between two reports of its worker process: its job's
    EXECUTING entry is when the process began it, before the COMPLETED one, not the time
    the finish was written."""
    job_id = submit(engine, "noop")
    record = finished(engine, job_id)
    stamps = {entry.status: entry.timestamp for entry in record.timeline}
    assert record.phase == "COMPLETED"
    assert stamps["QUEUED"] <= stamps["EXECUTING"] < stamps["COMPLETED"]
    assert record.start_time == stamps["EXECUTING"]
    assert record.end_time == stamps["COMPLETED"]


def count_reads(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the reads async code makes through ``engine.read`` from now on."""
    reads: list[str] = []
    read = engine.read

    async def counted(call: Callable[..., Any], *args: Any) -> Any:
        reads.append(call.__name__)
        return await read(call, *args)

    monkeypatch.setattr(engine, "read", counted)
    return reads


def test_a_waiter_is_given_its_jobs_record_by_the_commit_that_changed_it(
    engine: Engine, dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer reads the record a waiter waits for in the transaction that changed the
    job (on PostgreSQL, for up to a few waiters), and the waiter takes it instead of reading
    it again; what it is given is the record a read gives after."""
    reads = count_reads(engine, monkeypatch)
    time.sleep(0.2)  # the workers are idle
    request = JobCreate(job_type="noop", start=True)
    record = asyncio.run(engine.create_job_async(ALICE, request, wait=10))
    assert record.phase == "COMPLETED"
    assert reads == []
    assert record == engine.get_job(ALICE, record.id)


def test_a_job_created_without_waiting_is_answered_with_the_record_its_commit_made(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A creation's answer is the record the writer read before its commit: no read of its
    own after; the same record a read gives."""
    reads = count_reads(engine, monkeypatch)
    record = asyncio.run(engine.create_job_async(ALICE, JobCreate(job_type="noop", start=True)))
    assert record.phase == "QUEUED"
    assert reads == []
    assert record == engine.get_job(ALICE, record.id)


def test_the_pool_s_reports_wait_for_the_dispatcher_past_a_bound(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the dispatching thread waited for the store (Engine.append_logs), the pool
    # went on reading what its processes reported, and that grew without a bound.
    monkeypatch.setattr(dispatcher_module, "EVENTS_WAITING", 3)
    dispatcher = Dispatcher(engine, ProcessPool(1, engine.job_types), worker_id="w")
    lines = [TaskLog(1, "info", time.time(), str(n)) for n in range(5)]
    reading = threading.Thread(target=dispatcher._on_events, args=(lines,))
    reading.start()
    reading.join(0.3)
    assert reading.is_alive()  # 5 reports wait: the pool's reading waits for them
    dispatcher._flush()  # what the dispatching thread does each round
    reading.join(5)
    assert not reading.is_alive()
    # Once it stops, nothing waits for the dispatching thread any more.
    dispatcher._stop.set()
    stopped = threading.Thread(target=dispatcher._on_events, args=(lines,))
    stopped.start()
    stopped.join(5)
    assert not stopped.is_alive()
