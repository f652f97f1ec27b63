"""SQLite's write-ahead log, copied back into the database by a thread of its own.

By default SQLite copies the log back (a checkpoint) in the transaction whose commit takes it
past 1,000 pages: here the writer thread's, so that the request whose commit it was waited
for it, 10-20 ms at light load (a no-op job writes about 20 pages: every 50 jobs or so). The
writer now checkpoints only past a bound (:data:`WRITER_CHECKPOINT_PAGES`), as a safety net,
and this thread runs a PASSIVE checkpoint every :data:`CHECKPOINT_EVERY` seconds: it waits
for no reader or writer, and SQLite runs it without Python's GIL, on another core.
"""

import logging
import threading
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 0.1
"""Seconds between two checkpoints (one with nothing to copy costs microseconds)."""

WRITER_CHECKPOINT_PAGES = 4_000
"""The log's size (4 KiB pages) past which the writer's commit checkpoints itself, should this
thread fall behind."""


class Checkpointer:
    """The thread that checkpoints a SQLite database's write-ahead log."""

    def __init__(self, db: Engine, *, every: float = CHECKPOINT_EVERY) -> None:
        self._db = db
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start checkpointing."""
        self._thread = threading.Thread(target=self._loop, name="jobdeck-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop (a checkpoint under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        connection: Any = self._db.raw_connection()
        try:
            while not self._stop.wait(self._every):
                try:
                    connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception:
                    log.warning("checkpointing the write-ahead log failed", exc_info=True)
        finally:
            connection.close()
