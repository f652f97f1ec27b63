"""Python job functions the pool tests run inside real worker processes."""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobdeck.worker.context import TaskContext, TransientError


def report(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Write to every channel a task has: prints, logs, progress, files, a return value."""
    print("printed line")
    print("printed to stderr", file=sys.stderr)
    # Bypasses sys.stdout: only a capture of file descriptor 1 sees it.
    subprocess.run(["echo", "from a subprocess"], check=True)
    ctx.logger.info("step %d of %d", 1, 2)
    ctx.logger.warning("a warning")
    logging.getLogger("some.library").warning("a library warning")
    for i in range(1, 101):
        ctx.progress(i, 100, label="items")
    (ctx.results_dir / "table.csv").write_text("a,b\n1,2\n")
    (ctx.results_dir / "sub").mkdir(exist_ok=True)
    (ctx.results_dir / "sub" / "notes.txt").write_text("notes\n")
    return {
        "pid": os.getpid(),
        "params": params,
        "json": ctx.json_parameters,
        "job_id": ctx.job_id,
        "task_index": ctx.task_index,
        "attempt": ctx.attempt,
        "cancelled": ctx.cancelled,
    }


def meddle(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Change its parameters and its JSON document in place, and return what it was given."""
    given = {"params": dict(params), "json": json.loads(json.dumps(ctx.json_parameters))}
    params["n"] = -1
    ctx.json_parameters["items"].append("meddled")
    return given


def pid(params: dict[str, Any], ctx: TaskContext) -> int:
    """Return the worker process's pid."""
    return os.getpid()


def boom(params: dict[str, Any], ctx: TaskContext) -> None:
    """Fail with an ordinary exception."""
    raise ValueError(f"bad value {params.get('value')!r}")


def flaky(params: dict[str, Any], ctx: TaskContext) -> None:
    """Fail with an error worth a retry."""
    raise TransientError("the service is busy", error_code="busy")


def unserialisable(params: dict[str, Any], ctx: TaskContext) -> object:
    """Return something JSON cannot hold."""
    return {"when": object()}


def crash(params: dict[str, Any], ctx: TaskContext) -> None:
    """Kill the worker process running this task."""
    os.kill(os.getpid(), signal.SIGKILL)


def watch_cancel(params: dict[str, Any], ctx: TaskContext) -> None:
    """Wait to be cancelled; leave a mark in ``marker`` when ``ctx.cancelled`` turns true."""
    Path(params["marker"]).with_suffix(".started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ctx.cancelled:
            Path(params["marker"]).write_text("cancelled")
            return
        time.sleep(0.01)


def nap(params: dict[str, Any], ctx: TaskContext) -> None:
    """Say so, then sleep a minute without ever looking at ``ctx.cancelled``."""
    print(f"napping in {os.getpid()}")
    time.sleep(60)


def interrupt(params: dict[str, Any], ctx: TaskContext) -> None:
    """Raise what is not an Exception."""
    raise KeyboardInterrupt


class Broken(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def broken_str(params: dict[str, Any], ctx: TaskContext) -> None:
    """Raise an exception that cannot say what it is."""
    raise Broken


def spoil_output(params: dict[str, Any], ctx: TaskContext) -> str:
    """Close the process's standard output and error, and the streams over them."""
    sys.stdout.close()
    sys.stderr = io.StringIO()
    os.close(1)
    os.close(2)
    return "spoiled"


def speak(params: dict[str, Any], ctx: TaskContext) -> str:
    """Write to standard output and error, through Python and straight to the descriptors."""
    print("to stdout")
    print("to stderr", file=sys.stderr)
    os.write(1, b"raw\n")
    return "spoke"
