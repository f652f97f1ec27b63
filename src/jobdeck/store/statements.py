"""The hot paths' statements (submit, claim, start, finish) as SQL text, once per dialect.

Run through SQLAlchemy Core, these statements cost three to four times the database's own work:
building them, their cache keys, expanding ``IN`` lists element by element and processing
every column of every returned row. Here each is plain SQL run by the driver, and a list of
keys travels as one parameter: a JSON array read by ``json_each`` on SQLite, an array literal
cast by the statement for ``= ANY`` on PostgreSQL. The tables and indexes are those of
:mod:`jobdeck.store.schema`; the literal predicates (``state = 'ready'``) are the partial
indexes' own, so that SQLite uses them.
Everything else the engine writes still goes through SQLAlchemy Core.
"""

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from jobdeck.domain.phases import Phase, Status, TaskState, status_of
from jobdeck.store.driver import run
from jobdeck.store.schema import UtcDateTime, timeline_entry

# On PostgreSQL the picked keys are an array (computed once, an InitPlan), which it looks up
# by key: with ``IN (subquery)`` it hashed them and scanned the whole table to match them, and
# joined the claimed tasks to their jobs by another whole scan.
_CLAIM = """
UPDATE tasks SET state = '{running}', worker_id = :worker_id, lease_expires = :lease_expires,
    attempts = attempts + 1, started_at = :now
WHERE seq {picked_open}
    SELECT seq FROM tasks WHERE state = '{ready}' AND run_after <= :now
    ORDER BY priority DESC, seq LIMIT :limit {lock}
{picked_close}
RETURNING seq, job_seq, task_index, CAST(parameters AS TEXT), attempts, priority
"""

# JSON as text on both stores: the claim decodes each distinct text once (a submission's jobs
# share theirs), where psycopg would decode every row's.
_JOB_COLUMNS = (
    "jobs.id, jobs.job_type, CAST(jobs.parameters AS TEXT), CAST(jobs.json_parameters AS TEXT),"
    " jobs.execution_duration, jobs.task_count"
)

# PostgreSQL reads the claimed tasks' jobs in the same statement (a round trip fewer per
# claim); SQLite, which takes no UPDATE in a WITH, reads them after (_JOBS_BY_SEQ). A task
# whose job is gone (deleted outside the engine: tasks have no foreign key) comes back with
# NULLs for its job, for the engine to delete.
_CLAIM_WITH_JOBS = f"""
WITH claimed AS ({_CLAIM})
SELECT claimed.*, {_JOB_COLUMNS}
FROM claimed LEFT JOIN jobs ON jobs.seq = claimed.job_seq
"""
_NO_JOB = (None,) * 6

# A job's EXECUTING entry and start time are when its task began, as the worker reported
# (:started, one for the statement's jobs: see HotStatements.start_jobs).
_START_JOBS = """
UPDATE jobs SET phase = '{executing}', status = '{processing}', updated_time = :now,
    start_time = :started, timeline = {append_started}
WHERE seq {in_seqs} AND {phase} = '{queued}'
RETURNING seq, id
"""

_JOBS_BY_SEQ = f"SELECT seq, {_JOB_COLUMNS} FROM jobs WHERE seq {{in_seqs}}"

_SEQS_BY_ID = "SELECT id, seq FROM jobs WHERE id {in_ids}"

_SEQ_BY_ID = "SELECT seq FROM jobs WHERE id = :id"

_SUCCEED_TASKS = """
UPDATE tasks SET state = '{succeeded}', ended_at = :now, lease_expires = NULL
WHERE seq {in_seqs} AND {state} = '{running}' AND worker_id = :worker_id
RETURNING job_seq
"""

# Counters and completion in one UPDATE: SET expressions read the old row, so "all done" is
# judged on the counts this very statement writes. A job still QUEUED (its task started and
# finished before the worker reported the start) gets its EXECUTING entry here too, dated
# when its task began (:started, as in _START_JOBS).
_ALL_DONE = (
    "phase IN ('{queued}', '{executing}')"
    " AND tasks_succeeded + tasks_failed + :good + :bad >= task_count"
    " AND tasks_failed + :bad <= max_failed_tasks"
)
_COUNT_FINISHED = f"""
UPDATE jobs SET tasks_succeeded = tasks_succeeded + :good, tasks_failed = tasks_failed + :bad,
    updated_time = :now,
    start_time = CASE WHEN phase = '{{queued}}' THEN :started ELSE start_time END,
    phase = CASE WHEN {_ALL_DONE} THEN '{{completed}}'
        WHEN phase = '{{queued}}' THEN '{{executing}}' ELSE phase END,
    status = CASE WHEN {_ALL_DONE} THEN '{{completed_status}}'
        WHEN phase = '{{queued}}' THEN '{{processing}}' ELSE status END,
    end_time = CASE WHEN {_ALL_DONE} THEN :now ELSE end_time END,
    timeline = CASE WHEN phase = '{{queued}}' AND {_ALL_DONE} THEN {{append_both}}
        WHEN phase = '{{queued}}' THEN {{append_started}}
        WHEN {_ALL_DONE} THEN {{append}} ELSE timeline END
WHERE seq {{in_seqs}}
RETURNING id, phase
"""

