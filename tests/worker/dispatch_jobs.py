"""Python job functions the dispatch tests run inside real worker processes."""

import os
from typing import Any


def count(params: dict[str, Any], ctx: Any) -> dict[str, int]:
    """Report progress up to ``n``, log each step, and return the worker's pid."""
    n = int(params.get("n", 3))
    for i in range(1, n + 1):
        ctx.progress(i, n, label="steps")
        ctx.logger.info("step %d of %d", i, n)
    print("printed line")
    return {"pid": os.getpid(), "steps": n}
