"""The migrations build exactly the tables the code uses, on both databases."""

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine as Database
from sqlalchemy import inspect

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
