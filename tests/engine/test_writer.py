"""The writer's own connection."""

import pytest

from jobdeck.engine.engine import Engine


def test_the_writer_plans_each_statement_for_the_tables_as_they_are(
    engine: Engine, db_url: str
) -> None:
    """A generic plan made while the tables were small kept scanning them whole once they had
    grown (a 10,000-job drain after a light load: 4,400 jobs/s against 10,000)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("plan caching is PostgreSQL's")
    threshold = engine.writer.run(lambda tx: tx.conn.connection.driver_connection.prepare_threshold)
    assert threshold is None  # psycopg prepares nothing on the writer's connection
