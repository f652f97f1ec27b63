"""A job store inside your program, without a server: the "simple job API".

Jobs live in the same store as the service's — a SQLite file under a data directory, or a
PostgreSQL URL — through the same engine (:func:`jobdeck.service.open_engine`), so a job
created here is visible through the HTTP API of a ``jobdeck serve`` on that store, and the
other way round. Use :class:`JobStore` (a context manager), or the module-level functions,
which act on a default store (:func:`configure` it, or it opens ``$JOBDECK_DATA_DIR`` /
``$JOBDECK_DB``, else ``./.jobdeck``).

States are the simple API's names for the canonical phases (see DESIGN.md)::

    idle      PENDING
    pending   QUEUED, HELD
    running   EXECUTING, SUSPENDED
    finished  COMPLETED, ARCHIVED
    error     ERROR, ABORTED, UNKNOWN

Jobs made here have no job type: nothing runs them but you, and state moves use the engine's
external transitions (idle→pending: run; pending→running: start; running→finished: complete;
idle/pending/running→error: fail). A move of several steps (idle→finished) walks them all, so
the job's timeline stays true; a move the state machine forbids raises
:class:`~jobdeck.domain.errors.InvalidTransition`. A job that has a type (made through the
service) is moved by its workers: here it may only be queued (idle→pending), other moves
raise :class:`~jobdeck.domain.errors.Conflict`. A job's ``request`` is its
``json_parameters``; its ``result`` (``data``) is a JSON result document, ``result.json``.

Reads (``find_job``, ``get_job``) return None for a job that is not there; changes to a job
that is not there raise :class:`~jobdeck.domain.errors.NotFound`.
"""

import atexit
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args

from jobdeck.domain.errors import Conflict, InvalidTransition, NotFound
from jobdeck.domain.phases import ACTIVE_PHASES, Phase
from jobdeck.domain.records import CompleteRequest, FailRequest, JobCreate, JobError, JobRecord
from jobdeck.engine.engine import Engine, ListFilter, Principal
from jobdeck.service import StoreOptions, open_engine

State = Literal["idle", "pending", "running", "finished", "error"]
STATES: tuple[State, ...] = get_args(State)
PHASES_OF_STATE: dict[State, tuple[Phase, ...]] = {
    "idle": (Phase.PENDING,),
    "pending": (Phase.QUEUED, Phase.HELD),
    "running": (Phase.EXECUTING, Phase.SUSPENDED),
    "finished": (Phase.COMPLETED, Phase.ARCHIVED),
    "error": (Phase.ERROR, Phase.ABORTED, Phase.UNKNOWN),
}
STATE_OF_PHASE: dict[Phase, State] = {
    phase: state for state, phases in PHASES_OF_STATE.items() for phase in phases
}
_LADDER: tuple[State, ...] = ("idle", "pending", "running", "finished")
"""The states a job climbs one step at a time; ``error`` is reachable from any active one."""
RESULT_DOCUMENT = "result.json"
EMBEDDED = Principal("embedded", admin=True)
"""Who reads and moves jobs here: every job of the store is visible to the embedded API."""


def check_state(state: str) -> State:
    """``state`` as a :data:`State`; a ValueError names the valid ones."""
    if state not in STATES:
        raise ValueError(f"unknown job state {state!r}; valid states: {', '.join(STATES)}")
    return state


def state_of(job: JobRecord) -> State:
    """The simple API's state of a job."""
    return STATE_OF_PHASE[job.phase]


