"""Bulk inserts: rows and shared values (constants) stored as Core stores them, and the keys of
new rows."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine as Database
from sqlalchemy import delete, select

from jobdeck.domain.phases import Phase, Status, TaskState
from jobdeck.store.bulk import BulkInsert
from jobdeck.store.schema import jobs, tasks
from jobdeck.store.statements import HotStatements

WHEN = datetime(2026, 12, 2, 8, 30, 1, 123456, tzinfo=UTC)
LATER = datetime(2027, 1, 2, 9, 0, tzinfo=UTC)
TIMELINE = [["PENDING", "api", "2026-12-02T08:30:01.123456Z"]]

INSERT_JOBS = BulkInsert(
    jobs,
    ["id", "name", "owner", "created_by", "updated_by", "phase", "status", "priority",
     "creation_time", "updated_time", "destruction_time", "parameters", "json_parameters",
     "timeline"],
    returning=["id", "seq"],
)  # fmt: skip
SHARED = {
    "owner": "alice",
    "created_by": "alice",
    "updated_by": "alice",
    "status": Status.WAITING,
    "creation_time": WHEN,
    "updated_time": WHEN,
    "timeline": TIMELINE,
}


def _row(job_id: str, priority: int) -> dict[str, object]:
    return {
        "id": job_id,
        "name": f"job {job_id}",
        "phase": Phase.QUEUED,
        "priority": priority,
        "destruction_time": LATER if priority else WHEN,
        "parameters": {"n": {"type": "int", "value": priority}},
        "json_parameters": None if priority else {"deep": ["x", {"y": None}]},
    }


def test_rows_and_shared_values_are_stored(database: Database) -> None:
    rows = [_row("a", 0), _row("b", 7), _row("c", 3)]
    with database.begin() as conn:
        returned = INSERT_JOBS.execute(conn, rows, SHARED)
        # The shared values may also be given in every row.
        INSERT_JOBS.execute(conn, [{**_row("d", 1), **SHARED}])
    with database.connect() as conn:
        stored = conn.execute(select(jobs).order_by(jobs.c.id)).all()
    assert [row.id for row in stored] == ["a", "b", "c", "d"]
    for row, given in zip(stored, [*rows, _row("d", 1)], strict=True):
        assert (row.owner, row.created_by, row.updated_by) == ("alice", "alice", "alice")
        assert (row.phase, row.status) == (Phase.QUEUED, Status.WAITING)
        assert row.creation_time == row.updated_time == WHEN
        assert row.timeline == TIMELINE
        assert row.name == given["name"]
        assert row.priority == given["priority"]
        assert row.destruction_time == given["destruction_time"]
        assert row.parameters == given["parameters"]
        assert row.json_parameters == given["json_parameters"]
    if database.dialect.name == "postgresql":
        assert returned is not None
        assert sorted(returned) == sorted((row.id, row.seq) for row in stored[:3])
    else:
        assert returned is None


def test_shared_values_of_tasks(database: Database) -> None:
    insert_tasks = BulkInsert(
        tasks, ["job_seq", "task_index", "parameters", "state", "priority", "attempts", "run_after"]
    )
    with database.begin() as conn:
        INSERT_JOBS.execute(conn, [_row("a", 0)], SHARED)
        seq = conn.execute(select(jobs.c.seq)).scalar_one()
        rows = [{"job_seq": seq, "task_index": i, "parameters": {"i": i}} for i in range(3)]
        ready = {"state": TaskState.READY, "priority": 5, "attempts": 0, "run_after": WHEN}
        insert_tasks.execute(conn, rows, ready)
    with database.connect() as conn:
        stored = conn.execute(select(tasks).order_by(tasks.c.task_index)).all()
    assert [(t.task_index, t.parameters, t.state, t.priority) for t in stored] == [
        (i, {"i": i}, "ready", 5) for i in range(3)
    ]
    assert all(t.run_after == WHEN and t.attempts == 0 for t in stored)


def test_new_seqs_are_those_of_the_new_rows(database: Database) -> None:
    statements = HotStatements(database.dialect)
    with database.begin() as conn:
        INSERT_JOBS.execute(conn, [_row(f"old{i}", 0) for i in range(5)], SHARED)
        # The newest rows gone: the next keys are again the largest plus one.
        conn.execute(delete(jobs).where(jobs.c.id.in_(["old3", "old4"])))
        ids = [f"new{i}" for i in range(4)]
        INSERT_JOBS.execute(conn, [_row(job_id, 0) for job_id in ids], SHARED)
        seqs = statements.new_seqs(conn, ids)
        # Ids in another order than inserted: the keys are looked up instead.
        shuffled = statements.new_seqs(conn, [ids[2], ids[0], ids[3], ids[1]])
        stored = {row.id: row.seq for row in conn.execute(select(jobs.c.id, jobs.c.seq))}
        assert statements.new_seqs(conn, []) == []
    assert seqs == [(job_id, stored[job_id]) for job_id in ids]
    assert sorted(shuffled) == sorted(seqs)


def test_values_every_row_shares_are_bound_once(database: Database) -> None:
    insert = BulkInsert(jobs, INSERT_JOBS.columns)
    same = [{**_row(f"s{i}", 2), "parameters": {"n": 1}} for i in range(4)]  # equal, not one dict
    # Equal as Python values, not as JSON: each row keeps its own.
    mixed = [{**_row(f"m{i}", 2), "parameters": {"n": value}} for i, value in enumerate([1, True])]
    mixed[1]["name"] = 'q"uote\\ é😀\u2028 {"x": 1}'  # text that JSON escapes comes back as is
    one = [_row("one", 5)]
    with database.begin() as conn:
        insert.execute(conn, same, SHARED)
        insert.execute(conn, mixed, SHARED)
        insert.execute(conn, one, SHARED)
    with database.connect() as conn:
        stored = {row.id: row for row in conn.execute(select(jobs))}
    for given in [*same, *mixed, *one]:
        row = stored[given["id"]]
        assert (row.name, row.priority, row.phase) == (given["name"], given["priority"], "QUEUED")
        assert row.parameters == given["parameters"]
        assert row.json_parameters == given["json_parameters"]
        assert row.timeline == TIMELINE and row.creation_time == WHEN
    assert stored["m1"].parameters == {"n": True}
    # Only what differs went into the document: the ids, and for `same` and `mixed` the names
    # (and for `mixed` the parameters); a single row sends its first column alone.
    dialect = database.dialect.name
    assert set(insert._statements) == {
        (dialect, ("id", "name")),
        (dialect, ("id", "name", "parameters")),
        (dialect, ("id",)),
    }


def test_a_batch_needs_a_column_in_its_rows(database: Database) -> None:
    insert = BulkInsert(jobs, ["owner"])
    with database.begin() as conn, pytest.raises(ValueError, match="at least one column"):
        insert.execute(conn, [{}], {"owner": "alice"})


def test_equal_but_different_json_documents_stay_apart(database: Database) -> None:
    # 1 == 1.0 == True in Python, not in JSON: a document is the same as another only if it
    # is the same object.
    documents = [[1], [1.0], [True], {"a": 1, "b": 2}, {"b": 2, "a": 1}]
    rows = [{**_row(f"j{i}", 1), "json_parameters": doc} for i, doc in enumerate(documents)]
    same = {"deep": ["x"]}
    rows += [{**_row(f"s{i}", 1), "json_parameters": same, "phase": "QUEUED"} for i in range(3)]
    with database.begin() as conn:
        INSERT_JOBS.execute(conn, rows[:3], SHARED)  # a batch of equal documents
        INSERT_JOBS.execute(conn, rows[3:], SHARED)
    with database.connect() as conn:
        stored = {
            job_id: doc for job_id, doc in conn.execute(select(jobs.c.id, jobs.c.json_parameters))
        }
    assert [type(stored[f"j{i}"][0]) for i in range(3)] == [int, float, bool]
    assert stored["j3"] == stored["j4"] == {"a": 1, "b": 2}
    assert stored["s0"] == stored["s1"] == stored["s2"] == same
