"""Periodic upkeep: rescue tasks whose worker died, fold the job counts' rows of changes,
archive jobs past destruction time.

Both are guarded updates, so every process that runs this may do so at once without harm.
"""

import logging
import threading

from jobdeck.engine.engine import Engine

log = logging.getLogger(__name__)


class Maintenance:
    """A thread that runs the rescuer often, and the folding of the job counts and the archiver
    now and then."""

    def __init__(
        self,
        engine: Engine,
        *,
        rescue_every: float = 1.0,
        fold_every: float = 5.0,
        archive_every: float = 30.0,
    ) -> None:
        self._engine = engine
        self._rescue_every = rescue_every
        self._fold_every = fold_every
        self._archive_every = archive_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the upkeep thread."""
        self._thread = threading.Thread(target=self._loop, name="jobdeck-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        since_fold = 0.0
        since_archive = self._archive_every  # archive once at start
        while not self._stop.wait(self._rescue_every):
            try:
                self._engine.rescue_lapsed()
                since_fold += self._rescue_every
                if since_fold >= self._fold_every:
                    since_fold = 0.0
                    self._engine.compact_counts()
                since_archive += self._rescue_every
                if since_archive >= self._archive_every:
                    since_archive = 0.0
                    while self._engine.archive_expired() and not self._stop.is_set():
                        pass
            except Exception:
                log.exception("maintenance round failed; trying again")
