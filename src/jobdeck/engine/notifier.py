"""Who waits on what: blocking GETs wait on a job, dispatchers on runnable or cancelled tasks.

Changes made in this process wake waiters directly. Changes made by other processes arrive by
PostgreSQL's LISTEN/NOTIFY, or, on SQLite, by watching ``PRAGMA data_version`` (one cheap
query for the whole process, four times a second): then every waiter looks again.
"""

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, Engine, text

from jobdeck.engine.writer import Changes
from jobdeck.store.database import is_sqlite

log = logging.getLogger(__name__)
CHANNEL = "jobdeck"
_MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes


def encode(changes: Changes, origin: str) -> str:
    """The NOTIFY payload for ``changes`` made by the process ``origin`` names; its changes
    ``*`` when they would not fit."""
    parts = [f"o:{origin}"]
    if changes.tasks_ready:
        parts.append("r")
    if changes.jobs:
        parts.append("j:" + ",".join(sorted(changes.jobs)))
    if changes.tasks_cancelled:
        parts.append("c:" + ",".join(str(seq) for seq in sorted(changes.tasks_cancelled)))
    payload = ";".join(parts)
    if len(payload) > _MAX_PAYLOAD or changes.everything:
        return f"o:{origin};*"
    return payload


def decode(payload: str) -> tuple[str, Changes]:
    """The process that made the changes a NOTIFY payload names (its origin), and those."""
    changes = Changes()
    origin = ""
    for part in payload.split(";"):
        if part.startswith("o:"):
            origin = part[2:]
        elif part == "*":
            changes.everything = changes.tasks_ready = True
        elif part == "r":
            changes.tasks_ready = True
        elif part.startswith("j:"):
            changes.jobs.update(part[2:].split(","))
        elif part.startswith("c:"):
            changes.tasks_cancelled.update(int(seq) for seq in part[2:].split(","))
    return origin, changes


class Notifier:
    """Carries committed changes to the waiters of this process and to other processes."""

    def __init__(self, db: Engine) -> None:
        self._db = db
        # Names this process in its NOTIFY payloads: its own come back to its listener, and
        # the writer has woken its waiters for them already.
        self._origin = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._job_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )
        self._task_listeners: list[Callable[[Changes], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start hearing other processes' changes."""
        target = self._watch_sqlite if is_sqlite(self._db) else self._listen_postgres
        self._thread = threading.Thread(target=target, name="jobdeck-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop hearing other processes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def add_task_listener(self, listener: Callable[[Changes], None]) -> None:
        """Call ``listener`` (from another thread) whenever tasks may have changed."""
        with self._lock:
            self._task_listeners.append(listener)

    def remove_task_listener(self, listener: Callable[[Changes], None]) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            if listener in self._task_listeners:
                self._task_listeners.remove(listener)

    @contextlib.contextmanager
    def watch_job(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when ``job_id`` changes, for as long as the block runs."""
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._job_waiters[job_id].add(entry)
        try:
            yield event
        finally:
            with self._lock:
                waiters = self._job_waiters.get(job_id)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._job_waiters[job_id]

    def publish(self, changes: Changes, conn: Connection) -> None:
        """Send ``changes`` to other processes (PostgreSQL only; delivered at commit)."""
        if not is_sqlite(self._db):
            payload = encode(changes, self._origin)
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})

    def wake(self, changes: Changes) -> None:
        """Wake this process's waiters on ``changes``."""
        with self._lock:
            if changes.everything:
                waiters = [w for ws in self._job_waiters.values() for w in ws]
            else:
                waiters = [w for j in changes.jobs for w in self._job_waiters.get(j, ())]
            listeners = list(self._task_listeners)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop: its waiter is gone
                loop.call_soon_threadsafe(event.set)
        if changes.tasks_ready or changes.tasks_cancelled or changes.everything:
            for listener in listeners:
                listener(changes)

    def _watch_sqlite(self) -> None:
        # data_version counts the commits of *other* connections as seen by this one, so the
        # watcher keeps one connection of its own for as long as it runs.
        connection = self._db.raw_connection()
        try:
            last = None
            while not self._stop.wait(0.25):
                try:
                    cursor = connection.cursor()
                    cursor.execute("PRAGMA data_version")
                    (version,) = cursor.fetchone() or (None,)
                    cursor.close()
                except Exception:
                    log.exception("could not read SQLite's data_version")
                    continue
                if last is not None and version != last:
                    self.wake(Changes(everything=True, tasks_ready=True))
                last = version
        finally:
            connection.close()

    def _listen_postgres(self) -> None:
        import psycopg  # here: a SQLite service need not load it

        url = self._db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # A reconnect may have missed notifications: everyone looks again.
                    self.wake(Changes(everything=True, tasks_ready=True))
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            origin, changes = decode(notify.payload)
                            if origin != self._origin:
                                self.wake(changes)
            except Exception:
                if not self._stop.is_set():
                    log.exception("lost the LISTEN connection; reconnecting")
                    self._stop.wait(1.0)
