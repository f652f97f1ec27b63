"""The dispatcher: claims tasks from the engine in batches and feeds a local process pool.

It is the only part of a worker that talks to the store: the worker processes never open the
database (on SQLite, ``jobdeck serve`` is its one writer). One thread loops: record what
finished (one transaction for the lot), claim as many tasks as the pool has room for (one
statement), extend leases, kill what was cancelled — then sleep until the pool or the
notifier has news. It never sleeps on a fixed interval while there is work.
"""

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError, OperationalError

from jobdeck.domain.errors import Conflict
from jobdeck.domain.records import JobError
from jobdeck.engine.engine import ClaimedTask, Engine, LogLine, TaskOutcome
from jobdeck.engine.writer import Changes
from jobdeck.worker.pool import PREFETCH, ProcessPool
from jobdeck.worker.protocol import (
    Event,
    TaskAssignment,
    TaskFinished,
    TaskLog,
    TaskProgress,
    TaskStarted,
)

log = logging.getLogger(__name__)


BACKLOG_SECONDS = 0.05
"""How much work, by recent task durations, to keep waiting per process."""
EVENTS_WAITING = 20_000
"""Up to how many reported events (starts, finishes, log lines) wait for the dispatching
thread before the pool's reading waits for it (see :meth:`Dispatcher._on_events`)."""


def _add_starts(into: dict[int, datetime], starts: Iterable[tuple[int, datetime]]) -> None:
    """Add jobs' start times (job seq, when) to ``into``, keeping each job's earliest."""
    for job_seq, at in starts:
        into[job_seq] = min(at, into.get(job_seq, at))