# New jobs join their owner's count of their phase: in place on SQLite; on PostgreSQL as a
# row of changes, as its triggers add them (see migration 0002).
_COUNT_NEW = {
    "sqlite": "INSERT INTO job_counts (owner, phase, n) VALUES (:owner, :phase, :n)"
    " ON CONFLICT (owner, phase) DO UPDATE SET n = n + excluded.n",
    "postgresql": "INSERT INTO job_counts (owner, phase, n) VALUES (:owner, :phase, :n)",
}

# The guards on phase and state are written on PostgreSQL so that they cannot match the
# predicate of a partial index (``ix_jobs_queue``, ``ix_tasks_lease``): with statistics that
# predate a large submission, its planner otherwise reads every queued job through that index
# to find the hundred it was given by key.
_DIALECT = {
    "sqlite": {
        "in_seqs": "IN (SELECT value FROM json_each(:seqs))",
        "in_ids": "IN (SELECT value FROM json_each(:ids))",
        "phase": "phase",
        "state": "state",
        "append": "json_insert(timeline, '$[#]', json_array(:t_status, :t_source, :t_stamp))",
        "append_started": "json_insert(timeline, '$[#]',"
        " json_array(:x_status, :x_source, :x_stamp))",
        "append_both": "json_insert(timeline, '$[#]', json_array(:x_status, :x_source, :x_stamp),"
        " '$[#]', json_array(:t_status, :t_source, :t_stamp))",
        "lock": "",
        "picked_open": "IN (",
        "picked_close": ")",
    },
    "postgresql": {
        "in_seqs": "= ANY(CAST(:seqs AS bigint[]))",
        "in_ids": "= ANY(:ids)",
        "phase": "(phase || '')",
        "state": "(state || '')",
        "append": "timeline || jsonb_build_array(jsonb_build_array("
        "CAST(:t_status AS text), CAST(:t_source AS text), CAST(:t_stamp AS text)))",
        "append_started": "timeline || jsonb_build_array(jsonb_build_array("
        "CAST(:x_status AS text), CAST(:x_source AS text), CAST(:x_stamp AS text)))",
        "append_both": "timeline || jsonb_build_array(jsonb_build_array("
        "CAST(:x_status AS text), CAST(:x_source AS text), CAST(:x_stamp AS text)),"
        " jsonb_build_array("
        "CAST(:t_status AS text), CAST(:t_source AS text), CAST(:t_stamp AS text)))",
        "lock": "FOR UPDATE SKIP LOCKED",
        "picked_open": "= ANY(ARRAY(",
        "picked_close": "))",
    },
}
_VALUES = {
    "running": TaskState.RUNNING.value,
    "ready": TaskState.READY.value,
    "succeeded": TaskState.SUCCEEDED.value,
    "executing": Phase.EXECUTING.value,
    "processing": status_of(Phase.EXECUTING).value,
    "queued": Phase.QUEUED.value,
    "completed": Phase.COMPLETED.value,
    "completed_status": Status.COMPLETED.value,
}
_NAMED = re.compile(r"(?<![:\w]):(\w+)")
_UTC = UtcDateTime()


