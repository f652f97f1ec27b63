"""The tables, as SQLAlchemy Core metadata. Alembic migrations create them; keep both in step.

Times are stored as naive UTC and read back as aware UTC (``UtcDateTime``), the same on SQLite
and PostgreSQL. Jobs have an integer ``seq`` (submission order, the key other tables use) and a
public UUID ``id``.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    func,
    literal,
    literal_column,
    text,
)
from sqlalchemy.types import TypeDecorator

from jobdeck.domain.limits import (
    ERROR_CODE_MAX_LENGTH,
    MIME_TYPE_MAX_LENGTH,
    RESULT_ID_MAX_LENGTH,
    SOURCE_MAX_LENGTH,
)
from jobdeck.domain.records import format_utc


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC timestamp stored without zone and returned with ``tzinfo=UTC``.

    On SQLite it is text in SQLAlchemy's own layout (``YYYY-MM-DD HH:MM:SS.ffffff``, which
    sorts as time does), written and read with the C-level ``isoformat``/``fromisoformat``:
    the generic formatting was the largest cost of a batch of submissions.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if dialect.name == "sqlite":
            return value.isoformat(sep=" ", timespec="microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


class TimelineJSON(TypeDecorator[Any]):
    """The timeline: a JSON array on the job row, appended by the same UPDATE that changes the
    phase (one statement per change, no extra rows). JSONB on PostgreSQL, for its ``||``.

    SQLAlchemy's PostgreSQL types are imported only on PostgreSQL: their package loads every
    PostgreSQL driver's module, about 0.1 s of a SQLite server's start here.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


def partial_index(name: str, *expressions: Any, where: str, unique: bool = False) -> Index:
    """An index of the rows that meet ``where``: the same SQL on both stores, which the
    migrations create so. The predicate is kept in the index's ``info`` rather than as
    ``sqlite_where``/``postgresql_where``: naming a dialect's option makes SQLAlchemy load
    that dialect, and PostgreSQL's loads the modules of every PostgreSQL driver it knows,
    about 0.1 s of a SQLite server's start here. (Alembic does not compare predicates;
    tests/store/test_migrations.py checks each against the database's own.)"""
    return Index(name, *expressions, unique=unique, info={"where": where})


# SQLite wants INTEGER PRIMARY KEY (the rowid) for a cheap autoincrementing key.
Key = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("name", String(256), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("job_type", String(128)),
    Column("owner", String(128), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("run_id", String(256)),
    Column("source_job_id", String(36)),
    Column("message_id", String(256)),
    Column("idempotency_key", String(256)),
    Column("phase", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("creation_time", UtcDateTime, nullable=False),
    Column("updated_time", UtcDateTime, nullable=False),
    Column("start_time", UtcDateTime),
    Column("end_time", UtcDateTime),
    Column("destruction_time", UtcDateTime),
    Column("execution_duration", Integer, nullable=False, server_default=text("0")),
    Column("parameters", JSON, nullable=False),
    Column("json_parameters", JSON),
    Column("progress", JSON),
    Column("max_retries_per_task", Integer, nullable=False, server_default=text("0")),
    Column("max_failed_tasks", Integer, nullable=False, server_default=text("0")),
    Column("task_count", Integer, nullable=False, server_default=text("0")),
    Column("tasks_succeeded", Integer, nullable=False, server_default=text("0")),
    Column("tasks_failed", Integer, nullable=False, server_default=text("0")),
    Column("timeline", TimelineJSON, nullable=False),
    # Partial: a row leaving the queue costs no entry here (PostgreSQL skips partial indexes
    # whose predicate the new row version does not meet).
    partial_index(
        "ix_jobs_queue",
        text("priority DESC"),
        "seq",
        where="phase = 'QUEUED'",
    ),
    Index("ix_jobs_owner_seq", "owner", "seq"),
    partial_index(
        "ix_jobs_idempotency",
        "owner",
        "idempotency_key",
        unique=True,
        where="idempotency_key IS NOT NULL",
    ),
    partial_index(
        "ix_jobs_destruction",
        "destruction_time",
        where="phase <> 'ARCHIVED'",
    ),
)

# A task's job_seq has no foreign key (migration 0003): on PostgreSQL its check locked the
# job's row for every task inserted, half the cost of a batch's task rows. The engine inserts
# tasks with their job and deletes them with it.
tasks = Table(
    "tasks",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("job_seq", Key, nullable=False),
    Column("task_index", Integer, nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("run_after", UtcDateTime, nullable=False),
    Column("worker_id", String(128)),
    Column("lease_expires", UtcDateTime),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    partial_index(
        "ix_tasks_claim",
        text("priority DESC"),
        "seq",
        where="state = 'ready'",
    ),
    Index("ix_tasks_job", "job_seq", "task_index", unique=True),
    partial_index(
        "ix_tasks_lease",
        "lease_expires",
        where="state = 'running'",
    ),
)

job_notes = Table(
    "job_notes",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("job_seq", Key, ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),  # message | error
    Column("source", String(SOURCE_MAX_LENGTH), nullable=False),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("error_code", String(ERROR_CODE_MAX_LENGTH)),
    Column("error_type", String(16)),
    Column("detail", Text),
    Column("timestamp", UtcDateTime, nullable=False),
    Index("ix_job_notes_job", "job_seq", "seq"),
)

job_results = Table(
    "job_results",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("job_seq", Key, ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
    Column("result_id", String(RESULT_ID_MAX_LENGTH), nullable=False),
    Column("url", Text),
    Column("path", Text),
    Column("size", BigInteger),
    Column("mime_type", String(MIME_TYPE_MAX_LENGTH)),
    Index("ix_job_results_job", "job_seq", "result_id", unique=True),
)

job_logs = Table(
    "job_logs",
    metadata,
    Column("seq", Key, primary_key=True, autoincrement=True),
    Column("job_seq", Key, ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
    Column("task_index", Integer),
    Column("level", String(16), nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_job_logs_job", "job_seq", "seq"),
)

# How many jobs each owner has in each phase: the sum of ``n`` over the owner's and phase's
# rows. Triggers on jobs keep it (migration 0002): on SQLite one row each (its key is
# (owner, phase)), on PostgreSQL rows of changes until Engine.compact_counts folds them.
job_counts = Table(
    "job_counts",
    metadata,
    Column("owner", String(128), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("n", BigInteger, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user", String(128), nullable=False),
    Column("admin", Boolean, nullable=False, server_default=text("false")),
    Column("created", UtcDateTime, nullable=False),
)


def timeline_append(dialect: str, status: str, source: str, at: datetime) -> Any:
    """The SQL value of ``jobs.timeline`` with ``[status, source, at]`` appended."""
    stamp = timeline_entry(status, source, at)[2]
    if dialect == "postgresql":
        entry = func.jsonb_build_array(
            cast(literal(status), String),
            cast(literal(source), String),
            cast(literal(stamp), String),
        )
        return jobs.c.timeline.op("||")(func.jsonb_build_array(entry))
    return func.json_insert(jobs.c.timeline, "$[#]", func.json_array(status, source, stamp))


def timeline_entry(status: str, source: str, at: datetime) -> list[str]:
    """A timeline entry as stored: ``[status, source, ISO time with Z]``."""
    return [status, source, format_utc(at)]


def fixed(value: str) -> Any:
    """A fixed value written into the SQL, not bound as a parameter.

    For predicates that must match a partial index (``state = 'ready'``): SQLite uses a
    partial index only when the query states its condition literally, and a bound
    parameter does not.
    """
    if "'" in value:
        raise ValueError(f"not a plain value: {value!r}")
    return literal_column(f"'{value}'")
