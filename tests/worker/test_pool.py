"""The process pool with real worker processes: no mocks. Process trees are checked in /proc."""

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from conftest import alive, parent_of

from jobdeck.domain.jobtypes import BUILTIN_TYPES, JobType, ParameterSpec
from jobdeck.worker.pool import ProcessPool
from jobdeck.worker.protocol import (
    ChildSetup,
    Event,
    FrameDecoder,
    Shutdown,
    SkipTask,
    TaskAssignment,
    TaskFinished,
    TaskLog,
    TaskProgress,
    TaskStarted,
    encode,
)

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).parent

TEST_TYPES: dict[str, JobType] = {
    **BUILTIN_TYPES,
    "report": JobType(name="report", kind="python", target="jobs_for_tests:report"),
    "pid": JobType(name="pid", kind="python", target="jobs_for_tests:pid"),
    "meddle": JobType(name="meddle", kind="python", target="jobs_for_tests:meddle"),
    "boom": JobType(name="boom", kind="python", target="jobs_for_tests:boom"),
    "flaky": JobType(name="flaky", kind="python", target="jobs_for_tests:flaky"),
    "crash": JobType(name="crash", kind="python", target="jobs_for_tests:crash"),
    "unserialisable": JobType(
        name="unserialisable", kind="python", target="jobs_for_tests:unserialisable"
    ),
    "nomodule": JobType(name="nomodule", kind="python", target="no_such_module:run"),
    "interrupt": JobType(name="interrupt", kind="python", target="jobs_for_tests:interrupt"),
    "broken_str": JobType(name="broken_str", kind="python", target="jobs_for_tests:broken_str"),
    "spoil_output": JobType(
        name="spoil_output", kind="python", target="jobs_for_tests:spoil_output"
    ),
    "speak": JobType(name="speak", kind="python", target="jobs_for_tests:speak"),
    "nap": JobType(name="nap", kind="python", target="jobs_for_tests:nap"),
    "watch_cancel": JobType(
        name="watch_cancel", kind="python", target="jobs_for_tests:watch_cancel"
    ),
    "greet": JobType(
        name="greet",
        kind="command",
        # The value arrives as one argument ($1): no shell ever parses it.
        command=("sh", "-c", 'echo "hello $1"; echo oops >&2; pwd > where.txt', "sh", "{name}"),
        parameters={"name": ParameterSpec("string")},
    ),
    "exit3": JobType(
        name="exit3", kind="command", command=("sh", "-c", "echo failing >&2; exit 3")
    ),
    "missing": JobType(name="missing", kind="command", command=("/nonexistent/program",)),
    "tree": JobType(
        name="tree",
        kind="command",
        command=("sh", "-c", "sleep 60 & echo $! > {pidfile}; echo started; wait"),
        parameters={"pidfile": ParameterSpec("path")},
    ),
    "pidsleep": JobType(
        name="pidsleep",
        kind="command",
        command=("sh", "-c", "echo $$ > {pidfile}; exec sleep {seconds}"),
        parameters={"pidfile": ParameterSpec("path"), "seconds": ParameterSpec("int")},
    ),
}