class HotStatements:
    """The hot paths' statements for one dialect (SQLite's or PostgreSQL's)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sqlite = dialect.name == "sqlite"
        pieces = {**_DIALECT[dialect.name], **_VALUES}

        def sql(template: str) -> str:
            text = template.format(**pieces).strip()
            # SQLite's driver takes :name; psycopg takes %(name)s.
            return text if self._sqlite else _NAMED.sub(r"%(\1)s", text)

        self._claim = sql(_CLAIM if self._sqlite else _CLAIM_WITH_JOBS)
        self._start_jobs = sql(_START_JOBS)
        self._jobs_by_seq = sql(_JOBS_BY_SEQ)
        self._seqs_by_id = sql(_SEQS_BY_ID)
        self._seq_by_id = sql(_SEQ_BY_ID)
        self._succeed_tasks = sql(_SUCCEED_TASKS)
        self._count_finished = sql(_COUNT_FINISHED)
        self._count_new = sql(_COUNT_NEW[dialect.name])

    # -- values as each driver takes and returns them

    def _time(self, value: datetime) -> Any:
        """A time as the ``UtcDateTime`` columns store it."""
        return _UTC.process_bind_param(value, self._dialect)

    def _ids(self, ids: Sequence[str]) -> Any:
        return json.dumps(list(ids)) if self._sqlite else list(ids)

    def _seqs(self, seqs: Sequence[int]) -> str:
        """Keys as one text: a JSON array for SQLite, an array literal for PostgreSQL (cast by
        the statement), which psycopg would otherwise adapt element by element in Python:
        about 1.5 µs a key here, a third of that as text."""
        return json.dumps(list(seqs)) if self._sqlite else "{" + ",".join(map(str, seqs)) + "}"

    def _started(self, source: str, started: datetime) -> dict[str, Any]:
        """The values of a job's move to EXECUTING: its entry (``x_``), its start time."""
        entry = self._entry(Phase.EXECUTING.value, source, started, prefix="x")
        return {**entry, "started": self._time(started)}

    @staticmethod
    def _entry(status: str, source: str, at: datetime, *, prefix: str = "t") -> dict[str, str]:
        """A timeline entry's values, named ``{prefix}_status``, ``_source`` and ``_stamp``."""
        values = timeline_entry(status, source, at)
        names = (f"{prefix}_status", f"{prefix}_source", f"{prefix}_stamp")
        return dict(zip(names, values, strict=True))

    # -- the statements

    def new_seqs(self, conn: Connection, ids: Sequence[str]) -> list[tuple[str, int]]:
        """``(id, seq)`` of the jobs with these ids, which ``conn`` has just inserted, one
        after the other in this order.

        SQLite gives a new row the largest key so far plus one (a random free one only once
        the largest possible key is taken): in the one writer's transaction the keys of rows
        inserted one after the other run up to the last one inserted. They are read off
        that, with one look-up to check the first, instead of a look-up of every id.
        Elsewhere, and should the check fail, the ids are looked up.
        """
        if not ids:
            return []
        if self._sqlite:
            last = run(conn, "SELECT last_insert_rowid()", ())[0][0]
            first = last - len(ids) + 1
            if run(conn, self._seq_by_id, {"id": ids[0]}) == [(first,)]:
                return list(zip(ids, range(first, last + 1), strict=True))
        rows = run(conn, self._seqs_by_id, {"ids": self._ids(ids)})
        return [(job_id, seq) for job_id, seq in rows]

    def count_new(self, conn: Connection, owner: str, phases: Mapping[Phase, int]) -> None:
        """Add new jobs of ``owner`` (so many of each phase) to the job counts: the engine
        counts the jobs it inserts; triggers count the changes after (migration 0002)."""
        for phase, n in phases.items():
            params = {"owner": owner, "phase": phase.value, "n": n}
            run(conn, self._count_new, params, prepare=True)  # a plain INSERT: as BulkInsert

    def claim(
        self,
        conn: Connection,
        *,
        worker_id: str,
        now: datetime,
        lease_expires: datetime,
        limit: int,
    ) -> list[Any]:
        """Claim up to ``limit`` ready tasks (the first in queue order); rows of ``(seq,
        job_seq, task_index, parameters, attempts, priority)`` of each task followed by
        ``(id, job_type, parameters, json_parameters, execution_duration, task_count)`` of its
        job (Nones where the job is gone), in no particular order. The parameters are JSON
        text, on both stores."""
        params = {
            "worker_id": worker_id,
            "lease_expires": self._time(lease_expires),
            "now": self._time(now),
            "limit": limit,
        }
        claimed = run(conn, self._claim, params)
        if not self._sqlite or not claimed:
            return claimed
        seqs = sorted({row[1] for row in claimed})
        jobs = {row[0]: row[1:] for row in run(conn, self._jobs_by_seq, {"seqs": self._seqs(seqs)})}
        return [(*row, *jobs.get(row[1], _NO_JOB)) for row in claimed]

    def start_jobs(
        self,
        conn: Connection,
        seqs: Sequence[int],
        *,
        source: str,
        started: datetime,
        now: datetime,
    ) -> list[Any]:
        """QUEUED → EXECUTING with its timeline entry dated ``started``, for those of these
        jobs still QUEUED; rows of ``(seq, id)`` of the jobs moved."""
        params = {
            "seqs": self._seqs(seqs),
            "now": self._time(now),
            **self._started(source, started),
        }
        return run(conn, self._start_jobs, params)

    def succeed_tasks(
        self, conn: Connection, seqs: Sequence[int], *, worker_id: str, now: datetime
    ) -> list[int]:
        """Mark these tasks succeeded where they still run for ``worker_id``; their job seqs
        (one per task marked)."""
        params = {"seqs": self._seqs(seqs), "worker_id": worker_id, "now": self._time(now)}
        return [row[0] for row in run(conn, self._succeed_tasks, params)]

    def count_finished(
        self,
        conn: Connection,
        seqs: Sequence[int],
        *,
        good: int,
        bad: int,
        source: str,
        started_by: str,
        started: datetime,
        now: datetime,
    ) -> list[Any]:
        """Add ``good`` succeeded and ``bad`` failed tasks to each of these jobs; a job whose
        tasks are all done (within its failure budget) completes, with ``source``. A job
        still QUEUED moves to EXECUTING first, with ``started_by`` (the worker), dated
        ``started``. Rows of ``(id, phase)``."""
        params = {
            "seqs": self._seqs(seqs),
            "good": good,
            "bad": bad,
            "now": self._time(now),
            **self._started(started_by, started),
            **self._entry(Phase.COMPLETED.value, source, now),
        }
        return run(conn, self._count_finished, params)
