"""What a python task gets besides its parameters, and the errors it may raise.

A python job type's function is called as ``function(params, ctx)``: ``params`` maps each
parameter name to its value (job and task parameters merged), ``ctx`` is a
:class:`TaskContext`. What it returns, unless ``None``, is written as JSON to ``result.json``
in its results directory; every file it leaves there becomes a result of the job.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any


class TaskError(Exception):
    """Fail the task with a chosen error code (``detail`` defaults to the traceback)."""

    def __init__(
        self,
        message: str,
        *,
        error_code: str = "task_error",
        transient: bool = False,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.transient = transient
        self.detail = detail


class TransientError(TaskError):
    """Fail the task with an error a retry may not meet (a network glitch, a busy resource).

    The job's ``max_retries_per_task`` decides whether it runs again.
    """

    def __init__(
        self, message: str, *, error_code: str = "transient", detail: str | None = None
    ) -> None:
        super().__init__(message, error_code=error_code, transient=True, detail=detail)


class CancelFlag:
    """Set (from a signal handler) when the worker process is asked to stop."""

    __slots__ = ("is_set",)

    def __init__(self) -> None:
        self.is_set = False


class TaskContext:
    """The running task's view of the worker: its identity, log, progress and results."""

    def __init__(
        self,
        *,
        task_id: int,
        job_id: str,
        task_index: int,
        attempt: int,
        results_dir: Path,
        json_parameters: Any,
        logger: logging.Logger,
        report_progress: Callable[[str, int, int], None],
        cancel_flag: CancelFlag,
    ) -> None:
        self.task_id = task_id
        """The pool's id of this task (the engine's task sequence number)."""
        self.job_id = job_id
        self.task_index = task_index
        """The task's index within its job, from 0."""
        self.attempt = attempt
        """How often this task has been started, this time included."""
        self.results_dir = results_dir
        """Where to write result files; it exists when the task starts."""
        self.json_parameters = json_parameters
        """The job's opaque JSON parameters."""
        self.logger = logger
        """Records logged here become lines of the job's log."""
        self._report_progress = report_progress
        self._cancel_flag = cancel_flag

    @property
    def cancelled(self) -> bool:
        """True once the task is being aborted or timed out: stop soon, it will be killed."""
        return self._cancel_flag.is_set

    def progress(self, value: int, max_value: int, label: str = "progress") -> None:
        """Report ``value`` of ``max_value`` done on the counter ``label``.

        Cheap to call often: updates not yet sent are replaced by the newest.
        """
        self._report_progress(str(label), int(value), int(max_value))
