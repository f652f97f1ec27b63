"""A worker process: runs the tasks its pool sends, one at a time, and reports events.

Started by :class:`jobdeck.worker.pool.ProcessPool` as
``python -m jobdeck.worker.child --in FD --out FD [--path DIR]...``: it reads frames (see
:mod:`jobdeck.worker.protocol`) from ``--in`` and writes event frames to ``--out``, two
descriptors passed to it for the protocol alone. Its standard output and error are pipes it
reads itself, so whatever a task prints (``print``, a C library, a subprocess) becomes log
lines of that task and can never corrupt the protocol. Each ``--path`` is put in front of
``sys.path``, where python job types are imported from (``PYTHONPATH`` works too).

It never opens the database. It runs its queue in order; a SIGTERM sets ``ctx.cancelled``
and makes it exit after the running task (the pool SIGKILLs the process group soon after).
"""

import argparse
import contextlib
import copy
import ctypes
import fcntl
import functools
import importlib
import io
import json
import logging
import mimetypes
import os
import select
import selectors
import signal
import subprocess
import sys
import termios
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from jobdeck.domain.errors import ValidationFailed
from jobdeck.domain.jobtypes import JobType
from jobdeck.domain.limits import (
    ERROR_CODE_MAX_LENGTH,
    RESULT_ID_MAX_LENGTH,
    TASK_LOG_MAX_BYTES,
)
from jobdeck.domain.parameters import substitute
from jobdeck.worker.builtins import BUILTINS, WRITES_NOTHING, TaskFunction
from jobdeck.worker.context import CancelFlag, TaskContext, TaskError
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
    task_error,
    write_all,
)

FLUSH_DELAY = 0.002
"""Seconds an event may wait to share its write with others while the queue is busy."""
FLUSH_BATCH = 256
"""Events that are written at once, without waiting for the delay."""
MAX_LINE = 65536
"""A longer line of output is split; a task must not make the worker buffer without end."""
STDERR_TAIL = 20
"""Lines of a failed command's standard error kept as the error's detail."""

log = logging.getLogger("jobdeck.worker.child")


def _parent_gone() -> None:
    """Nobody will read what the tasks do: stop them and this process at once."""
    os.killpg(os.getpgid(0), signal.SIGKILL)


class EventSink:
    """Collects events and writes them to the parent in batches.

    The main thread writes when it runs out of work or a batch is full; a flusher thread
    writes what has waited :data:`FLUSH_DELAY`, so that a long task's start and log lines
    reach the parent promptly. Writes are serialised and in order.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._events: list[Event] = []
        self._progress: dict[tuple[int, str], int] = {}
        self._log_limit: _LogLimit | None = None  # the running task's (one at a time)
        self._pending = threading.Event()
        threading.Thread(target=self._flush_later, name="event-flusher", daemon=True).start()

    def limit_log(self, task_id: int, max_bytes: int) -> None:
        """Send at most ``max_bytes`` of the task's log lines (its job type's
        ``max_log_bytes``, UTF-8 with a newline each). The lines after the first that does
        not fit are left out: a warning says so then, and another at the task's finish says
        how many. The log a task keeps is so much of its beginning."""
        with self._lock:
            self._log_limit = _LogLimit(task_id, max_bytes)

    def emit(self, event: Event) -> None:
        """Queue ``event`` for the parent.

        A task that finishes before its start was sent is reported by its finish alone
        (which carries the start time): for short tasks, half the events to write and read.
        """
        with self._lock:
            events = self._events
            limit = self._log_limit
            if limit is not None and event.task_id == limit.task_id:
                if isinstance(event, TaskLog):
                    kept = limit.admit(event)
                    if kept is None:
                        return
                    event = kept
                elif isinstance(event, TaskFinished):
                    self._log_limit = None
                    if limit.left_out:
                        events.append(limit.summary())
            if (
                isinstance(event, TaskFinished)
                and events
                and isinstance(events[-1], TaskStarted)
                and events[-1].task_id == event.task_id
            ):
                events[-1] = event
                return
            events.append(event)
            count = len(events)
        self._after_append(count)

    def progress(self, task_id: int, label: str, value: int, max_value: int) -> None:
        """Queue a progress update, replacing an unsent one of the same counter."""
        event = TaskProgress(task_id, label, value, max_value)
        with self._lock:
            index = self._progress.get((task_id, label))
            if index is not None:
                self._events[index] = event
                return
            self._progress[(task_id, label)] = len(self._events)
            self._events.append(event)
            count = len(self._events)
        self._after_append(count)

    def _after_append(self, count: int) -> None:
        if count == 1:
            self._pending.set()
        elif count >= FLUSH_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write every queued event now."""
        with self._write_lock:
            with self._lock:
                events, self._events = self._events, []
                self._progress.clear()
            if events:
                try:
                    write_all(self._fd, encode(events))
                except BrokenPipeError:
                    _parent_gone()

    def _flush_later(self) -> None:
        while True:
            self._pending.wait()
            self._pending.clear()
            time.sleep(FLUSH_DELAY)
            self.flush()


