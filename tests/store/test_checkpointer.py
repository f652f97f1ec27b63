"""SQLite's write-ahead log is copied back into the database by the engine's own thread."""

import sqlite3
import time
from pathlib import Path

from jobdeck.domain.records import JobCreate
from jobdeck.engine.engine import Engine, Principal
from jobdeck.engine.settings import EngineSettings
from jobdeck.store.database import database_url, open_database, upgrade


def in_database_file(path: Path) -> int:
    """Jobs in the database file itself, its write-ahead log left unread."""
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def test_committed_jobs_reach_the_database_file_without_a_commit_checkpointing(
    tmp_path: Path,
) -> None:
    db = open_database(database_url(db=None, data_dir=tmp_path))
    upgrade(db)
    path = tmp_path / "jobdeck.db"
    with sqlite3.connect(path) as conn:  # the tables, into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = in_database_file(path)
    engine = Engine(db, EngineSettings(results_dir=tmp_path / "results"))
    engine.start()
    try:
        # Far fewer pages than SQLite's own checkpoint would wait for (1,000).
        engine.create_jobs(Principal("alice"), [JobCreate()] * 10)
        deadline = time.monotonic() + 10
        while in_database_file(path) < before + 10:
            assert time.monotonic() < deadline, "the log was not checkpointed"
            time.sleep(0.05)
    finally:
        engine.close()
        db.dispose()
