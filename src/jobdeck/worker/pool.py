"""A pool of long-lived worker processes, fed tasks over pipes (like Celery's prefork pool).

Each worker process (:mod:`jobdeck.worker.child`) is started with ``start_new_session=True``,
so it leads a process group of its own that holds the commands it runs. Cancelling a running
task kills that whole group (SIGTERM, then SIGKILL after ``kill_grace``) and puts a fresh
process in its place; the tasks the old one had not started are handed out again.

Where tasks wait: the pool accepts up to ``size * (1 + prefetch)`` tasks (see
:meth:`ProcessPool.free_slots`). It keeps them in a backlog of its own and gives each process
at most ``window`` at a time (the running one and the next few, so that a process never waits
for the parent between two short tasks). Tasks in the backlog go to whichever process has room
first, so a long task does not hold up many others behind it.

How start times and timeouts are known: a worker process reports :class:`TaskStarted` (with
its wall-clock time) just before it runs a task. The pool turns that into a monotonic deadline
``started + execution_duration`` and cancels the task with reason ``"timeout"`` once it has
passed. A task that was sent to a process but not reported started is cancelled without a
kill: the process is told to skip it (and if it turns out to have started it anyway, the
process is killed then). When a process dies without being asked to, the task at the head of
its queue is the one it was running (it runs them in order): that task ends with
``worker_lost`` (transient) and the rest are handed out again.

Threads: :meth:`submit`, :meth:`cancel`, :meth:`free_slots` and :meth:`running` may be called
from any thread. One reader thread (a selector over every process's pipe) handles what the
processes report, enforces deadlines and calls ``on_events`` — always from that thread, with
events in the order each process reported them.
"""

import contextlib
import heapq
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from jobdeck.domain.jobtypes import JobType
from jobdeck.worker.protocol import (
    ChildSetup,
    Event,
    FrameDecoder,
    Shutdown,
    SkipTask,
    TaskAssignment,
    TaskFinished,
    TaskStarted,
    ToChild,
    encode,
    task_error,
)

log = logging.getLogger(__name__)

CancelReason = Literal["aborted", "timeout"]
RESPAWN_DELAY = 1.0
"""A process that died within this many seconds of its start is replaced only after as long,
so that a process that cannot start (a broken environment) does not spin."""


class _Task:
    """A task the pool holds, from :meth:`ProcessPool.submit` until it finishes."""

    __slots__ = ("assignment", "cancelled", "child", "deadline", "started_at")

    def __init__(self, assignment: TaskAssignment) -> None:
        self.assignment = assignment
        self.child: _Child | None = None
        self.started_at: float | None = None
        self.deadline: float | None = None
        self.cancelled = False


class _Child:
    """A worker process, its pipes, and the tasks it was sent and has not finished."""

    def __init__(self, process: subprocess.Popen[bytes], to_child: int, from_child: int) -> None:
        self.process = process
        self.to_child = to_child
        self.from_child = from_child
        self.decoder = FrameDecoder()
        self.outbox = bytearray()
        self.sent: dict[int, _Task] = {}
        """In the order sent, which is the order the process runs them."""
        self.spawned_at = time.monotonic()
        self.retired = False
        self.draining = False
        """Taken out of the pool (:meth:`ProcessPool.resize`): it gets no more tasks, and is
        told to stop once those it holds have finished."""
        self.kill_at = 0.0
        self.killed = False
        self.fds_open = True


PREFETCH = 512
"""How many tasks a pool takes per process beyond the running one, at most (a dispatcher asks
for fewer, by recent task durations). Above 128 it matters only for tasks shorter than 0.4 ms:
with no-op tasks, 512 rather than 128 drained 15-20 % more jobs a second on PostgreSQL here,
in fewer, larger claims."""
WINDOW = 32
"""How many of its tasks a process holds at once (the rest wait in the pool's backlog)."""