class JobStore:
    """Jobs in a store, in-process: the simple job API over the jobdeck engine.

    ``data_dir`` holds the SQLite database (and result files); with ``db`` (a PostgreSQL
    URL) the jobs live there instead, and result files still go under ``data_dir/results``
    — give a service on the same store the same data directory to serve them.
    """

    def __init__(self, data_dir: Path | str = Path(".jobdeck"), db: str | None = None) -> None:
        self.options = StoreOptions(data_dir=Path(data_dir), db=db)
        self.engine: Engine = open_engine(self.options)
        self.engine.start()
        self._closed = False

    def close(self) -> None:
        """Finish pending writes and close the store (again is harmless)."""
        if not self._closed:
            self._closed = True
            self.engine.close()
            self.engine.db.dispose()

    def __enter__(self) -> "JobStore":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ creating, deleting

    def create_job(self, name: str, user: str, request: Any = None, result: Any = None) -> str:
        """Create an idle job owned by ``user``; returns its id.

        ``request`` becomes the job's JSON parameters; a ``result`` that is not None is stored
        as its JSON result document.
        """
        if result is not None:
            json.dumps(result)  # one JSON cannot hold is refused before the job is made
        created = self.engine.create_jobs(
            Principal(user), [JobCreate(name=name, json_parameters=request)]
        )
        job_id = created.jobs[0].id
        if result is not None:
            self.engine.put_result_document(EMBEDDED, job_id, result, name=RESULT_DOCUMENT)
        return job_id

    def delete_job(self, job_id: str) -> None:
        """Delete a job with its record and results."""
        self.engine.delete_job(EMBEDDED, job_id)

    # ------------------------------------------------------------------ reading

    def find_job(self, job_id: str) -> tuple[JobRecord, State] | tuple[None, None]:
        """The job and its state, or ``(None, None)`` if there is no such job."""
        try:
            job = self.engine.get_job(EMBEDDED, job_id)
        except NotFound:
            return None, None
        return job, state_of(job)

    def get_job(self, job_id: str, state: str | None = None) -> JobRecord | None:
        """The job, or None if there is none — or, given ``state``, if it is in another."""
        wanted = None if state is None else check_state(state)
        job, current = self.find_job(job_id)
        if job is None or (wanted is not None and current != wanted):
            return None
        return job

    def get_jobs(self, state: str | None = None) -> list[JobRecord]:
        """Every job (in ``state``, if given), oldest first."""
        phases = () if state is None else PHASES_OF_STATE[check_state(state)]
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = self.engine.list_jobs(
                EMBEDDED, ListFilter(phases=phases), cursor=cursor, limit=1000
            )
            ids.extend(job.id for job in page.jobs)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        found = [self.get_job(job_id) for job_id in reversed(ids)]
        return [job for job in found if job is not None]  # deleted meanwhile: gone

    def get_idle_jobs(self) -> list[JobRecord]:
        """Jobs not yet asked to run (PENDING), oldest first."""
        return self.get_jobs("idle")

    def get_pending_jobs(self) -> list[JobRecord]:
        """Jobs waiting to run (QUEUED, HELD), oldest first."""
        return self.get_jobs("pending")

    def get_running_jobs(self) -> list[JobRecord]:
        """Jobs running (EXECUTING, SUSPENDED), oldest first."""
        return self.get_jobs("running")

    def get_finished_jobs(self) -> list[JobRecord]:
        """Jobs finished well (COMPLETED, ARCHIVED), oldest first."""
        return self.get_jobs("finished")

    def get_error_jobs(self) -> list[JobRecord]:
        """Jobs that failed or were aborted (ERROR, ABORTED, UNKNOWN), oldest first."""
        return self.get_jobs("error")

    def get_job_results(self, job_id: str) -> Any:
        """The job's JSON result document, or None if it has none."""
        return self.engine.read_result_document(EMBEDDED, job_id, name=RESULT_DOCUMENT)

    @staticmethod
    def get_job_schema() -> dict[str, Any]:
        """The JSON Schema of a job record (what ``get_job`` returns, as JSON)."""
        return JobRecord.model_json_schema()

    # ------------------------------------------------------------------ changing

    def update_job_result(self, job_id: str, data: Any) -> JobRecord:
        """Replace the job's JSON result document, in whatever state it is."""
        return self.engine.put_result_document(EMBEDDED, job_id, data, name=RESULT_DOCUMENT)

    def set_job(
        self, job_id: str, data: Any, state: str, *, message: str = "set to error"
    ) -> JobRecord:
        """Move the job to ``state`` (walking every step between) and, unless ``data`` is
        None, store it as the job's result document. Moving to ``error`` records ``message``
        as the job's error. Returns the job's record."""
        target = check_state(state)
        job = self.engine.get_job(EMBEDDED, job_id)
        steps = self._path(job, target, message)
        if data is not None:
            job = self.engine.put_result_document(EMBEDDED, job_id, data, name=RESULT_DOCUMENT)
        for step in steps:
            job = step(job)
        return job

    def set_job_pending(self, job_id: str, data: Any = None) -> JobRecord:
        """Move the job to pending (QUEUED)."""
        return self.set_job(job_id, data, "pending")

    def set_job_running(self, job_id: str, data: Any = None) -> JobRecord:
        """Move the job to running (EXECUTING)."""
        return self.set_job(job_id, data, "running")

    def set_job_finished(self, job_id: str, data: Any = None) -> JobRecord:
        """Move the job to finished (COMPLETED)."""
        return self.set_job(job_id, data, "finished")

    def set_job_error(self, job_id: str, data: Any = None, *, message: str = "failed") -> JobRecord:
        """Move the job to error (ERROR), recording ``message`` as its error."""
        return self.set_job(job_id, data, "error", message=message)

    def _path(
        self, job: JobRecord, target: State, message: str
    ) -> list[Callable[[JobRecord], JobRecord]]:
        """The engine calls that take ``job`` to ``target``; raises if the move is forbidden."""
        current = state_of(job)
        if current == target:
            return []
        if job.job_type is not None and not (current == "idle" and target == "pending"):
            raise Conflict(
                f"job {job.id} has type {job.job_type!r}: its workers move it, not this API "
                "(which may only queue it: idle → pending)"
            )
        engine = self.engine
        if target == "error":
            if job.phase not in ACTIVE_PHASES - {Phase.HELD, Phase.SUSPENDED}:
                raise _forbidden(job, current, target)
            request = FailRequest(errors=[JobError(source="embedded", message=message)])
            return [lambda j: engine.fail_external(EMBEDDED, j.id, request)]
        if current == "error" or _LADDER.index(target) < _LADDER.index(current):
            raise _forbidden(job, current, target)

        def run(j: JobRecord) -> JobRecord:
            return engine.run(EMBEDDED, j.id)

        def start(j: JobRecord) -> JobRecord:
            if j.phase is Phase.HELD:
                return engine.run(EMBEDDED, j.id)  # HELD → EXECUTING is the client's run
            return engine.start_external(EMBEDDED, j.id, None)

        def complete(j: JobRecord) -> JobRecord:
            return engine.complete_external(EMBEDDED, j.id, CompleteRequest())

        step_from: dict[State, Callable[[JobRecord], JobRecord]] = {
            "idle": run,
            "pending": start,
            "running": complete,
        }
        climb = _LADDER[_LADDER.index(current) : _LADDER.index(target)]
        return [step_from[state] for state in climb]


