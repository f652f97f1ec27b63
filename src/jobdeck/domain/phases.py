"""Job phases (UWS 1.1), their coarse status (IQM vocabulary) and the allowed transitions.

The canonical phases are UWS 1.1's. Every front door maps them onto its own vocabulary; the
table lives in ``../shared/DESIGN.md`` ("One state machine, several vocabularies").
"""

from enum import StrEnum
from typing import Literal

from jobdeck.domain.errors import InvalidTransition


class Phase(StrEnum):
    """The UWS 1.1 execution phase of a job."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"


class Status(StrEnum):
    """The coarse summary of a phase, in the vocabulary of IQM's job status."""

    WAITING = "waiting"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    """The state of one task of a job."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUS_OF_PHASE: dict[Phase, Status] = {
    Phase.PENDING: Status.WAITING,
    Phase.QUEUED: Status.WAITING,
    Phase.HELD: Status.WAITING,
    Phase.EXECUTING: Status.PROCESSING,
    Phase.SUSPENDED: Status.PROCESSING,
    Phase.COMPLETED: Status.COMPLETED,
    Phase.ERROR: Status.FAILED,
    Phase.UNKNOWN: Status.FAILED,
    Phase.ABORTED: Status.CANCELLED,
}

ACTIVE_PHASES = frozenset(
    {Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED}
)
"""Phases in which a job may still change on its own (what a blocking wait waits on)."""

FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.ARCHIVED})

UNDER_WAY_PHASES = frozenset({Phase.QUEUED, Phase.EXECUTING})
"""Phases a started job leaves without anyone acting on it (what a submission that waits for
its job to run waits on): a PENDING, HELD or SUSPENDED job waits for someone."""

Actor = Literal["client", "service"]

_CLIENT_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.QUEUED, Phase.ABORTED}),
    Phase.QUEUED: frozenset({Phase.ABORTED}),
    Phase.EXECUTING: frozenset({Phase.ABORTED}),
    Phase.HELD: frozenset({Phase.EXECUTING}),
}

_SERVICE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.EXECUTING, Phase.ERROR}),
    Phase.PENDING: frozenset({Phase.ERROR}),
    Phase.EXECUTING: frozenset({Phase.COMPLETED, Phase.SUSPENDED, Phase.HELD, Phase.ERROR}),
    Phase.SUSPENDED: frozenset({Phase.EXECUTING}),
    Phase.COMPLETED: frozenset({Phase.ARCHIVED}),
    Phase.ERROR: frozenset({Phase.ARCHIVED}),
    Phase.ABORTED: frozenset({Phase.ARCHIVED}),
}


def status_of(phase: Phase, *, previous: Status | None = None) -> Status:
    """Return the status a job in ``phase`` has; an ARCHIVED job keeps its ``previous`` one."""
    if phase is Phase.ARCHIVED:
        return previous or Status.COMPLETED
    return STATUS_OF_PHASE[phase]


def can_transition(current: Phase, target: Phase, *, actor: Actor) -> bool:
    """Whether ``actor`` may move a job from ``current`` to ``target`` (UWS 1.1 rules)."""
    table = _CLIENT_TRANSITIONS if actor == "client" else _SERVICE_TRANSITIONS
    return target in table.get(current, frozenset())


def check_transition(current: Phase, target: Phase, *, actor: Actor) -> None:
    """Raise :class:`InvalidTransition` unless ``actor`` may move a job to ``target``."""
    if not can_transition(current, target, actor=actor):
        raise InvalidTransition(
            f"a job in phase {current.value} cannot move to {target.value}",
            phase=current.value,
        )
