"""Python job functions the dispatch tests run inside real worker processes."""

import mimetypes
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from jobdeck.worker.context import TaskError


def count(params: dict[str, Any], ctx: Any) -> dict[str, int]:
    """Report progress up to ``n``, log each step, and return the worker's pid."""
    n = int(params.get("n", 3))
    for i in range(1, n + 1):
        ctx.progress(i, n, label="steps")
        ctx.logger.info("step %d of %d", i, n)
    print("printed line")
    return {"pid": os.getpid(), "steps": n}


def status_error(params: dict[str, Any], ctx: Any) -> None:
    """Fail with an HTTP status (an int) as its error code, as a caller of a web service
    might."""
    raise TaskError("the upstream service refused", error_code=503, detail=503)


def long_code_error(params: dict[str, Any], ctx: Any) -> None:
    """Fail with an error code longer than a store keeps."""
    raise TaskError("too long", error_code="c" * 100)


def lock_error(params: dict[str, Any], ctx: Any) -> None:
    """Fail with an error code that cannot be pickled."""
    raise TaskError("locked out", error_code=threading.Lock())


def odd_file_name(params: dict[str, Any], ctx: Any) -> None:
    """Leave a result whose file name is not UTF-8, and log that name."""
    name = os.fsdecode(b"caf\xe9.txt")
    (ctx.results_dir / name).write_text("latin-1\n")
    (ctx.results_dir / "plain.txt").write_text("plain\n")
    ctx.logger.info("wrote %s", name)


def deep_result(params: dict[str, Any], ctx: Any) -> None:
    """Leave a result whose path is longer than a result id may be, and a short one."""
    folder = ctx.results_dir
    for _ in range(6):
        folder = folder / ("d" * 100)
    folder.mkdir(parents=True)
    (folder / "deep.txt").write_text("deep\n")
    (ctx.results_dir / "plain.txt").write_text("plain\n")


def long_mime_type(params: dict[str, Any], ctx: Any) -> None:
    """Leave a result whose MIME type (a name this process was taught) is longer than a
    store keeps."""
    mimetypes.add_type("application/" + "x" * 200, ".weird")
    (ctx.results_dir / "a.weird").write_text("weird\n")


def spew(params: dict[str, Any], ctx: Any) -> None:
    """Print the numbers 1 to 5000, a line each."""
    for n in range(1, 5001):
        print(n)


def leaves_subprocess(params: dict[str, Any], ctx: Any) -> None:
    """Start a long sleep and return without waiting for it."""
    sleeper = subprocess.Popen(["sleep", "300"])
    Path(params["pidfile"]).write_text(str(sleeper.pid))