def _forbidden(job: JobRecord, current: State, target: State) -> InvalidTransition:
    return InvalidTransition(
        f"job {job.id} is {current} ({job.phase.value}) and cannot move to {target}",
        phase=job.phase.value,
    )


# ---------------------------------------------------------------------- the default store

_default: JobStore | None = None
_default_lock = threading.Lock()


def _open(data_dir: Path | str | None, db: str | None) -> JobStore:
    return JobStore(
        data_dir or os.environ.get("JOBDECK_DATA_DIR") or Path(".jobdeck"),
        db or os.environ.get("JOBDECK_DB") or None,
    )


def configure(data_dir: Path | str | None = None, db: str | None = None) -> JobStore:
    """Open the store the module-level functions use (closing one opened before).

    Without arguments: ``$JOBDECK_DATA_DIR`` (else ``./.jobdeck``) and ``$JOBDECK_DB``.
    """
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = _open(data_dir, db)
        return _default


def default_store() -> JobStore:
    """The store of the module-level functions, opened on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = _open(None, None)
        return _default


def close() -> None:
    """Close the default store (it reopens on next use)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None


atexit.register(close)


def create_job(name: str, user: str, request: Any = None, result: Any = None) -> str:
    """Create an idle job in the default store; see :meth:`JobStore.create_job`."""
    return default_store().create_job(name, user, request, result)


def delete_job(job_id: str) -> None:
    """Delete a job; see :meth:`JobStore.delete_job`."""
    default_store().delete_job(job_id)


def find_job(job_id: str) -> tuple[JobRecord, State] | tuple[None, None]:
    """The job and its state, or ``(None, None)``; see :meth:`JobStore.find_job`."""
    return default_store().find_job(job_id)


def get_job(job_id: str, state: str | None = None) -> JobRecord | None:
    """The job (if in ``state``); see :meth:`JobStore.get_job`."""
    return default_store().get_job(job_id, state)


def get_jobs(state: str | None = None) -> list[JobRecord]:
    """Every job (in ``state``), oldest first; see :meth:`JobStore.get_jobs`."""
    return default_store().get_jobs(state)


def get_pending_jobs() -> list[JobRecord]:
    """Pending jobs; see :meth:`JobStore.get_pending_jobs`."""
    return default_store().get_pending_jobs()


def get_running_jobs() -> list[JobRecord]:
    """Running jobs; see :meth:`JobStore.get_running_jobs`."""
    return default_store().get_running_jobs()


def get_finished_jobs() -> list[JobRecord]:
    """Finished jobs; see :meth:`JobStore.get_finished_jobs`."""
    return default_store().get_finished_jobs()


def get_job_results(job_id: str) -> Any:
    """The job's result document; see :meth:`JobStore.get_job_results`."""
    return default_store().get_job_results(job_id)


def get_job_schema() -> dict[str, Any]:
    """The JSON Schema of a job record."""
    return JobStore.get_job_schema()


def set_job(job_id: str, data: Any, state: str) -> JobRecord:
    """Move a job to ``state`` with ``data``; see :meth:`JobStore.set_job`."""
    return default_store().set_job(job_id, data, state)


def set_job_pending(job_id: str, data: Any = None) -> JobRecord:
    """Move a job to pending; see :meth:`JobStore.set_job_pending`."""
    return default_store().set_job_pending(job_id, data)


def set_job_running(job_id: str, data: Any = None) -> JobRecord:
    """Move a job to running; see :meth:`JobStore.set_job_running`."""
    return default_store().set_job_running(job_id, data)


def set_job_finished(job_id: str, data: Any = None) -> JobRecord:
    """Move a job to finished; see :meth:`JobStore.set_job_finished`."""
    return default_store().set_job_finished(job_id, data)


def update_job_result(job_id: str, data: Any) -> JobRecord:
    """Replace a job's result document; see :meth:`JobStore.update_job_result`."""
    return default_store().update_job_result(job_id, data)