class Collector:
    """The pool's ``on_events``: keeps every event and lets a test wait for some."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.threads: set[str] = set()
        self._changed = threading.Condition()

    def __call__(self, events: list[Event]) -> None:
        with self._changed:
            self.events.extend(events)
            self.calls += 1
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def finished(self) -> dict[int, TaskFinished]:
        with self._changed:
            return {e.task_id: e for e in self.events if isinstance(e, TaskFinished)}

    def wait_finished(self, task_ids: list[int], timeout: float = 20) -> dict[int, TaskFinished]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                done = {e.task_id: e for e in self.events if isinstance(e, TaskFinished)}
                if set(task_ids) <= set(done):
                    return {task_id: done[task_id] for task_id in task_ids}
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(task_ids) - set(done))
                    raise AssertionError(f"tasks {missing} did not finish")
                self._changed.wait(left)

    def wait_started(self, task_id: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(isinstance(e, TaskStarted) and e.task_id == task_id for e in self.events):
                left = deadline - time.monotonic()
                assert left > 0, f"task {task_id} did not start"
                self._changed.wait(left)

    def wait_one(self, task_id: int, timeout: float = 20) -> TaskFinished:
        return self.wait_finished([task_id], timeout)[task_id]

    def of(self, task_id: int) -> list[Event]:
        with self._changed:
            return [e for e in self.events if e.task_id == task_id]

    def logs(self, task_id: int) -> list[tuple[str, str]]:
        return [(e.level, e.message) for e in self.of(task_id) if isinstance(e, TaskLog)]


class MakePool(Protocol):
    def __call__(self, size: int = ..., **options: Any) -> tuple[ProcessPool, Collector]: ...


@pytest.fixture
def make_pool() -> Iterator[MakePool]:
    pools: list[ProcessPool] = []

    def make(size: int = 2, **options: Any) -> tuple[ProcessPool, Collector]:
        collector = Collector()
        options = {"prefetch": 16, "window": 8, **options}
        pool = ProcessPool(size, TEST_TYPES, import_paths=[HERE], **options)
        pool.start(collector)
        pools.append(pool)
        return pool, collector

    yield make
    for pool in pools:
        pool.close(5)


_next_id = iter(range(1, 1_000_000))


def task(
    job_type: str,
    results_dir: Path,
    *,
    execution_duration: float = 0,
    json_parameters: Any = None,
    **parameters: int | float | str,
) -> TaskAssignment:
    return TaskAssignment(
        task_id=next(_next_id),
        job_id="job-1",
        task_index=0,
        job_type=job_type,
        parameters=parameters,
        json_parameters=json_parameters,
        execution_duration=execution_duration,
        attempt=1,
        results_dir=str(results_dir),
    )


def group_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


def read_pid(path: Path, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} never got a pid")


def wait_gone(pids: list[int], timeout: float) -> float:
    """Seconds until none of ``pids`` is alive; fails after ``timeout``."""
    started = time.monotonic()
    while any(alive(pid) for pid in pids):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"still alive: {[pid for pid in pids if alive(pid)]}")
        time.sleep(0.01)
    return time.monotonic() - started


def worker_pids() -> set[int]:
    """The live worker processes started by this test process."""
    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _is_worker_of(int(p.name), os.getpid())
    }


def spawned_workers(count: int, timeout: float = 5) -> set[int]:
    """The worker processes, once ``count`` of them show. (A process that has just been
    spawned may not show its command line yet: the exec closes the pipe ``Popen`` waits on
    before the kernel has set up the new program's arguments.)"""
    deadline = time.monotonic() + timeout
    while len(found := worker_pids()) != count:
        assert time.monotonic() < deadline, f"{len(found)} worker processes, not {count}"
        time.sleep(0.01)
    return found


def _is_worker_of(pid: int, parent: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return parent_of(pid) == parent and b"jobdeck.worker.child" in cmdline and alive(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_many_noop_tasks_on_two_processes(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(2)
    tasks = [task("noop", tmp_path / str(i)) for i in range(2000)]
    submitted = 0
    deadline = time.monotonic() + 30
    while submitted < len(tasks):
        assert time.monotonic() < deadline
        free = pool.free_slots()
        pool.submit(tasks[submitted : submitted + free])
        submitted += free
        time.sleep(0.001)
    done = events.wait_finished([t.task_id for t in tasks], timeout=30)
    assert all(finished.ok for finished in done.values())
    assert len(events.finished()) == 2000  # one finish per task, no more
    assert pool.running() == []
    assert events.threads == {"jobdeck-pool"}
    assert events.calls < 2000  # delivered in batches
    # A start is reported once: on its own, or (a task that finished before its start was
    # sent) by the finish, which carries the start time.
    starts = [e.task_id for e in events.events if isinstance(e, TaskStarted)]
    assert len(starts) == len(set(starts)) < 2000
    assert all(f.started_at <= f.ended_at for f in done.values())
    assert not any(Path(tmp_path).iterdir())  # noop makes no results directory


def test_python_task_logs_progress_and_results(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1)
    assignment = task("report", tmp_path / "r", json_parameters={"k": [1, 2]}, n=3, name="x")
    pool.submit([assignment])
    finished = events.wait_one(assignment.task_id)
    assert finished.ok, finished.error
    assert finished.started_at <= finished.ended_at

    logs = events.logs(assignment.task_id)
    assert ("info", "printed line") in logs
    assert ("warning", "printed to stderr") in logs
    assert ("info", "from a subprocess") in logs
    assert ("info", "step 1 of 2") in logs
    assert ("warning", "a warning") in logs
    assert ("warning", "a library warning") in logs

    progress = [e for e in events.of(assignment.task_id) if isinstance(e, TaskProgress)]
    assert progress and progress[-1] == TaskProgress(assignment.task_id, "items", 100, 100)
    assert len(progress) < 100  # unsent updates of a counter are replaced by newer ones

    results = {r["path"]: r for r in finished.results}
    assert sorted(results) == ["result.json", "sub/notes.txt", "table.csv"]
    assert results["table.csv"]["mime_type"] == "text/csv"
    assert results["table.csv"]["size"] == len("a,b\n1,2\n")
    assert results["sub/notes.txt"]["mime_type"] == "text/plain"
    result_json = tmp_path / "r" / "result.json"
    assert results["result.json"] == {
        "path": "result.json",
        "size": result_json.stat().st_size,
        "mime_type": "application/json",
    }
    value = json.loads(result_json.read_text())
    assert value["params"] == {"n": 3, "name": "x"}
    assert value["json"] == {"k": [1, 2]}
    assert (value["job_id"], value["task_index"], value["attempt"]) == ("job-1", 0, 1)
    assert value["cancelled"] is False
    assert value["pid"] in worker_pids()


def test_tasks_sharing_parameters_do_not_see_each_others_changes(
    make_pool: MakePool, tmp_path: Path
) -> None:
    # A claim shares one decoded object among the tasks of a submission, and a frame to a
    # process pickles it once: each task must still get values of its own.
    pool, events = make_pool(1)
    shared_values: dict[str, int | float | str] = {"n": 3}
    shared_json = {"items": ["a"]}
    tasks = [
        task("meddle", tmp_path / str(i), json_parameters=shared_json, **shared_values)
        for i in range(3)
    ]
    for assignment in tasks:
        assignment.parameters = shared_values
    pool.submit(tasks)
    done = events.wait_finished([t.task_id for t in tasks])
    assert all(finished.ok for finished in done.values())
    for i in range(3):
        given = json.loads((tmp_path / str(i) / "result.json").read_text())
        assert given == {"params": {"n": 3}, "json": {"items": ["a"]}}


def test_python_task_errors(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1)
    boom = task("boom", tmp_path / "a", value=7)
    flaky = task("flaky", tmp_path / "b")
    bad_result = task("unserialisable", tmp_path / "c")
    no_module = task("nomodule", tmp_path / "d")
    unknown = task("no-such-type", tmp_path / "e")
    after = task("noop", tmp_path / "f")
    pool.submit([boom, flaky, bad_result, no_module, unknown, after])
    done = events.wait_finished([t.task_id for t in (boom, flaky, bad_result, no_module, after)])

    error = done[boom.task_id].error
    assert not done[boom.task_id].ok and error is not None
    assert error["error_code"] == "exception" and error["type"] == "fatal"
    assert error["message"] == "ValueError: bad value 7"
    assert "Traceback" in error["detail"] and "jobs_for_tests.py" in error["detail"]

    error = done[flaky.task_id].error
    assert error is not None
    assert (error["error_code"], error["type"]) == ("busy", "transient")
    assert error["message"] == "the service is busy"

    error = done[bad_result.task_id].error
    assert error is not None and error["error_code"] == "exception"
    assert "JSON serializable" in error["message"]

    error = done[no_module.task_id].error
    assert error is not None and error["error_code"] == "import_error"
    assert "no_such_module" in error["message"]

    error = events.wait_one(unknown.task_id).error
    assert error is not None and error["error_code"] == "unknown_job_type"
    assert done[after.task_id].ok  # one failure does not spoil the process


def test_a_task_that_misbehaves_spoils_neither_its_process_nor_the_next_task(
    make_pool: MakePool, tmp_path: Path
) -> None:
    # Each once took its worker process down (a KeyboardInterrupt; an exception whose text
    # could not be made), the job ending worker_lost after three retries, or left it unable
    # to run any later task that printed (standard output closed).
    pool, events = make_pool(1)
    first = task("pid", tmp_path / "a")
    interrupt = task("interrupt", tmp_path / "b")
    broken = task("broken_str", tmp_path / "c")
    spoil = task("spoil_output", tmp_path / "d")
    speak = task("speak", tmp_path / "e")
    last = task("pid", tmp_path / "f")
    tasks = [first, interrupt, broken, spoil, speak, last]
    pool.submit(tasks)
    done = events.wait_finished([t.task_id for t in tasks])

    error = done[interrupt.task_id].error
    assert error is not None and error["error_code"] == "exception"
    assert error["message"] == "KeyboardInterrupt: "
    error = done[broken.task_id].error
    assert error is not None and error["message"] == "Broken: <Broken: str() failed>"
    assert done[spoil.task_id].ok and done[speak.task_id].ok
    assert sorted(events.logs(speak.task_id)) == [
        ("info", "raw"),
        ("info", "to stdout"),
        ("warning", "to stderr"),
    ]
    pids = [json.loads((tmp_path / d / "result.json").read_text()) for d in ("a", "f")]
    assert pids[0] == pids[1]  # the same process ran them all


def test_builtins(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(2)
    echo = task("echo", tmp_path / "echo", message="hello there")
    fail = task("fail", tmp_path / "fail", code="flaky", message="try again", transient=1)
    fatal = task("fail", tmp_path / "fatal", code="broken", message="no", transient=0)
    sleep = task("sleep", tmp_path / "sleep", seconds=0.2)
    pool.submit([echo, fail, fatal, sleep])
    done = events.wait_finished([t.task_id for t in (echo, fail, fatal, sleep)])
    assert done[echo.task_id].ok
    assert ("info", "hello there") in events.logs(echo.task_id)
    assert done[echo.task_id].results == [
        {"path": "echo.txt", "size": 12, "mime_type": "text/plain"}
    ]
    assert (tmp_path / "echo" / "echo.txt").read_text() == "hello there\n"
    error = done[fail.task_id].error
    assert error is not None
    assert (error["error_code"], error["message"], error["type"]) == (
        "flaky",
        "try again",
        "transient",
    )
    error = done[fatal.task_id].error
    assert error is not None and (error["error_code"], error["type"]) == ("broken", "fatal")
    slept = done[sleep.task_id]
    assert slept.ok and slept.ended_at - slept.started_at >= 0.2


def test_command_with_substitution_and_output(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1)
    greet = task("greet", tmp_path / "greet", name="big world; rm -rf /")
    exit3 = task("exit3", tmp_path / "exit3")
    missing = task("missing", tmp_path / "missing")
    pool.submit([greet, exit3, missing])
    done = events.wait_finished([greet.task_id, exit3.task_id, missing.task_id])

    assert done[greet.task_id].ok, done[greet.task_id].error
    logs = events.logs(greet.task_id)
    assert ("info", "hello big world; rm -rf /") in logs
    assert ("warning", "oops") in logs
    where = tmp_path / "greet" / "where.txt"
    assert Path(where.read_text().strip()) == where.parent.resolve()  # cwd = results dir
    assert done[greet.task_id].results == [
        {"path": "where.txt", "size": where.stat().st_size, "mime_type": "text/plain"}
    ]

    error = done[exit3.task_id].error
    assert error is not None
    assert (error["error_code"], error["type"]) == ("exit_code", "fatal")
    assert "code 3" in error["message"] and error["detail"] == "failing"

    error = done[missing.task_id].error
    assert error is not None and error["error_code"] == "exec_failed"


def test_cancel_kills_a_running_command_and_its_children(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, events = make_pool(2)
    pidfile = tmp_path / "tree.pid"
    tree = task("tree", tmp_path / "tree", pidfile=str(pidfile))
    pool.submit([tree])
    sleeper = read_pid(pidfile)
    shell = parent_of(sleeper)
    worker = parent_of(shell)
    assert group_of(sleeper) == group_of(shell) == group_of(worker) == worker
    assert worker in worker_pids()

    started = time.monotonic()
    pool.cancel(tree.task_id, "aborted")
    finished = events.wait_one(tree.task_id, timeout=5)
    assert wait_gone([sleeper, shell, worker], timeout=2) < 1.0
    assert time.monotonic() - started < 2
    assert not finished.ok and finished.error is not None
    assert (finished.error["error_code"], finished.error["type"]) == ("aborted", "fatal")
    assert len(events.finished()) == 1  # the killed process's own report never arrives

    # A fresh process took its place and the pool goes on working.
    more = [task("pid", tmp_path / f"p{i}") for i in range(4)]
    pool.submit(more)
    done = events.wait_finished([t.task_id for t in more])
    assert all(f.ok for f in done.values())
    assert len(worker_pids()) == 2
    assert pool.running() == []


def test_cancel_sets_ctx_cancelled_before_the_kill(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1)
    marker = tmp_path / "marker"
    watch = task("watch_cancel", tmp_path / "w", marker=str(marker))
    pool.submit([watch])
    worker = read_pid(marker.with_suffix(".started"))
    pool.cancel(watch.task_id, "aborted")
    events.wait_one(watch.task_id)
    wait_gone([worker], timeout=2)
    assert marker.read_text() == "cancelled"


def test_logs_stream_while_a_task_runs_and_cancel_kills_it(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, events = make_pool(1)
    nap = task("nap", tmp_path / "n")
    pool.submit([nap])
    deadline = time.monotonic() + 10
    while not events.logs(nap.task_id):
        assert time.monotonic() < deadline, "no log line while the task runs"
        time.sleep(0.01)
    [(level, message)] = events.logs(nap.task_id)
    assert level == "info" and message.startswith("napping in ")
    worker = int(message.split()[-1])
    assert nap.task_id not in events.finished()
    pool.cancel(nap.task_id, "timeout")
    # It ignores SIGTERM (sleeping in C): the SIGKILL after the grace ends it.
    assert wait_gone([worker], timeout=2) < 1.0
    error = events.wait_one(nap.task_id).error
    assert error is not None and error["error_code"] == "timeout"


def test_cancel_of_waiting_tasks_needs_no_kill(make_pool: MakePool, tmp_path: Path) -> None:
    # window=2: the second task waits in the process's pipe, the third in the pool.
    pool, events = make_pool(1, window=2)
    first = task("pid", tmp_path / "a")
    pool.submit([first])
    events.wait_one(first.task_id)
    worker = json.loads((tmp_path / "a" / "result.json").read_text())
    running = task("sleep", tmp_path / "b", seconds=0.5)
    queued = task("noop", tmp_path / "c")
    waiting = task("noop", tmp_path / "d")
    last = task("pid", tmp_path / "e")
    pool.submit([running, queued, waiting, last])
    pool.cancel(queued.task_id, "aborted")
    pool.cancel(waiting.task_id, "aborted")
    done = events.wait_finished([t.task_id for t in (running, queued, waiting, last)])
    assert done[running.task_id].ok
    for cancelled in (queued, waiting):
        error = done[cancelled.task_id].error
        assert error is not None and error["error_code"] == "aborted"
        assert not [e for e in events.of(cancelled.task_id) if isinstance(e, TaskStarted)]
    assert json.loads((tmp_path / "e" / "result.json").read_text()) == worker  # same process
    assert len(events.finished()) == 5
    pool.cancel(last.task_id, "aborted")  # finished already: ignored
    pool.cancel(12345678, "aborted")  # never known: ignored
    time.sleep(0.1)
    assert len(events.finished()) == 5


def test_execution_duration_is_enforced(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1)
    pidfile = tmp_path / "sleep.pid"
    slow = task(
        "pidsleep", tmp_path / "s", execution_duration=0.5, pidfile=str(pidfile), seconds=30
    )
    quick = task("pidsleep", tmp_path / "q", execution_duration=5, pidfile="q.pid", seconds=0)
    after = task("noop", tmp_path / "n")
    pool.submit([slow, quick, after])
    sleeper = read_pid(pidfile)
    finished = events.wait_one(slow.task_id, timeout=5)
    assert 0.5 <= finished.ended_at - finished.started_at < 1.5
    assert finished.error is not None
    assert (finished.error["error_code"], finished.error["type"]) == ("timeout", "fatal")
    assert "0.5 s" in finished.error["message"]
    wait_gone([sleeper], timeout=1)
    done = events.wait_finished([quick.task_id, after.task_id])
    assert done[quick.task_id].ok and done[after.task_id].ok


def test_kill_9_of_a_worker_loses_only_its_running_task(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, events = make_pool(1, window=4)
    time.sleep(1.1)  # older than the respawn delay: replaced at once
    pidfile = tmp_path / "sleep.pid"
    victim = task("pidsleep", tmp_path / "v", pidfile=str(pidfile), seconds=30)
    rest = [task("noop", tmp_path / f"n{i}") for i in range(6)]
    pool.submit([victim, *rest])
    sleeper = read_pid(pidfile)
    worker = parent_of(sleeper)
    os.kill(worker, signal.SIGKILL)

    lost = events.wait_one(victim.task_id, timeout=5)
    assert not lost.ok and lost.error is not None
    assert (lost.error["error_code"], lost.error["type"]) == ("worker_lost", "transient")
    assert "SIGKILL" in lost.error["message"]
    done = events.wait_finished([t.task_id for t in rest], timeout=10)
    assert all(f.ok for f in done.values())
    wait_gone([sleeper], timeout=1)  # what the dead process started dies with it
    assert worker not in worker_pids() and len(worker_pids()) == 1


def test_a_task_that_kills_its_worker_is_lost_not_rerun(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, events = make_pool(1)
    crash = task("crash", tmp_path / "c")
    after = task("noop", tmp_path / "n")
    pool.submit([crash, after])
    done = events.wait_finished([crash.task_id, after.task_id], timeout=10)
    error = done[crash.task_id].error
    assert error is not None and error["error_code"] == "worker_lost"
    assert done[after.task_id].ok
    assert len(events.finished()) == 2


def test_close_lets_running_tasks_finish(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1, window=2)
    running = task("sleep", tmp_path / "a", seconds=0.5)
    queued = task("noop", tmp_path / "b")
    waiting = task("noop", tmp_path / "c")
    pool.submit([running, queued, waiting])
    events.wait_started(running.task_id)
    workers = worker_pids()
    assert pool.close(5) == [queued.task_id, waiting.task_id]
    assert set(events.finished()) == {running.task_id}  # delivered before close returned
    assert events.finished()[running.task_id].ok
    wait_gone(list(workers), timeout=1)
    assert pool.free_slots() == 0
    with pytest.raises(RuntimeError):
        pool.submit([task("noop", tmp_path / "d")])


def test_close_kills_what_outlasts_the_timeout(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(2)
    pidfile = tmp_path / "sleep.pid"
    slow = task("pidsleep", tmp_path / "s", pidfile=str(pidfile), seconds=30)
    pool.submit([slow])
    sleeper = read_pid(pidfile)
    workers = worker_pids()
    started = time.monotonic()
    assert pool.close(0.3) == [slow.task_id]
    assert time.monotonic() - started < 2
    wait_gone([sleeper, *workers], timeout=1)
    assert events.finished() == {}


def test_accounting_of_slots(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(2, prefetch=3)
    assert pool.free_slots() == 8
    sleeps = [task("sleep", tmp_path / str(i), seconds=0.3) for i in range(10)]
    pool.submit(sleeps)
    assert pool.free_slots() == 0
    assert sorted(pool.running()) == sorted(t.task_id for t in sleeps)
    events.wait_finished([t.task_id for t in sleeps], timeout=10)
    assert pool.free_slots() == 8 and pool.running() == []


def test_a_task_goes_to_an_idle_process_not_behind_a_running_one(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, events = make_pool(2)
    assert pool.idle() == 2
    long = task("sleep", tmp_path / "long", seconds=5)
    pool.submit([long])
    events.wait_started(long.task_id)
    assert pool.idle() == 1
    short = task("noop", tmp_path / "short")
    pool.submit([short])
    started = time.monotonic()
    assert events.wait_one(short.task_id, timeout=4).ok
    assert time.monotonic() - started < 4
    assert long.task_id not in events.finished()
    assert pool.idle() == 1
    pool.cancel(long.task_id, "aborted")


def ran_on(assignments: list[TaskAssignment]) -> set[int]:
    """The worker processes that ran these ``pid`` tasks (each writes its pid as its result)."""
    return {int(json.loads((Path(a.results_dir) / "result.json").read_text())) for a in assignments}


def test_resize_grows_the_pool_at_once(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(1, prefetch=3)
    first = spawned_workers(1)
    assert pool.resize(3) == []
    assert pool.size == 3 and pool.free_slots() == 12
    grown = spawned_workers(3)
    assert first < grown
    # Tasks that take a while each, so that every process gets some.
    naps = [task("sleep", tmp_path / f"n{i}", seconds=0.2) for i in range(6)]
    pids = [task("pid", tmp_path / f"p{i}") for i in range(6)]
    pool.submit(naps + pids)
    done = events.wait_finished([t.task_id for t in naps + pids])
    assert all(f.ok for f in done.values())
    assert ran_on(pids) <= grown


def test_resize_shrinks_after_running_tasks_finish(make_pool: MakePool, tmp_path: Path) -> None:
    pool, events = make_pool(2, window=1)
    spawned_workers(2)
    running = [task("sleep", tmp_path / f"s{i}", seconds=0.5) for i in range(2)]
    waiting = [task("noop", tmp_path / f"w{i}") for i in range(4)]
    pool.submit(running)
    for t in running:
        events.wait_started(t.task_id)
    pool.submit(waiting)  # window 1: they wait in the pool, none sent yet
    assert sorted(pool.resize(1)) == sorted(t.task_id for t in waiting)
    assert pool.size == 1
    assert sorted(pool.running()) == sorted(t.task_id for t in running)
    # The process taken out finishes its task, as does the one that stays; then it stops.
    done = events.wait_finished([t.task_id for t in running])
    assert all(f.ok for f in done.values())
    spawned_workers(1)
    assert not set(events.finished()) & {t.task_id for t in waiting}  # given back, not run
    more = [task("pid", tmp_path / f"p{i}") for i in range(3)]
    pool.submit(more)
    assert all(f.ok for f in events.wait_finished([t.task_id for t in more]).values())
    assert ran_on(more) == worker_pids()


def test_a_pool_of_no_processes_takes_no_tasks_until_resized(tmp_path: Path) -> None:
    pool = ProcessPool(0, TEST_TYPES, import_paths=[HERE], prefetch=2)
    events = Collector()
    pool.start(events)
    try:
        assert pool.free_slots() == 0 and worker_pids() == set()
        pool.resize(2)
        spawned_workers(2)
        tasks = [task("noop", tmp_path / str(i)) for i in range(6)]
        pool.submit(tasks)
        assert all(f.ok for f in events.wait_finished([t.task_id for t in tasks]).values())
        workers = worker_pids()
        assert pool.resize(0) == []
        wait_gone(list(workers), timeout=5)
        assert pool.free_slots() == 0 and pool.size == 0
        assert pool.give_back_waiting() == []
        with pytest.raises(ValueError):
            pool.resize(-1)
    finally:
        pool.close(5)


def test_a_process_killed_while_it_drains_loses_only_its_running_task(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, events = make_pool(1, window=2)
    pidfile = tmp_path / "sleep.pid"
    slow = task("pidsleep", tmp_path / "s", pidfile=str(pidfile), seconds=30)
    behind = task("noop", tmp_path / "b")
    pool.submit([slow, behind])
    read_pid(pidfile)
    (worker,) = worker_pids()
    assert pool.resize(0) == []  # both were handed to the process already
    os.kill(worker, signal.SIGKILL)
    lost = events.wait_one(slow.task_id)
    assert not lost.ok and lost.error is not None and lost.error["error_code"] == "worker_lost"
    # The task it had not begun waits again; a pool of no processes gives it back.
    assert pool.give_back_waiting() == [behind.task_id]
    assert pool.running() == []


def test_processes_spawned_before_start_run_tasks(tmp_path: Path) -> None:
    pool = ProcessPool(2, TEST_TYPES, import_paths=[HERE])
    pool.spawn()
    spawned = spawned_workers(2)
    assert pool.free_slots() == 0  # nothing is taken before start
    events = Collector()
    try:
        pool.start(events)
        assert worker_pids() == spawned  # start() uses them, and spawns no others
        tasks = [task("noop", tmp_path / str(i)) for i in range(10)]
        pool.submit(tasks)
        done = events.wait_finished([t.task_id for t in tasks], timeout=10)
        assert all(finished.ok for finished in done.values())
        with pytest.raises(RuntimeError):
            pool.spawn()
    finally:
        pool.close(5)
    wait_gone(list(spawned), timeout=5)


def test_closing_a_pool_that_spawned_but_never_started_stops_its_processes() -> None:
    pool = ProcessPool(2, TEST_TYPES)
    pool.spawn()
    spawned = spawned_workers(2)
    assert pool.close(5) == []
    wait_gone(list(spawned), timeout=5)
    with pytest.raises(RuntimeError):
        pool.start(Collector())


def test_every_message_comes_out_of_a_frame_as_it_went_in() -> None:
    messages = [
        ChildSetup(job_types=dict(TEST_TYPES)),
        TaskAssignment(
            task_id=7,
            job_id="j1",
            task_index=2,
            job_type="report",
            parameters={"n": 3, "name": "x"},
            json_parameters={"deep": [1, {"a": None}]},
            execution_duration=1.5,
            attempt=2,
            results_dir="/tmp/r",
        ),
        SkipTask(task_id=8),
        Shutdown(),
        TaskStarted(task_id=7, at=1.25),
        TaskLog(task_id=7, level="warning", timestamp=2.5, message="héllo\n"),
        TaskProgress(task_id=7, label="frames", value=3, max_value=10),
        TaskFinished(
            task_id=7,
            ok=False,
            error={"error_code": "E", "message": "m", "type": "fatal", "detail": None},
            results=[{"path": "a.txt", "size": 3, "mime_type": "text/plain"}],
            started_at=1.25,
            ended_at=2.75,
        ),
    ]
    decoded = FrameDecoder().feed(encode(messages))
    assert decoded == messages
    assert [type(message) for message in decoded] == [type(message) for message in messages]


def test_frames_survive_any_split() -> None:
    batches = [[TaskStarted(i, 1.5), TaskLog(i, "info", 2.0, "x" * i)] for i in range(50)]
    stream = b"".join(encode(batch) for batch in batches)
    for piece in (1, 7, 4096, len(stream)):
        decoder = FrameDecoder()
        decoded = []
        for start in range(0, len(stream), piece):
            decoded.extend(decoder.feed(stream[start : start + piece]))
        assert decoded == [event for batch in batches for event in batch]