class _LogLimit:
    """What is left of a task's log limit, and what it has left out."""

    def __init__(self, task_id: int, max_bytes: int) -> None:
        self.task_id = task_id
        self.max_bytes = max_bytes
        self.room = max_bytes
        self.left_out = 0
        self.bytes_left_out = 0

    def admit(self, line: TaskLog) -> TaskLog | None:
        """``line`` if it fits; the warning that the limit is reached in place of the first
        that does not; None for the lines after it."""
        size = len(line.message.encode("utf-8", "replace")) + 1
        if not self.left_out and size <= self.room:
            self.room -= size
            return line
        self.left_out += 1
        self.bytes_left_out += size
        if self.left_out > 1:
            return None
        return TaskLog(
            line.task_id,
            "warning",
            line.timestamp,
            f"log limit of {self.max_bytes} bytes reached (the job type's max_log_bytes): "
            "the task's later lines are left out",
        )

    def summary(self) -> TaskLog:
        """The warning at the task's end: how much was left out."""
        return TaskLog(
            self.task_id,
            "warning",
            time.time(),
            f"{self.left_out} lines of log ({self.bytes_left_out} bytes) were left out, "
            f"past the limit of {self.max_bytes} bytes",
        )


def _own_documents(messages: list[Any]) -> list[Any]:
    """Give each task a JSON document of its own. The tasks of one submission share one
    decoded document in the service, which a frame then carries once; a task that changes
    its ``ctx.json_parameters`` in place must not change the next ones'. Only a document
    already handed to another task is copied."""
    seen: set[int] = set()
    for message in messages:
        if isinstance(message, TaskAssignment) and isinstance(message.json_parameters, dict | list):
            if id(message.json_parameters) in seen:
                message.json_parameters = copy.deepcopy(message.json_parameters)
            else:
                seen.add(id(message.json_parameters))
    return messages


