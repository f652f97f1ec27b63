"""RQ's no-op job (enqueued by import path ``rq_tasks.noop``)."""


def noop() -> None:
    """Do nothing."""
