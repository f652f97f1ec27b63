"""The migrations build exactly the tables the code uses, on both databases."""

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine as Database
from sqlalchemy import inspect, text

from jobdeck.domain.records import JobCreate
from jobdeck.engine.engine import Engine, Principal
from jobdeck.store.database import HEAD_REVISION, MIGRATIONS, current_revision
from jobdeck.store.schema import metadata

# Alembic cannot compare indexes with a DESC expression; the next test checks those two.
EXPRESSION_INDEXES = {"ix_jobs_queue", "ix_tasks_claim"}


def _compared(obj: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
    return not (kind == "index" and name in EXPRESSION_INDEXES)


def test_migrations_match_the_schema(database: Database) -> None:
    with database.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _compared})
        diff = compare_metadata(context, metadata)
    assert diff == []


def _database_predicates(database: Database) -> dict[str, str]:
    """The WHERE of each partial index, as the database keeps it."""
    with database.connect() as conn:
        if database.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
            found = {name: sql.partition(" WHERE ")[2] for name, sql in rows if sql}
        else:
            rows = conn.execute(
                text(
                    "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indpred IS NOT NULL"
                )
            )
            found = {name: where for name, where in rows}
    return {name: where for name, where in found.items() if where}


def _words(sql: str) -> list[str]:
    """The names, literals and operators of a predicate, without PostgreSQL's casts and
    parentheses: ``((phase)::text = 'QUEUED'::text)`` → phase, =, 'QUEUED'."""
    return re.findall(r"'[^']*'|[<>=]+|\w+", re.sub(r"::\w+", "", sql))


def test_partial_indexes_have_the_schemas_predicates(database: Database) -> None:
    declared = {
        index.name: index.info["where"]
        for table in metadata.tables.values()
        for index in table.indexes
        if "where" in index.info
    }
    assert set(declared) == {
        "ix_jobs_queue",
        "ix_jobs_idempotency",
        "ix_jobs_destruction",
        "ix_tasks_claim",
        "ix_tasks_lease",
    }
    found = _database_predicates(database)
    assert {name: _words(where) for name, where in declared.items()} == {
        name: _words(where) for name, where in found.items() if name in declared
    }
    assert set(found) == set(declared)


def test_claim_and_queue_indexes_exist(database: Database) -> None:
    inspector = inspect(database)
    assert "ix_tasks_claim" in {i["name"] for i in inspector.get_indexes("tasks")}
    assert "ix_jobs_queue" in {i["name"] for i in inspector.get_indexes("jobs")}


def test_head_revision_is_alembics_newest(database: Database) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    assert current_revision(database) == HEAD_REVISION


def _migrate(database: Database, direction: str, revision: str) -> None:
    """Alembic's ``downgrade`` or ``upgrade`` to ``revision``, in one transaction."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)


def test_job_counts_start_from_the_jobs_already_stored(engine: Engine, database: Database) -> None:
    """Upgraded to 0002 with jobs stored, the counts are theirs; and they follow from then on."""
    owner = Principal("alice")
    engine.create_jobs(owner, [JobCreate(), JobCreate(start=True), JobCreate(start=True)])
    _migrate(database, "downgrade", "0001")
    assert "job_counts" not in inspect(database).get_table_names()
    _migrate(database, "upgrade", "head")
    assert current_revision(database) == HEAD_REVISION
    assert engine.stats(owner) == {"PENDING": 1, "QUEUED": 2}
    engine.create_jobs(owner, [JobCreate(start=True)])
    assert engine.stats(owner) == {"PENDING": 1, "QUEUED": 3}


def _foreign_keys_of_tasks(database: Database) -> list[Any]:
    return [key["referred_table"] for key in inspect(database).get_foreign_keys("tasks")]


def test_tasks_keep_their_rows_and_indexes_through_0003(engine: Engine, database: Database) -> None:
    """Down to 0002 (the foreign key back, tasks of jobs deleted by hand dropped) and up
    again (without it; on SQLite the table is rebuilt both ways): the tasks, their keys and
    their indexes stay, and claims go on."""
    owner = Principal("alice")
    engine.create_jobs(owner, [JobCreate(job_type="noop", start=True) for _ in range(4)])
    [claimed] = engine.claim_tasks("w1", 1)
    with database.begin() as conn:  # one job deleted by hand: its task would fail the key
        conn.execute(text("DELETE FROM jobs WHERE seq = (SELECT max(seq) FROM jobs)"))
    with database.connect() as conn:
        before = conn.execute(
            text("SELECT * FROM tasks WHERE job_seq IN (SELECT seq FROM jobs) ORDER BY seq")
        ).all()
    assert _foreign_keys_of_tasks(database) == []
    for direction, revision, keys in (("downgrade", "0002", ["jobs"]), ("upgrade", "head", [])):
        _migrate(database, direction, revision)
        assert _foreign_keys_of_tasks(database) == keys
        with database.connect() as conn:
            assert conn.execute(text("SELECT * FROM tasks ORDER BY seq")).all() == before
        test_partial_indexes_have_the_schemas_predicates(database)
        indexes = {index["name"] for index in inspect(database).get_indexes("tasks")}
        assert {"ix_tasks_job", "ix_tasks_lease", "ix_tasks_claim"} <= indexes
    test_migrations_match_the_schema(database)
    assert [task.task_seq for task in engine.claim_tasks("w2", 10)] == [
        row.seq for row in before if row.seq != claimed.task_seq
    ]