def _unread_bytes(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


class OutputCapture:
    """Standard output and error of this process, turned into log lines of the running task.

    File descriptors 1 and 2 become pipes that a thread reads; lines are charged to the task
    that is current when they are read, and :meth:`sync` makes sure a task's last lines are
    read before the next task begins. Lines written while no task runs go to ``fallback_fd``
    (the worker's original standard error).
    """

    def __init__(
        self, sink: EventSink, current_task: Callable[[], int | None], fallback_fd: int
    ) -> None:
        self._sink = sink
        self._current_task = current_task
        self._fallback_fd = fallback_fd
        self._lock = threading.Lock()
        self._busy = False
        self._partial: dict[int, bytearray] = {}
        self._levels: dict[int, str] = {}
        # Each pipe's write end is kept, with the pipe's identity and the stream over it, to
        # put them back (restore).
        self._kept: dict[int, tuple[int, tuple[int, int], str, Any]] = {}
        for target, level, name in ((1, "info", "stdout"), (2, "warning", "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, target)
            pipe = os.fstat(write_end)
            self._kept[target] = (write_end, (pipe.st_dev, pipe.st_ino), name, getattr(sys, name))
            self._partial[read_end] = bytearray()
            self._levels[read_end] = level
        threading.Thread(target=self._read, name="output-capture", daemon=True).start()

    def restore(self) -> None:
        """Put back what a task may have taken away: file descriptors 1 and 2 writing to
        their pipes, and ``sys.stdout`` and ``sys.stderr`` writing to them. A task that
        closed them (or left them redirected) made every later task in this process fail
        at its first print, or lose its output."""
        for target, (kept, identity, name, stream) in self._kept.items():
            try:
                now = os.fstat(target)
                intact = (now.st_dev, now.st_ino) == identity
            except OSError:  # closed
                intact = False
            if not intact:
                os.dup2(kept, target)
            if stream.closed:
                stream = open(target, "w", buffering=1, closefd=False)  # noqa: SIM115
                self._kept[target] = (kept, identity, name, stream)
            if getattr(sys, name) is not stream:
                setattr(sys, name, stream)

    def _read(self) -> None:
        selector = selectors.DefaultSelector()
        for fd in self._partial:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                # Busy before the read, so that sync() never sees the data in neither place.
                self._busy = True
                try:
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fd)
                        continue
                    with self._lock:
                        self._take(key.fd, data)
                finally:
                    self._busy = False

    def _take(self, fd: int, data: bytes) -> None:
        partial = self._partial[fd]
        partial += data
        *lines, rest = partial.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = bytearray()
        self._partial[fd] = rest
        for line in lines:
            self._line(fd, bytes(line))

    def _line(self, fd: int, line: bytes) -> None:
        task_id = self._current_task()
        if task_id is None:
            write_all(self._fallback_fd, line + b"\n")
            return
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        self._sink.emit(TaskLog(task_id, self._levels[fd], time.time(), text))

    def sync(self) -> None:
        """Return once everything written to stdout and stderr so far is a log line."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        while any(_unread_bytes(fd) for fd in self._partial) or self._busy:
            time.sleep(0.0005)
        with self._lock:
            for fd, rest in self._partial.items():
                if rest:
                    self._partial[fd] = bytearray()
                    self._line(fd, bytes(rest))


class TaskLogHandler(logging.Handler):
    """Turns log records into log lines of the running task."""

    def __init__(
        self, sink: EventSink, current_task: Callable[[], int | None], fallback_fd: int
    ) -> None:
        super().__init__()
        self._sink = sink
        self._current_task = current_task
        self._fallback_fd = fallback_fd

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record`` as a log line, or to the worker's stderr outside a task."""
        try:
            message = self.format(record)
            task_id = self._current_task()
            if task_id is None:
                write_all(self._fallback_fd, f"{record.levelname} {message}\n".encode())
                return
            if record.levelno >= logging.ERROR:
                level = "error"
            elif record.levelno >= logging.WARNING:
                level = "warning"
            elif record.levelno >= logging.INFO:
                level = "info"
            else:
                level = "debug"
            self._sink.emit(TaskLog(task_id, level, record.created, message))
        except Exception:
            self.handleError(record)


def scan_results(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every regular file under ``root`` as a result, sorted by path (symlinks are left out);
    and why each one left out was: a result's id is its path, which a store keeps as text
    of :data:`RESULT_ID_MAX_LENGTH` characters at most (one that could not be kept failed
    every write of the task's end)."""
    results: list[dict[str, Any]] = []
    left_out: list[str] = []
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            entries = os.scandir(root / folder if folder else root)
        except OSError:
            continue
        with entries:
            for entry in entries:
                path = f"{folder}/{entry.name}" if folder else entry.name
                if not _utf8(entry.name):
                    left_out.append(f"result {path!a} left out: its name is not UTF-8")
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(path)
                elif len(path) > RESULT_ID_MAX_LENGTH:
                    left_out.append(
                        f"result {path[:60]}... left out: its path is longer than "
                        f"{RESULT_ID_MAX_LENGTH} characters"
                    )
                elif entry.is_file(follow_symlinks=False):
                    mime_type, _ = mimetypes.guess_type(entry.name)
                    results.append(
                        {
                            "path": path,
                            "size": entry.stat(follow_symlinks=False).st_size,
                            "mime_type": mime_type or "application/octet-stream",
                        }
                    )
    results.sort(key=lambda result: str(result["path"]))
    return results, sorted(left_out)


def _utf8(name: str) -> bool:
    """Whether a file name read from the disk is UTF-8 (Python holds its other bytes as
    surrogates, which no UTF-8 text can)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _exception_error(exc: BaseException) -> dict[str, Any]:
    detail = "".join(traceback.format_exception(exc))
    if isinstance(exc, TaskError):
        # As text whatever a task gave (an HTTP status as its code, say): the report must
        # pickle, and the service keeps text, a code of a bounded length.
        return task_error(
            _text(exc.error_code)[:ERROR_CODE_MAX_LENGTH],
            _text(exc.message),
            type="transient" if exc.transient else "fatal",
            detail=_text(exc.detail) if exc.detail is not None else detail,
        )
    return task_error("exception", f"{type(exc).__name__}: {_text(exc)}", detail=detail)


def _text(value: object) -> str:
    """``str(value)``, or a placeholder where that fails (an exception's own ``__str__`` that
    raised once took its worker process down)."""
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}: str() failed>"


class Runner:
    """Runs one task at a time: python functions in this process, commands as children."""

    def __init__(
        self,
        job_types: dict[str, JobType],
        sink: EventSink,
        cancel_flag: CancelFlag,
        fallback_fd: int,
    ) -> None:
        self.job_types = job_types
        self.current: int | None = None
        self._sink = sink
        self._cancel_flag = cancel_flag
        self._capture = OutputCapture(sink, self._current, fallback_fd)
        self._functions: dict[str, TaskFunction] = {}
        handler = TaskLogHandler(sink, self._current, fallback_fd)
        logging.getLogger().addHandler(handler)
        self.task_logger = logging.getLogger("jobdeck.task")
        self.task_logger.setLevel(logging.DEBUG)

    def _current(self) -> int | None:
        return self.current

    def run(self, task: TaskAssignment) -> TaskFinished:
        """Run ``task`` to its end and say how it went."""
        started = time.time()
        job_type = self.job_types.get(task.job_type)
        max_log = job_type.max_log_bytes if job_type is not None else TASK_LOG_MAX_BYTES
        self._sink.limit_log(task.task_id, max_log)
        self._sink.emit(TaskStarted(task.task_id, started))
        error: dict[str, Any] | None
        results: list[dict[str, Any]] = []
        self.current = task.task_id
        try:
            if job_type is None:
                error = task_error("unknown_job_type", f"no job type {task.job_type!r} here")
            elif job_type.kind == "command":
                error, results = self._run_command(task, job_type)
            else:
                error, results = self._run_python(task, job_type)
        finally:
            if job_type is None or job_type.kind != "builtin":  # the built-ins start none
                self._end_left_behind()
            self.current = None
        return TaskFinished(task.task_id, error is None, error, results, started, time.time())

    def _end_left_behind(self) -> None:
        """A task's processes end with it: what it left running (a command's background
        child, a daemon, a python task's subprocess) is killed, and its log says so. They
        ran on, past the task's end and past any limit of its job."""
        killed = end_left_behind()
        if killed:
            self.task_logger.warning(
                "%d process%s the task left running killed at its end",
                killed,
                "" if killed == 1 else "es",
            )

    def _function(self, job_type: JobType) -> TaskFunction:
        if job_type.kind == "builtin":
            return BUILTINS[job_type.target]
        function = self._functions.get(job_type.target)
        if function is None:
            module_name, _, attribute = job_type.target.partition(":")
            found: Any = importlib.import_module(module_name)
            for name in attribute.split("."):
                found = getattr(found, name)
            if not callable(found):
                raise TypeError(f"{job_type.target} is not a function")
            function = self._functions[job_type.target] = found
        return function

    def _run_python(
        self, task: TaskAssignment, job_type: JobType
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        quiet = job_type.kind == "builtin" and job_type.target in WRITES_NOTHING
        results_dir = Path(task.results_dir)
        error: dict[str, Any] | None = None
        try:
            function = self._function(job_type)
        except Exception as exc:
            error = _exception_error(exc)
            error["error_code"] = "import_error"
            return error, []
        if not quiet:
            results_dir.mkdir(parents=True, exist_ok=True)
        context = TaskContext(
            task_id=task.task_id,
            job_id=task.job_id,
            task_index=task.task_index,
            attempt=task.attempt,
            results_dir=results_dir,
            json_parameters=task.json_parameters,
            logger=self.task_logger,
            report_progress=functools.partial(self._sink.progress, task.task_id),
            cancel_flag=self._cancel_flag,
        )
        try:
            value = function(dict(task.parameters), context)
            if value is not None:
                text = json.dumps(value, indent=2)
                (results_dir / "result.json").write_text(text + "\n", encoding="utf-8")
        except BaseException as exc:  # whatever the task raised is its failure
            error = _exception_error(exc)
        if job_type.kind != "builtin":
            self._capture.sync()
            self._capture.restore()
        return error, [] if quiet else self._results(results_dir)

    def _run_command(
        self, task: TaskAssignment, job_type: JobType
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        try:
            argv = [substitute(part, task.parameters) for part in job_type.command]
        except ValidationFailed as exc:
            return task_error("bad_parameters", exc.message), []
        results_dir = Path(task.results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JOBDECK_JOB_ID": task.job_id,
            "JOBDECK_TASK_INDEX": str(task.task_index),
            "JOBDECK_ATTEMPT": str(task.attempt),
            "JOBDECK_RESULTS_DIR": str(results_dir),
        }
        try:
            # Same process group as this worker: killing the group kills the command too.
            process = subprocess.Popen(
                argv,
                cwd=results_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            return task_error("exec_failed", f"cannot run {argv[0]!r}: {exc}"), []
        assert process.stdout is not None and process.stderr is not None
        tail = self._stream(task.task_id, process, process.stdout.fileno(), process.stderr.fileno())
        process.stdout.close()
        process.stderr.close()
        code = process.wait()
        error = None
        if code != 0:
            if code < 0:
                message = f"{argv[0]} was killed by {signal.Signals(-code).name}"
            else:
                message = f"{argv[0]} exited with code {code}"
            error = task_error("exit_code", message, detail="\n".join(tail) or None)
        return error, self._results(results_dir)

    def _results(self, results_dir: Path) -> list[dict[str, Any]]:
        """The task's results (:func:`scan_results`); each file left out is a warning in
        its log."""
        results, left_out = scan_results(results_dir)
        for why in left_out:
            self.task_logger.warning(why)
        return results

    def _stream(
        self, task_id: int, process: subprocess.Popen[bytes], out_fd: int, err_fd: int
    ) -> deque[str]:
        """Turn the command's output into log lines until it exits; return stderr's tail."""
        tail: deque[str] = deque(maxlen=STDERR_TAIL)
        levels = {out_fd: "info", err_fd: "warning"}
        partial = {out_fd: b"", err_fd: b""}
        exited_at: float | None = None

        def line(fd: int, raw: bytes) -> None:
            text = raw.rstrip(b"\r").decode("utf-8", "replace")
            if fd == err_fd:
                tail.append(text)
            self._sink.emit(TaskLog(task_id, levels[fd], time.time(), text))

        with selectors.DefaultSelector() as selector:
            for fd in levels:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select(timeout=0.1):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fd)
                        continue
                    *lines, rest = (partial[key.fd] + data).split(b"\n")
                    if len(rest) > MAX_LINE:
                        lines.append(rest)
                        rest = b""
                    partial[key.fd] = rest
                    for raw in lines:
                        line(key.fd, raw)
                # A background grandchild may hold the pipes open long after the command
                # exited: the command's exit, not the pipes' end, ends the task.
                if exited_at is None and process.poll() is not None:
                    exited_at = time.monotonic()
                if exited_at is not None and time.monotonic() - exited_at > 0.2:
                    break
        for fd, rest in partial.items():
            if rest:
                line(fd, rest)
        return tail


def _skip(queue: deque[TaskAssignment], task_id: int, sink: EventSink) -> None:
    """Drop a queued task; one that ran already (the skip came too late) is not affected."""
    for task in queue:
        if task.task_id == task_id:
            queue.remove(task)
            now = time.time()
            error = task_error("skipped", "cancelled before it started")
            # The pool expects a finish for every task it sent, to free the task's place.
            sink.emit(TaskFinished(task_id, False, error, [], now, now))
            return


class _Stop(Exception):
    """Raised by the SIGTERM handler while the worker waits for work."""


def serve(in_fd: int, out_fd: int) -> None:
    """Run tasks from ``in_fd`` and report on ``out_fd`` until told to stop."""
    cancel_flag = CancelFlag()
    idle = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        cancel_flag.is_set = True
        if idle:
            raise _Stop

    signal.signal(signal.SIGTERM, on_sigterm)
    fallback_fd = os.dup(2)
    sink = EventSink(out_fd)
    decoder = FrameDecoder()
    poller = select.poll()
    poller.register(in_fd, select.POLLIN)

    def read(block: bool) -> list[Any]:
        nonlocal idle
        if block:
            idle = True
            try:
                if cancel_flag.is_set:
                    raise _Stop
                poller.poll()
            finally:
                idle = False
        try:
            data = os.read(in_fd, 1 << 20)
        except BlockingIOError:
            return []
        if not data:
            _parent_gone()
        return _own_documents(decoder.feed(data))

    os.set_blocking(in_fd, False)
    messages = read(block=True)
    while not messages:
        messages = read(block=True)
    setup = messages.pop(0)
    assert isinstance(setup, ChildSetup), f"expected the setup first, got {setup!r}"
    runner = Runner(setup.job_types, sink, cancel_flag, fallback_fd)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    mimetypes.init()

    queue: deque[TaskAssignment] = deque()
    stopping = False
    try:
        while True:
            for message in messages:
                if isinstance(message, TaskAssignment):
                    queue.append(message)
                elif isinstance(message, SkipTask):
                    _skip(queue, message.task_id, sink)
                elif isinstance(message, Shutdown):
                    stopping = True
            if stopping or cancel_flag.is_set:
                break
            if queue:
                sink.emit(runner.run(queue.popleft()))
            if not queue:
                sink.flush()
            messages = read(block=not queue)
    except _Stop:
        pass
    sink.flush()


def die_with(service: int) -> None:
    """Have this process, with the commands of its task (its process group), killed once
    the service process ``service`` is gone (killed, crashed): its task would otherwise run
    on, orphaned, while the service's successor runs it again once its lease has run out.

    Linux sends the signal when the thread that started this process ends, which is not
    always the service's end: the handler looks whether the service is still the parent.
    """
    if not sys.platform.startswith("linux"):
        return

    def on_parent_death(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != service:
            os.killpg(0, signal.SIGKILL)

    signal.signal(signal.SIGUSR2, on_parent_death)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGUSR2, "follow the service's end")
    on_parent_death(signal.SIGUSR2, None)  # gone before the call


_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int, purpose: str) -> None:
    """Linux's ``prctl(option, value)`` for this process; a refusal is a warning that it
    cannot ``purpose``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        log.warning("cannot %s: errno %d", purpose, ctypes.get_errno())


def adopt_orphans() -> None:
    """Become the parent of the orphans among this process's descendants (Linux's child
    subreaper): a process a task left running, even one that made itself a daemon, stays
    this process's to end (:func:`end_left_behind`)."""
    if sys.platform.startswith("linux"):
        _prctl(_PR_SET_CHILD_SUBREAPER, 1, "adopt what tasks leave running")


def end_left_behind() -> int:
    """Kill the processes the task that just ended left running, and reap them: between
    tasks, every child of this process is one (a command task's own process has been waited
    for). How many were running. One system call when there are none."""
    killed = 0
    for _ in range(_ROUNDS_FOR_LEFT_BEHIND):
        if not _has_live_children():
            break
        # Their children, orphaned by their deaths, come to this process: the next round.
        pids = _children_of(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return killed


_ROUNDS_FOR_LEFT_BEHIND = 100


def _has_live_children() -> bool:
    """Whether a child of this process still runs; the ones that ended are reaped."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _children_of(parent: int) -> list[int]:
    """The running children of ``parent``, from /proc (this kernel may not list a task's
    children itself)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == parent and fields[0] != b"Z":
            children.append(int(entry.name))
    return children


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m jobdeck.worker.child``."""
    parser = argparse.ArgumentParser(prog="jobdeck.worker.child")
    parser.add_argument("--in", dest="in_fd", type=int, required=True)
    parser.add_argument("--out", dest="out_fd", type=int, required=True)
    parser.add_argument("--service", type=int, help="the pid of the service that started it")
    parser.add_argument("--path", action="append", default=[])
    args = parser.parse_args(argv)
    if args.service is not None:
        die_with(args.service)
    adopt_orphans()
    for fd in (args.in_fd, args.out_fd):
        # A command or subprocess of a task must not hold the protocol pipes open.
        os.set_inheritable(fd, False)
    sys.path[:0] = args.path
    serve(args.in_fd, args.out_fd)


if __name__ == "__main__":
    main()
