"""job counts by owner and phase, kept by triggers

``GET /stats`` counted every job at every call (``GROUP BY phase`` over the jobs table: 15 ms
with 30,000 jobs here, on either store, and growing with the table); these counts make it a
read of a few rows. The engine counts the jobs it inserts, once per batch (``_insert_jobs``,
the one place that inserts jobs: a row trigger on SQLite cost an eighth of the instructions
of a batch insert); triggers count every change of a job's phase and every deletion, so that
no path that changes a job can miss them:

- SQLite: a row per (owner, phase), updated in place by row triggers (one writer at a time).
- PostgreSQL: rows of changes, (owner, phase, +n/-n), added by statement triggers from the
  statement's transition tables; a count is the sum of its rows. Updating one row in place
  would make every writing transaction wait for the others on it (and could deadlock two
  that update two counts in opposite orders); an insert waits for nobody.
  ``Engine.compact_counts`` folds the rows of changes into one per count.

A later migration that rebuilds the jobs table on SQLite (``batch_alter_table`` copies it)
drops these triggers with the old table and must create them again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 07:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SQLITE_BUMP = (
    "INSERT INTO job_counts (owner, phase, n) VALUES (new.owner, new.phase, 1)"
    " ON CONFLICT (owner, phase) DO UPDATE SET n = n + 1;"
)
_SQLITE_DROP = "UPDATE job_counts SET n = n - 1 WHERE owner = old.owner AND phase = old.phase;"
SQLITE_TRIGGERS = {
    "jobs_count_updated": "AFTER UPDATE OF owner, phase ON jobs"
    " WHEN new.phase IS NOT old.phase OR new.owner IS NOT old.owner"
    f" BEGIN {_SQLITE_DROP} {_SQLITE_BUMP} END",
    "jobs_count_deleted": f"AFTER DELETE ON jobs BEGIN {_SQLITE_DROP} END",
}

# name -> (event, transition tables, the changes it adds)
POSTGRES_TRIGGERS = {
    "jobs_count_updated": (
        "UPDATE",
        "OLD TABLE AS old_jobs NEW TABLE AS new_jobs",
        "SELECT owner, phase, sum(n) FROM ("
        " SELECT owner, phase, 1 AS n FROM new_jobs"
        " UNION ALL SELECT owner, phase, -1 AS n FROM old_jobs) AS changed"
        " GROUP BY owner, phase HAVING sum(n) <> 0",
    ),
    "jobs_count_deleted": (
        "DELETE",
        "OLD TABLE AS old_jobs",
        "SELECT owner, phase, -count(*) FROM old_jobs GROUP BY owner, phase",
    ),
}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "job_counts",
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        *([sa.PrimaryKeyConstraint("owner", "phase")] if sqlite else []),
        sqlite_with_rowid=False,
    )
    # The triggers first: on PostgreSQL, creating one locks the jobs table against writes
    # until the commit, so that the counts below miss nothing.
    if sqlite:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    else:
        for name, (event, tables, changes) in POSTGRES_TRIGGERS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" INSERT INTO job_counts (owner, phase, n) {changes}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON jobs REFERENCING {tables}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    op.execute(
        "INSERT INTO job_counts (owner, phase, n)"
        " SELECT owner, phase, count(*) FROM jobs GROUP BY owner, phase"
    )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + ("" if sqlite else " ON jobs"))
        if not sqlite:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("job_counts")
