"""SQL on the driver's cursor: the same rows, values and errors as through SQLAlchemy Core."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine as Database
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from jobdeck.domain.errors import ValidationFailed
from jobdeck.store.database import database_url, open_database, upgrade
from jobdeck.store.driver import Prepared, run
from jobdeck.store.schema import jobs

WHEN = datetime(2026, 12, 2, 8, 30, 1, 123456, tzinfo=UTC)


def _job(job_id: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": job_id,
        "name": "n",
        "owner": "alice",
        "created_by": "alice",
        "updated_by": "alice",
        "phase": "QUEUED",
        "status": "WAITING",
        "priority": 0,
        "creation_time": WHEN,
        "updated_time": WHEN,
        "destruction_time": WHEN,
        "execution_duration": 0,
        "parameters": {"n": {"type": "int", "value": 3}},
        "timeline": [["PENDING", "api", "2026-12-02T08:30:01.123456Z"]],
        "max_retries_per_task": 0,
        "max_failed_tasks": 0,
        "task_count": 1,
    }
    row.update(values)
    return row


def test_prepared_rows_match_core(database: Database) -> None:
    with database.begin() as conn:
        conn.execute(insert(jobs), [_job("a"), _job("b", priority=5)])
    statement = (
        select(jobs)
        .where(jobs.c.owner == bindparam("owner"), jobs.c.priority >= bindparam("least"))
        .where(jobs.c.creation_time <= bindparam("until"))  # a bound time, converted
        .order_by(jobs.c.seq)
        .limit(bindparam("most"))
    )
    prepared = Prepared(statement)
    params = {"owner": "alice", "least": 0, "most": 10, "until": WHEN}
    with database.connect() as conn:
        core = conn.execute(statement, params).all()
        mine = prepared.rows(conn, params)
        assert [tuple(row) for row in mine] == [tuple(row) for row in core]
        first = prepared.first(conn, {**params, "least": 1})
        assert prepared.first(conn, {**params, "owner": "bob"}) is None
    assert first.id == "b"
    assert first.creation_time == WHEN  # a time, zone included
    assert first.parameters == {"n": {"type": "int", "value": 3}}  # JSON, decoded
    assert first.timeline == [["PENDING", "api", "2026-12-02T08:30:01.123456Z"]]


def test_failures_are_sqlalchemy_errors(database: Database) -> None:
    with database.begin() as conn:
        conn.execute(insert(jobs), [_job("a")])
    sql = "INSERT INTO jobs (id) VALUES (:id)" if database.dialect.name == "sqlite" else None
    with database.connect() as conn:
        with pytest.raises(IntegrityError):
            run(conn, sql or "INSERT INTO jobs (id) VALUES (%(id)s)", {"id": "a"})
        conn.rollback()  # as after a failure through Core
        # The connection still works after the failure.
        assert Prepared(select(jobs.c.id)).rows(conn, {})[0].id == "a"


def test_run_returns_the_rows_of_a_statement_that_has_a_result(database: Database) -> None:
    """Rows for a SELECT or a RETURNING (none when nothing matched); nothing for a statement
    without a result, whose rows cannot be fetched."""
    with database.begin() as conn:
        conn.execute(insert(jobs), [_job("a"), _job("b")])
    key = ":p" if database.dialect.name == "sqlite" else "%(p)s"
    with database.begin() as conn:
        assert run(conn, f"SELECT id FROM jobs WHERE priority = {key} ORDER BY id", {"p": 0}) == [
            ("a",),
            ("b",),
        ]
        update = f"UPDATE jobs SET priority = 1 WHERE id = {key} RETURNING id, priority"
        assert run(conn, update, {"p": "a"}) == [("a", 1)]
        assert run(conn, update, {"p": "gone"}) == []
        assert run(conn, f"DELETE FROM jobs WHERE id = {key}", {"p": "b"}) == []
        assert run(conn, "SELECT count(*) FROM jobs", {}) == [(1,)]


def test_refused_value_is_invalid_input(pg_database: str) -> None:
    # PostgreSQL refuses a NUL character in text (SQLite keeps it).
    database = open_database(database_url(db=pg_database, data_dir=Path()))
    upgrade(database)
    lookup = Prepared(select(jobs.c.id).where(jobs.c.id == bindparam("job_id")))
    try:
        with database.connect() as conn, pytest.raises(ValidationFailed, match="refused a value"):
            lookup.rows(conn, {"job_id": "a\x00b"})
    finally:
        database.dispose()