class ProcessPool:
    """Runs :class:`TaskAssignment` s on ``size`` long-lived worker processes (none is a
    pool that takes no tasks until :meth:`resize` gives it some).

    The ``on_events`` given to :meth:`start` receives lists of
    :data:`jobdeck.worker.protocol.Event` on the pool's
    reader thread (it must not call :meth:`close`); each task gets exactly one
    :class:`TaskFinished`, whether it ran, failed, was cancelled or lost its process, except
    the tasks :meth:`close` returns. ``prefetch`` is how many tasks the pool takes per process
    beyond the running one; ``window`` how many of them a process holds at once (see the
    module's docstring). ``import_paths`` are put in front of the processes' ``sys.path``
    (python job types are imported from there, from ``PYTHONPATH`` and from the current
    directory). ``kill_grace`` is the time between SIGTERM and SIGKILL on a cancel.
    """

    def __init__(
        self,
        size: int,
        job_types: dict[str, JobType],
        *,
        prefetch: int = PREFETCH,
        window: int = WINDOW,
        import_paths: Sequence[str | Path] = (),
        kill_grace: float = 0.4,
    ) -> None:
        if size < 0:
            raise ValueError("a process pool cannot have fewer than no processes")
        self._size = size
        self._job_types = dict(job_types)
        self._on_events: Callable[[list[Event]], None] | None = None
        self._prefetch = max(0, prefetch)
        self._capacity = size * (1 + self._prefetch)
        self._window = max(1, window)
        self._import_paths = [str(Path(path).resolve()) for path in import_paths]
        self._kill_grace = kill_grace
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._children: list[_Child | None] = []
        self._respawn_at: list[float] = []
        self._draining: list[_Child] = []
        self._retired: list[_Child] = []
        self._tasks: dict[int, _Task] = {}
        self._backlog: deque[int] = deque()
        self._deadlines: list[tuple[float, int]] = []
        self._outgoing: list[Event] = []
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._stop_reader = False
        self._killing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._reader: threading.Thread | None = None

    # -- the public API

    @property
    def size(self) -> int:
        """How many worker processes the pool runs."""
        return self._size

    def spawn(self) -> None:
        """Start the worker processes now, so that they load while the caller goes on (its
        own imports, opening the store); :meth:`start` does it otherwise."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("the pool was started already")
            self._spawn_all()

    def start(self, on_events: Callable[[list[Event]], None]) -> None:
        """Start the worker processes (unless :meth:`spawn` did) and the reader thread, which
        hands what the processes report to ``on_events``."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("the pool was started already")
            self._on_events = on_events
            self._state = "running"
            self._spawn_all()
        self._reader = threading.Thread(target=self._read_loop, name="jobdeck-pool", daemon=True)
        self._reader.start()

    def free_slots(self) -> int:
        """How many more tasks :meth:`submit` should be given now."""
        with self._lock:
            if self._state != "running":
                return 0
            return max(0, self._capacity - len(self._tasks))

    def idle(self) -> int:
        """How many processes would start a task given now (none waits for one)."""
        with self._lock:
            if self._state != "running":
                return 0
            return max(0, self._size - len(self._tasks))

    def submit(self, assignments: Iterable[TaskAssignment]) -> None:
        """Queue tasks; they run in the order given (per process)."""
        with self._lock:
            if self._state != "running":
                raise RuntimeError(f"cannot submit to a pool that is {self._state}")
            for assignment in assignments:
                if assignment.task_id in self._tasks:
                    log.warning("task %d is in the pool already; ignored", assignment.task_id)
                    continue
                self._tasks[assignment.task_id] = _Task(assignment)
                self._backlog.append(assignment.task_id)
            self._fill()

    def resize(self, size: int) -> list[int]:
        """Run ``size`` worker processes from now on.

        New processes start at once. A process taken out gets no more tasks; it finishes
        those it was handed (the running one and the few behind it) and then stops. Tasks
        that waited in the pool for a process are dropped when it shrinks, and their ids
        returned (they get no :class:`TaskFinished`), for the caller to give back: the
        smaller pool takes fewer.
        """
        if size < 0:
            raise ValueError("a process pool cannot have fewer than no processes")
        with self._lock:
            if self._state != "running":
                raise RuntimeError(f"cannot resize a pool that is {self._state}")
            dropped = []
            if size < self._size:
                for child in self._children[size:]:
                    if child is not None and not child.retired:
                        child.draining = True
                        self._draining.append(child)
                        self._stop_if_drained(child)
                del self._children[size:]
                del self._respawn_at[size:]
                dropped = self._drop_waiting()
            self._size = size
            self._capacity = size * (1 + self._prefetch)
            self._spawn_all()
            self._fill()
            self._changed.notify_all()
        self._wake()  # the reader thread watches the new processes' pipes
        return dropped

    def give_back_waiting(self) -> list[int]:
        """Drop the tasks that wait for a process (none started), and return their ids; for
        a pool of no processes, whose waiting tasks would never run."""
        with self._lock:
            return self._drop_waiting()

    def cancel(self, task_id: int, reason: CancelReason) -> None:
        """Stop a task: kill its process group if it runs, or drop it if it waits.

        The task then finishes with error code ``reason``. A task the pool does not hold
        (finished already, or never submitted) is ignored.
        """
        with self._lock:
            self._cancel(task_id, reason)
        self._wake()

    def running(self) -> list[int]:
        """Ids of the tasks submitted and not finished (running or waiting to)."""
        with self._lock:
            return list(self._tasks)

    def close(self, timeout: float) -> list[int]:
        """Stop: let running tasks finish (up to ``timeout`` seconds), then kill them.

        Waiting tasks are not started. Events of what finished meanwhile are delivered before
        this returns. Returns the ids of the tasks that did not finish, for the caller to
        give back.
        """
        with self._lock:
            if self._state in ("closing", "closed"):
                return []
            never_started = self._state == "new"
            self._state = "closing"
            unfinished = [task_id for task_id, task in self._tasks.items() if task.child is None]
            for task_id in unfinished:
                del self._tasks[task_id]
            self._backlog.clear()
            for child in self._active():
                self._send(child, [Shutdown()])
        if never_started:
            with self._lock:
                self._state = "closed"
                unfinished.extend(self._tasks)
                # Spawned (spawn()) but never started: no reader would send them the Shutdown.
                for child in self._active():
                    _kill_group(child.process.pid, signal.SIGKILL)
                    _close_fds(child)
                    child.process.wait()
                self._children = [None] * len(self._children)
            os.close(self._wake_r)
            os.close(self._wake_w)
            return sorted(unfinished)
        self._wake()
        deadline = time.monotonic() + timeout
        if not self._wait_for_children(deadline):
            with self._lock:
                # What they report from now on is the doing of the kill: those tasks are
                # given back unfinished, not failed.
                self._killing = True
                for child in self._active():
                    _kill_group(child.process.pid, signal.SIGTERM)
            if not self._wait_for_children(time.monotonic() + self._kill_grace):
                with self._lock:
                    for child in self._active():
                        _kill_group(child.process.pid, signal.SIGKILL)
                self._wait_for_children(time.monotonic() + 5.0)
        with self._lock:
            unfinished.extend(self._tasks)
            self._tasks.clear()
            self._stop_reader = True
        self._wake()
        if self._reader is not None:
            self._reader.join()
        with self._lock:
            for child in [*self._retired, *self._active()]:
                if not child.killed:
                    _kill_group(child.process.pid, signal.SIGKILL)
                _close_fds(child)
                child.process.wait()
            self._retired.clear()
            self._draining.clear()
            self._children = [None] * len(self._children)
            self._state = "closed"
        os.close(self._wake_r)
        os.close(self._wake_w)
        return sorted(unfinished)

    # -- bookkeeping, always under self._lock

    def _spawn_all(self) -> None:
        while len(self._children) < self._size:
            self._children.append(self._spawn())
            self._respawn_at.append(0.0)

    def _active(self) -> list[_Child]:
        """Every live process: those of the pool, and those taken out that still finish."""
        return [*self._serving(), *(child for child in self._draining if not child.retired)]

    def _serving(self) -> list[_Child]:
        """The processes that take new tasks."""
        return [child for child in self._children if child is not None and not child.retired]

    def _drop_waiting(self) -> list[int]:
        dropped = []
        for task_id in self._backlog:
            task = self._tasks.get(task_id)
            if task is not None and task.child is None:
                del self._tasks[task_id]
                dropped.append(task_id)
        self._backlog.clear()
        return dropped

    def _stop_if_drained(self, child: _Child) -> None:
        if child.draining and not child.sent:
            self._send(child, [Shutdown()])

    def _spawn(self) -> _Child:
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        paths = [arg for path in self._import_paths for arg in ("--path", path)]
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jobdeck.worker.child",
                    "--in",
                    str(in_read),
                    "--out",
                    str(out_write),
                    "--service",
                    str(os.getpid()),
                    *paths,
                ],
                pass_fds=(in_read, out_write),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            for fd in (in_write, out_read):
                os.close(fd)
            raise
        finally:
            os.close(in_read)
            os.close(out_write)
        os.set_blocking(in_write, False)
        os.set_blocking(out_read, False)
        child = _Child(process, in_write, out_read)
        self._send(child, [ChildSetup(self._job_types)])
        return child

    def _send(self, child: _Child, messages: list[ToChild]) -> None:
        child.outbox += encode(messages)
        self._write(child)
        if child.outbox:
            # The reader thread finishes the write once the pipe has room.
            self._wake()

    def _write(self, child: _Child) -> None:
        while child.outbox:
            try:
                written = os.write(child.to_child, child.outbox)
            except BlockingIOError:
                return
            except BrokenPipeError:
                # It died; the end of its output tells the reader thread.
                child.outbox.clear()
                return
            del child.outbox[:written]

    def _next_waiting(self) -> _Task | None:
        while self._backlog:
            task = self._tasks.get(self._backlog.popleft())
            if task is not None and task.child is None:
                return task
        return None

    def _fill(self) -> None:
        """Hand out waiting tasks, one to each process with room in turn, the least busy
        first: a task given while one process runs a long task and another is idle goes to
        the idle one, not behind the long task."""
        if self._state != "running" or not self._backlog:
            return
        children = sorted(self._serving(), key=lambda child: len(child.sent))
        batches: list[list[TaskAssignment]] = [[] for _ in children]
        held_back: list[int] = []
        room = True
        while room and self._backlog:
            room = False
            for child, batch in zip(children, batches, strict=True):
                if len(child.sent) >= self._window:
                    continue
                task = self._next_waiting()
                if task is None:
                    break
                task_id = task.assignment.task_id
                if task_id in child.sent:
                    # A cancelled task of the same id still awaits its skip there; another
                    # one in its place would take that task's report for its own.
                    held_back.append(task_id)
                    continue
                task.child = child
                child.sent[task_id] = task
                batch.append(task.assignment)
                room = True
        self._backlog.extendleft(reversed(held_back))
        for child, batch in zip(children, batches, strict=True):
            if batch:
                self._send(child, list(batch))

    def _finish(self, task: _Task, error_code: str, message: str, transient: bool) -> None:
        now = time.time()
        self._outgoing.append(
            TaskFinished(
                task_id=task.assignment.task_id,
                ok=False,
                error=task_error(error_code, message, type="transient" if transient else "fatal"),
                results=[],
                started_at=task.started_at or now,
                ended_at=now,
            )
        )

    def _cancel(self, task_id: int, reason: CancelReason) -> None:
        task = self._tasks.pop(task_id, None)
        if task is None:
            return
        if reason == "timeout":
            limit = task.assignment.execution_duration
            message = f"the task ran longer than its execution duration ({limit:g} s)"
        else:
            message = "the task was aborted"
        self._finish(task, reason, message, transient=False)
        task.cancelled = True
        child = task.child
        if child is None:
            return  # it waited in the backlog, where it is now skipped
        if task.started_at is not None:
            self._retire(child, lost=False)
        else:
            # Not begun as far as we know: the process skips it, or is killed if it began.
            self._send(child, [SkipTask(task_id)])

    def _retire(self, child: _Child, *, lost: bool) -> None:
        """Kill ``child``'s process group, hand out its unstarted tasks, and replace it."""
        child.retired = True
        now = time.monotonic()
        if lost:
            # Its leader is dead but not reaped, so the group id cannot have been reused.
            _kill_group(child.process.pid, signal.SIGKILL)
            child.killed = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=1.0)
        else:
            _kill_group(child.process.pid, signal.SIGTERM)
            child.kill_at = now + self._kill_grace
        self._retired.append(child)
        tasks = [task for task in child.sent.values() if not task.cancelled]
        if lost and tasks and next(iter(child.sent.values())) is tasks[0]:
            head = tasks.pop(0)
            del self._tasks[head.assignment.task_id]
            self._finish(head, "worker_lost", _death_message(child.process), transient=True)
        for task in tasks:
            task.child = None
            task.started_at = None
            task.deadline = None
        self._backlog.extendleft(task.assignment.task_id for task in reversed(tasks))
        child.sent.clear()
        if child.draining:  # taken out of the pool: it has no place to fill again
            self._draining.remove(child)
        elif self._state != "running":
            self._children[self._children.index(child)] = None
        elif lost and now - child.spawned_at < RESPAWN_DELAY:
            log.error(
                "worker process %d died %.1f s after its start; replacing it in %.0f s",
                child.process.pid,
                now - child.spawned_at,
                RESPAWN_DELAY,
            )
            slot = self._children.index(child)
            self._children[slot] = None
            self._respawn_at[slot] = now + RESPAWN_DELAY
        else:
            self._replace(self._children.index(child))
        self._fill()
        self._changed.notify_all()

    def _replace(self, slot: int) -> None:
        try:
            self._children[slot] = self._spawn()
        except OSError:
            log.exception("cannot start a worker process; trying again")
            self._children[slot] = None
            self._respawn_at[slot] = time.monotonic() + RESPAWN_DELAY

    def _on_child_events(self, child: _Child, events: list[Any]) -> None:
        if self._killing:
            return
        outgoing = self._outgoing
        refill = False
        for event in events:
            task = child.sent.get(event.task_id)
            if task is None:
                continue
            if isinstance(event, TaskFinished):
                del child.sent[event.task_id]
                refill = True
                if not task.cancelled:
                    del self._tasks[event.task_id]
                    outgoing.append(event)
            elif task.cancelled:
                if isinstance(event, TaskStarted):
                    self._retire(child, lost=False)
                    return
            else:
                if isinstance(event, TaskStarted):
                    task.started_at = event.at
                    limit = task.assignment.execution_duration
                    if limit > 0:
                        ran = max(0.0, time.time() - event.at)
                        task.deadline = time.monotonic() - ran + limit
                        heapq.heappush(self._deadlines, (task.deadline, event.task_id))
                outgoing.append(event)
        if refill:
            self._fill()
            self._stop_if_drained(child)

    def _on_child_exit(self, child: _Child) -> None:
        if child.retired:
            return
        if self._state == "running" and (child.sent or not child.draining):
            log.warning("worker process %d died", child.process.pid)
            self._retire(child, lost=True)
            return
        # It exited as asked: the pool closes (what it had not run stays unfinished), or it
        # was taken out of the pool and has finished its tasks.
        child.retired = True
        child.kill_at = time.monotonic()
        self._retired.append(child)
        if child.draining:
            self._draining.remove(child)
        else:
            self._children[self._children.index(child)] = None
        self._changed.notify_all()

    def _run_timers(self) -> float | None:
        """Enforce deadlines, kill and reap retired processes, respawn; next due time."""
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, task_id = heapq.heappop(self._deadlines)
            task = self._tasks.get(task_id)
            if task is not None and task.deadline == deadline:
                self._cancel(task_id, "timeout")
        due: list[float] = []
        if self._deadlines:
            due.append(self._deadlines[0][0])
        for child in list(self._retired):
            if not child.killed:
                if now < child.kill_at:
                    due.append(child.kill_at)
                    continue
                # Even when the leader exited, what it started may linger in its group.
                _kill_group(child.process.pid, signal.SIGKILL)
                child.killed = True
            if child.process.poll() is None:
                due.append(now + 0.01)
            elif not child.fds_open:
                self._retired.remove(child)
        if self._state == "running":
            for slot, occupant in enumerate(self._children):
                if occupant is None:
                    if self._respawn_at[slot] <= now:
                        self._replace(slot)
                        self._fill()
                    else:
                        due.append(self._respawn_at[slot])
        return min(due) if due else None

    # -- the reader thread

    def _wake(self) -> None:
        # BlockingIOError: a wake-up is pending already; OSError: the pool is closed.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _wait_for_children(self, deadline: float) -> bool:
        with self._lock:
            while self._active():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _read_loop(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        registered: dict[int, tuple[_Child, int]] = {}
        while True:
            try:
                with self._lock:
                    due = self._sync_selector(selector, registered)
                    stop = self._stop_reader
                if stop:
                    break
                timeout = None if due is None else max(0.0, due - time.monotonic())
                for key, mask in selector.select(timeout):
                    self._on_ready(key, mask)
            except Exception:
                # A bug here must not stop the pool for good; pause so that it cannot spin.
                log.exception("the pool's reader thread failed; going on")
                time.sleep(0.1)
            with self._lock:
                delivery, self._outgoing = self._outgoing, []
            self._deliver(delivery)
        selector.close()
        with self._lock:
            delivery, self._outgoing = self._outgoing, []
        self._deliver(delivery)

    def _on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data is None:
            _drain(self._wake_r)
            return
        child = key.data
        assert isinstance(child, _Child)
        data = b""
        if mask & selectors.EVENT_READ:
            try:
                data = os.read(child.from_child, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                data = b""
        with self._lock:
            if child.retired:
                return
            if mask & selectors.EVENT_WRITE:
                self._write(child)
            if not mask & selectors.EVENT_READ:
                return
            if not data:
                self._on_child_exit(child)
                return
            try:
                events = child.decoder.feed(data)
            except Exception:
                log.exception("garbled report from worker process %d", child.process.pid)
                self._retire(child, lost=True)
                return
            self._on_child_events(child, events)

    def _sync_selector(
        self, selector: selectors.BaseSelector, registered: dict[int, tuple[_Child, int]]
    ) -> float | None:
        """Watch the live processes' pipes (and no others); run the timers."""
        due = self._run_timers()
        wanted = {child.from_child: child for child in self._active()}
        for fd, (child, _) in list(registered.items()):
            if wanted.get(fd) is not child:
                selector.unregister(fd)
                del registered[fd]
        for child in self._retired:
            if child.fds_open and child.from_child not in registered:
                _close_fds(child)
        for fd, child in wanted.items():
            events = selectors.EVENT_READ
            if child.outbox:
                events |= selectors.EVENT_WRITE
            current = registered.get(fd)
            if current is None:
                selector.register(fd, events, child)
            elif current[1] != events:
                selector.modify(fd, events, child)
            else:
                continue
            registered[fd] = (child, events)
        return due

    def _deliver(self, events: list[Event]) -> None:
        # The reader thread, the only caller, runs only once start() has set on_events.
        if not events or self._on_events is None:
            return
        try:
            self._on_events(events)
        except Exception:
            log.exception("the pool's on_events callback failed")


def _kill_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _close_fds(child: _Child) -> None:
    if child.fds_open:
        child.fds_open = False
        os.close(child.to_child)
        os.close(child.from_child)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _death_message(process: subprocess.Popen[bytes]) -> str:
    code = process.returncode
    if code is None:
        how = "died"
    elif code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with code {code}"
    return f"the worker process {process.pid} running the task {how}"
