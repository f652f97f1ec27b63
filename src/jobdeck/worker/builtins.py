"""The built-in job types (see ``jobdeck.domain.jobtypes.BUILTIN_TYPES``), as python tasks."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobdeck.worker.context import TaskContext, TaskError

TaskFunction = Callable[[dict[str, Any], TaskContext], Any]


def noop(params: dict[str, Any], ctx: TaskContext) -> None:
    """Do nothing (the benchmark's unit of work)."""


def sleep(params: dict[str, Any], ctx: TaskContext) -> None:
    """Sleep ``seconds``; stop early once the task is cancelled."""
    deadline = time.monotonic() + float(params.get("seconds", 1.0))
    while not ctx.cancelled:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        # Short naps, so that a SIGTERM ends the task before the pool has to SIGKILL.
        time.sleep(min(left, 0.1))


def echo(params: dict[str, Any], ctx: TaskContext) -> None:
    """Log ``message`` and write it to the result ``echo.txt``."""
    message = str(params.get("message", ""))
    ctx.logger.info(message)
    Path(ctx.results_dir, "echo.txt").write_text(message + "\n", encoding="utf-8")


def fail(params: dict[str, Any], ctx: TaskContext) -> None:
    """Fail with error code ``code`` and ``message``; transient when ``transient`` is 1."""
    raise TaskError(
        str(params.get("message", "failed on purpose")),
        error_code=str(params.get("code", "failed")),
        transient=bool(int(params.get("transient", 0))),
    )


BUILTINS: dict[str, TaskFunction] = {"noop": noop, "sleep": sleep, "echo": echo, "fail": fail}
"""Built-in functions by the ``target`` of their job type."""

WRITES_NOTHING = frozenset({"noop", "sleep", "fail"})
"""Built-ins that neither print nor write files: the worker skips their results scan."""
