"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 14:54:51.204551
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from jobdeck.store.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=256), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("job_type", sa.String(length=128), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=256), nullable=True),
        sa.Column("source_job_id", sa.String(length=36), nullable=True),
        sa.Column("message_id", sa.String(length=256), nullable=True),
        sa.Column("idempotency_key", sa.String(length=256), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("creation_time", UtcDateTime(), nullable=False),
        sa.Column("updated_time", UtcDateTime(), nullable=False),
        sa.Column("start_time", UtcDateTime(), nullable=True),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("destruction_time", UtcDateTime(), nullable=True),
        sa.Column("execution_duration", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("json_parameters", sa.JSON(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column(
            "max_retries_per_task", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("max_failed_tasks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("task_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tasks_succeeded", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tasks_failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "timeline",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_destruction",
            ["destruction_time"],
            unique=False,
            sqlite_where=sa.text("phase <> 'ARCHIVED'"),
            postgresql_where=sa.text("phase <> 'ARCHIVED'"),
        )
        batch_op.create_index(
            "ix_jobs_idempotency",
            ["owner", "idempotency_key"],
            unique=True,
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.create_index("ix_jobs_owner_seq", ["owner", "seq"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "job_logs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_index", sa.Integer(), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("timestamp", UtcDateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_seq"], ["jobs.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.create_index("ix_job_logs_job", ["job_seq", "seq"], unique=False)

    op.create_table(
        "job_notes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_type", sa.String(length=16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("timestamp", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_seq"], ["jobs.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("job_notes", schema=None) as batch_op:
        batch_op.create_index("ix_job_notes_job", ["job_seq", "seq"], unique=False)

    op.create_table(
        "job_results",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("result_id", sa.String(length=512), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("mime_type", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["job_seq"], ["jobs.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("job_results", schema=None) as batch_op:
        batch_op.create_index("ix_job_results_job", ["job_seq", "result_id"], unique=True)

    op.create_table(
        "tasks",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_index", sa.Integer(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("run_after", UtcDateTime(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("lease_expires", UtcDateTime(), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["job_seq"], ["jobs.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_job", ["job_seq", "task_index"], unique=True)
        batch_op.create_index(
            "ix_tasks_lease",
            ["lease_expires"],
            unique=False,
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )

    # Claims and queue positions read in (priority DESC, seq) order; autogenerate cannot
    # compare expression indexes, so these two are written by hand.
    op.create_index(
        "ix_jobs_queue",
        "jobs",
        [sa.text("priority DESC"), "seq"],
        sqlite_where=sa.text("phase = 'QUEUED'"),
        postgresql_where=sa.text("phase = 'QUEUED'"),
    )
    op.create_index(
        "ix_tasks_claim",
        "tasks",
        [sa.text("priority DESC"), "seq"],
        sqlite_where=sa.text("state = 'ready'"),
        postgresql_where=sa.text("state = 'ready'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_claim", "tasks")
    op.drop_index("ix_jobs_queue", "jobs")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_tasks_lease",
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index("ix_tasks_job")

    op.drop_table("tasks")
    with op.batch_alter_table("job_results", schema=None) as batch_op:
        batch_op.drop_index("ix_job_results_job")

    op.drop_table("job_results")
    with op.batch_alter_table("job_notes", schema=None) as batch_op:
        batch_op.drop_index("ix_job_notes_job")

    op.drop_table("job_notes")
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_job_logs_job")

    op.drop_table("job_logs")
    op.drop_table("tokens")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_seq")
        batch_op.drop_index(
            "ix_jobs_idempotency",
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_jobs_destruction",
            sqlite_where=sa.text("phase <> 'ARCHIVED'"),
            postgresql_where=sa.text("phase <> 'ARCHIVED'"),
        )

    op.drop_table("jobs")