def _storable(text: str) -> str:
    """What a task said, as text every store keeps: PostgreSQL refuses a NUL character, and
    neither store's driver takes a lone surrogate (a file name that is not UTF-8, as Python
    reads it); one in a log line or an error would fail the whole batch it is written in.
    Each becomes a replacement character."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="surrogatepass").decode(errors="replace")
    return text


def _passing(error: BaseException) -> bool:
    """Whether a write that failed with ``error`` may succeed as it was, written again: the
    database was away or busy."""
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def default_worker_id() -> str:
    """``host-pid``: unique among live workers, readable in a timeline. (A host's name is
    cut to 100 characters: a store keeps a worker's id of 128 at most.)"""
    return f"{socket.gethostname()[:100]}-{os.getpid()}"


class Dispatcher:
    """Runs the engine's tasks on a pool of local worker processes.

    The pool is made by the caller with the engine's job types; it may have spawned its
    processes already (:meth:`ProcessPool.spawn`), so that they start while the engine loads.
    """

    def __init__(
        self,
        engine: Engine,
        pool: ProcessPool,
        *,
        worker_id: str | None = None,
        idle_wait: float = 1.0,
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id or default_worker_id()
        self._idle_wait = idle_wait
        self._pool = pool
        self._lock = threading.Lock()
        self._events_taken = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._events: list[Event] = []
        self._cancelled: set[int] = set()
        self._given_back: list[int] = []
        self._claimed: dict[int, ClaimedTask] = {}
        self._handed: list[ClaimedTask] = []
        self._room = 0  # tasks submissions may claim for it (Engine.set_standby)
        self._maybe_more = True
        self._thread: threading.Thread | None = None
        self._mean_duration: float | None = None  # seconds, of recent tasks
        self._observed = 0
        self._heartbeat_every = max(0.5, engine.settings.lease_seconds / 3)
        self._keep_for = engine.settings.lease_seconds / 2
        self._next_heartbeat = 0.0
        self._looked = 0.0  # monotonic time of the last claim
        # What a failed write did not record, for the next to (see _keep).
        self._unrecorded_started: dict[int, datetime] = {}
        self._unrecorded: list[TaskOutcome] = []
        self._unrecorded_since = 0.0

    def start(self) -> None:
        """Start the worker processes and the dispatching thread."""
        self._pool.start(self._on_events)
        self.engine.notifier.add_task_listener(self._on_changes)
        if self.engine.standby is None:
            self.engine.set_standby(self)
        self._thread = threading.Thread(target=self._loop, name="jobdeck-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop claiming, let running tasks finish (up to ``timeout``), give back the rest."""
        with self._lock:
            self._stop.set()
            # The pool's reading must not wait for a dispatching thread that has ended.
            self._events_taken.notify_all()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.engine.notifier.remove_task_listener(self._on_changes)
        if self.engine.standby is self:
            self.engine.set_standby(None)
            # A submission that took room before is committed (and its tasks handed) once
            # an operation handed over after it is.
            self.engine.writer.run(lambda tx: None)
        unfinished = self._pool.close(timeout)
        started, finished, lines = self._flush()
        self.engine.finish_tasks(finished, started=started, worker_id=self.worker_id).result()
        self.engine.append_logs(lines)
        leftover = set(unfinished) | set(self._claimed) | {task.task_seq for task in self._handed}
        self._handed.clear()
        if leftover:
            self.engine.release_tasks(self.worker_id, sorted(leftover))
        self._claimed.clear()

    @property
    def processes(self) -> int:
        """How many worker processes run this dispatcher's tasks."""
        return self._pool.size

    def held(self) -> int:
        """How many tasks this worker holds: running, or waiting here for a process."""
        return len(self._pool.running())

    def resize(self, processes: int) -> None:
        """Run ``processes`` worker processes from now on (see :meth:`ProcessPool.resize`);
        the tasks that waited for a process go back to the queue."""
        if self._stop.is_set():
            raise Conflict("the server's workers are stopping")
        before = self._pool.size
        dropped = self._pool.resize(processes)
        given_back = len(dropped)
        log.info("worker processes: %d -> %d (%d tasks given back)", before, processes, given_back)
        with self._lock:
            self._given_back.extend(dropped)
            self._maybe_more = True  # a grown pool has room
        self._wake.set()

    # -- called from other threads

    def take_room(self) -> int:
        """How many tasks a submission may claim for this worker now (Engine.set_standby):
        the room it had when it last ran out of work, once."""
        with self._lock:
            room, self._room = self._room, 0
        return 0 if self._stop.is_set() else room

    def hand(self, claimed: list[ClaimedTask]) -> None:
        """Tasks a submission claimed for this worker (called once they are committed)."""
        with self._lock:
            self._handed.extend(claimed)
        self._wake.set()

    def _on_events(self, events: list[Event]) -> None:
        """Take what the pool's processes report (called by the pool's reading thread). Past
        :data:`EVENTS_WAITING` not yet taken by the dispatching thread (held up by a store
        slower than its tasks' logs: Engine.append_logs), the pool's reading waits for it:
        the worker processes' pipes fill, and their tasks wait in turn."""
        with self._lock:
            self._events.extend(events)
            self._wake.set()
            self._events_taken.wait_for(
                lambda: len(self._events) <= EVENTS_WAITING or self._stop.is_set()
            )

    def _on_changes(self, changes: Changes) -> None:
        with self._lock:
            if changes.tasks_ready or changes.everything:
                self._maybe_more = True
            self._cancelled |= changes.tasks_cancelled
        self._wake.set()

    # -- the dispatching thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except Exception:
                log.exception("dispatch round failed; trying again")
                self._stop.wait(1.0)
            self._wake.wait(self._idle_wait)
            self._wake.clear()

    def _round(self) -> None:
        started, finished, lines = self._flush()
        try:
            self._claim_and_record(started, finished)
        except Exception as error:
            self._keep(started, finished, error)
            raise
        finally:
            # Handed to the writer after the starts they follow (it writes in order): a
            # job's log never shows lines while the job still reads QUEUED.
            self.engine.append_logs(lines)
        self._lend_room()

    def _claim_and_record(self, started: dict[int, datetime], finished: list[TaskOutcome]) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            maybe_more = self._maybe_more
            given_back, self._given_back = self._given_back, []
            handed, self._handed = self._handed, []
            # Room lent to submissions is taken back while this round claims itself.
            self._room = 0
        if handed:
            self._start(handed)
        if self._pool.size == 0:  # what a process taken out left behind would never run
            given_back += self._pool.give_back_waiting()
        if given_back:
            for task_seq in given_back:
                self._claimed.pop(task_seq, None)
            self.engine.release_tasks(self.worker_id, given_back)
        for task_seq in cancelled & set(self._claimed):
            self._pool.cancel(task_seq, "aborted")
        if time.monotonic() >= self._next_heartbeat:
            self._heartbeat()
        free = min(self._pool.free_slots(), self._wanted() - len(self._claimed))
        # A claim where none is known to be ready only now and then: for what becomes
        # ready unannounced (a retry's delay running out). Each finish claimed too, and on
        # PostgreSQL that claim was a tenth of a lone job's finish.
        now = time.monotonic()
        look = now - self._looked >= self._idle_wait / 2
        if free > 0 and (maybe_more or look):
            self._looked = now
            # What is announced from here on is looked for by the next claim.
            with self._lock:
                self._maybe_more = False
            claimed = self.engine.claim_tasks(
                self.worker_id, free, finished=finished, started=started, start_jobs=False
            )
            if claimed:
                self._start(claimed)
            if len(claimed) == free:
                with self._lock:
                    self._maybe_more = True
                self._wake.set()
        elif finished or started:
            recorded = self.engine.finish_tasks(finished, started=started, worker_id=self.worker_id)
            recorded.add_done_callback(functools.partial(self._on_recorded, started, finished))

    def _on_recorded(
        self, started: dict[int, datetime], finished: list[TaskOutcome], recorded: "Future[None]"
    ) -> None:
        """What to do once a write of task starts and ends is done (see :meth:`_keep`)."""
        error = recorded.exception()
        if error is not None:
            log.error("recording tasks failed", exc_info=error)
            self._keep(started, finished, error)

    def _keep(
        self, started: dict[int, datetime], finished: list[TaskOutcome], error: BaseException
    ) -> None:
        """Keep what a write that failed with ``error`` was to record, for the next round's
        to: a database that went away for a moment loses no task's end (its task would have
        run again after its lease). Writing it again is safe: a finish or start already
        recorded matches no running task or queued job.

        A write that failed otherwise (a value a store refuses) would fail so again, and
        hold up every task end written with it: each is written apart instead."""
        if not started and not finished:
            return
        if not _passing(error):
            for job_seq, at in started.items():
                self._write_apart([], {job_seq: at})
            for outcome in finished:
                self._write_apart([outcome], {})
            return
        with self._lock:
            if not self._unrecorded and not self._unrecorded_started:
                self._unrecorded_since = time.monotonic()
            _add_starts(self._unrecorded_started, started.items())
            self._unrecorded.extend(finished)
        self._wake.set()

    def _write_apart(
        self, outcomes: list[TaskOutcome], started: dict[int, datetime], *, last: bool = False
    ) -> None:
        """Write one task's end (or one job's start) on its own: the writer gives it a
        savepoint of its own in a batch. A task's end that fails so for good is written once
        more as the task's failure, without its results (``last``): its job ends, and the
        reason is in its errors."""
        try:
            recorded = self.engine.finish_tasks(outcomes, started=started, worker_id=self.worker_id)
        except RuntimeError:  # the writer has stopped: its leases will run out
            log.error("the writer has stopped; task ends not recorded: %s", outcomes)
            return
        recorded.add_done_callback(functools.partial(self._written_apart, outcomes, started, last))

    def _written_apart(
        self,
        outcomes: list[TaskOutcome],
        started: dict[int, datetime],
        last: bool,
        recorded: "Future[None]",
    ) -> None:
        error = recorded.exception()
        if error is None:
            return
        if _passing(error):
            self._keep(started, outcomes, error)
        elif outcomes and not last:
            log.error("recording a task's end failed; recording its failure", exc_info=error)
            ended = outcomes[0]
            reason = (str(error).splitlines() or [type(error).__name__])[0][:300]
            failure = JobError(
                source=f"worker:{self.worker_id}",
                message=_storable(f"the task's end could not be recorded: {reason}"),
                error_code="unrecordable",
            )
            self._write_apart([replace(ended, ok=False, error=failure, results=[])], {}, last=True)
        else:
            log.error("not recorded, for good: %s %s", outcomes, started, exc_info=error)

    def _lend_room(self) -> None:
        """Let submissions claim for this worker a task for each idle process, while it
        knows of no ready task (when it does, its next round claims them). Only for idle
        processes: a large batch's submission claims a few, the rounds claim the rest. Should
        a submission's claim cross this worker's own, a task or two wait here for a
        process."""
        room = self._pool.idle()
        with self._lock:
            if not self._maybe_more and not self._handed:
                self._room = room

    def _observe(self, duration: float) -> None:
        """Fold a finished task's duration into the recent mean: the plain mean of the first
        ten, then a moving one. (From a prior guess, a backlog of short tasks took dozens of
        rounds to reach a useful claim size.)"""
        self._observed += 1
        if self._mean_duration is None:
            self._mean_duration = duration
        else:
            weight = max(0.1, 1 / self._observed)
            self._mean_duration += weight * (duration - self._mean_duration)

    def _wanted(self) -> int:
        """How many tasks to hold: the running ones plus ~50 ms of work per process.

        Short tasks need a deep backlog (a round trip to the database costs more than they
        do); long ones need none, and should stay in the queue for other workers to take and
        for their jobs to read QUEUED rather than EXECUTING while they wait here. Until a
        task has finished, one each (their length is unknown).
        """
        mean = 1.0 if self._mean_duration is None else self._mean_duration
        backlog = int(BACKLOG_SECONDS / max(mean, 1e-4))
        return self._pool.size * (1 + max(1, min(PREFETCH, backlog)))

    def _start(self, claimed: list[ClaimedTask]) -> None:
        for task in claimed:
            self._claimed[task.task_seq] = task
        self._pool.submit(
            [
                TaskAssignment(
                    task_id=task.task_seq,
                    job_id=task.job_id,
                    task_index=task.task_index,
                    job_type=task.job_type,
                    parameters=task.parameters,
                    json_parameters=task.json_parameters,
                    execution_duration=task.execution_duration,
                    attempt=task.attempt,
                    results_dir=task.results_dir,
                )
                for task in claimed
            ]
        )

    def _heartbeat(self) -> None:
        self._next_heartbeat = time.monotonic() + self._heartbeat_every
        running = list(self._claimed)
        if not running:
            return
        still_mine = self.engine.heartbeat(self.worker_id, running)
        # A task that is no longer ours was cancelled, or rescued after a stall: stop it.
        for task_seq in set(running) - still_mine:
            if task_seq in self._claimed:
                self._pool.cancel(task_seq, "aborted")

    def _flush(self) -> tuple[dict[int, datetime], list[TaskOutcome], list[LogLine]]:
        """Record the progress the pool reported; return the jobs whose task started (job
        seq: when) and the tasks that finished, for the caller to record in one transaction,
        and the log lines, to store after them. A task that also finished is reported by its
        finish alone (which says when it began)."""
        with self._lock:
            events, self._events = self._events, []
            self._events_taken.notify_all()
            jobs_started, self._unrecorded_started = self._unrecorded_started, {}
            outcomes, self._unrecorded = self._unrecorded, []
            since = self._unrecorded_since
        if (jobs_started or outcomes) and time.monotonic() - since > self._keep_for:
            # Their leases are running out (no heartbeat keeps an ended task's): they will
            # be rescued, and a record this late might end the task's next attempt.
            log.error("dropping %d task ends not recorded in time", len(outcomes))
            jobs_started, outcomes = {}, []
        if not events:
            return jobs_started, outcomes, []
        started: dict[int, tuple[int, float]] = {}  # task seq -> job seq, when
        lines: list[LogLine] = []
        for event in events:
            task = self._claimed.get(event.task_id)
            if task is None:
                continue
            if isinstance(event, TaskStarted):
                started[event.task_id] = (task.job_seq, event.at)
            elif isinstance(event, TaskFinished):
                started.pop(event.task_id, None)
                outcomes.append(self._outcome(event))
                self._observe(max(0.0, event.ended_at - event.started_at))
                del self._claimed[event.task_id]
            elif isinstance(event, TaskLog):
                lines.append(
                    LogLine(
                        job_seq=task.job_seq,
                        task_index=task.task_index,
                        level=event.level,
                        timestamp=datetime.fromtimestamp(event.timestamp, UTC),
                        message=_storable(event.message),
                    )
                )
            elif isinstance(event, TaskProgress):
                self.engine.set_progress(task.job_seq, event.label, event.value, event.max_value)
        _add_starts(
            jobs_started,
            ((job_seq, datetime.fromtimestamp(at, UTC)) for job_seq, at in started.values()),
        )
        return jobs_started, outcomes, lines

    def _outcome(self, event: TaskFinished) -> TaskOutcome:
        error = None
        if not event.ok and event.error is not None:
            detail = event.error.get("detail")
            error = JobError(
                source=f"worker:{self.worker_id}",
                message=_storable(str(event.error.get("message") or "failed")),
                error_code=event.error.get("error_code"),
                type="transient" if event.error.get("type") == "transient" else "fatal",
                detail=None if detail is None else _storable(str(detail)),
            )
        elif not event.ok:
            error = JobError(source=f"worker:{self.worker_id}", message="failed")
        return TaskOutcome(
            task_seq=event.task_id,
            worker_id=self.worker_id,
            ok=event.ok,
            error=error,
            results=list(event.results),
            started_at=datetime.fromtimestamp(event.started_at, UTC),
        )
