"""Running tasks: a pool of long-lived worker processes and what a task sees inside one.

For authors of python job types: :class:`TaskContext` (the ``ctx`` argument),
:class:`TaskError` and :class:`TransientError`. The pool is
:class:`jobdeck.worker.pool.ProcessPool`; job types come from
:func:`jobdeck.worker.config.load_job_types`. (They are not imported here, to keep a worker
process's start light.)
"""

from jobdeck.worker.context import TaskContext, TaskError, TransientError

__all__ = ["TaskContext", "TaskError", "TransientError"]
