"""Who waits on what: blocking GETs wait on a job, dispatchers on runnable or cancelled tasks.

Changes made in this process wake waiters directly. Changes made by other processes arrive by
PostgreSQL's LISTEN/NOTIFY, or, on SQLite, by the writer's watch of its connection's ``PRAGMA
data_version`` (see :mod:`jobdeck.engine.writer`): then every waiter looks again.

On PostgreSQL a process announces its committed changes from a thread of its own, on a
connection of its own, after the commit: a ``pg_notify`` inside the writer's transaction was a
round trip more in every transaction that changed something (a job's submission, its finish),
0.3-0.5 ms each on this machine's 2 cores. Should the process die between a commit and its
announcement, the others see the change at their next look instead: a dispatcher within its
fallback second, a blocking GET at the end of its wait.
"""

import asyncio
import contextlib
import logging
import queue
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Engine

from jobdeck.engine.writer import Changes
from jobdeck.store.database import is_sqlite

log = logging.getLogger(__name__)
CHANNEL = "jobdeck"


class JobWatch:
    """A waiter's watch on a job: ``changed`` is set when the job changes; ``record``, when
    set, is the job's record as the change committed it (read by the writer: see
    :meth:`Notifier.watched`), for the waiter to take instead of reading it again."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.record: Any = None

    def take_record(self) -> Any:
        """The record the last change brought, if any, once."""
        record, self.record = self.record, None
        return record


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
            changes.merge(Changes.unknown())
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
        self._job_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, JobWatch]]] = defaultdict(
            set
        )
        self._task_listeners: list[Callable[[Changes], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # NOTIFY payloads waiting to be sent (PostgreSQL); None tells the sender to stop.
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None

    def start(self) -> None:
        """Start hearing other processes' changes and telling them ours (PostgreSQL; on
        SQLite the writer watches for them)."""
        if not is_sqlite(self._db):
            self._thread = threading.Thread(
                target=self._listen_postgres, name="jobdeck-notifier", daemon=True
            )
            self._thread.start()
            self._sender = threading.Thread(
                target=self._send_postgres, name="jobdeck-announcer", daemon=True
            )
            self._sender.start()

    def stop(self) -> None:
        """Send what is still to be sent, then stop hearing and telling other processes."""
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join(timeout=5)
            self._sender = None
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
    def watch_job(self, job_id: str) -> Iterator[JobWatch]:
        """A watch on ``job_id``, for as long as the block runs."""
        watch = JobWatch()
        entry = (asyncio.get_running_loop(), watch)
        with self._lock:
            self._job_waiters[job_id].add(entry)
        try:
            yield watch
        finally:
            with self._lock:
                waiters = self._job_waiters.get(job_id)
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._job_waiters[job_id]

    def publish(self, changes: Changes) -> None:
        """Tell other processes of ``changes``, committed (PostgreSQL only: sent by the
        announcing thread, see the module)."""
        if self._sender is not None:
            self._outbox.put(encode(changes, self._origin))

    def watched(self, job_ids: Iterable[str]) -> list[str]:
        """Those of these jobs someone in this process waits on."""
        with self._lock:
            return [job_id for job_id in job_ids if job_id in self._job_waiters]

    def wake(self, changes: Changes, records: dict[str, Any] | None = None) -> None:
        """Wake this process's waiters on ``changes``; ``records``: some of the changed jobs'
        new records, by id, for their waiters to take."""
        with self._lock:
            if changes.everything:
                waiters = [(j, w) for j, ws in self._job_waiters.items() for w in ws]
            else:
                waiters = [(j, w) for j in changes.jobs for w in self._job_waiters.get(j, ())]
            listeners = list(self._task_listeners)
        for job_id, (loop, watch) in waiters:
            # The newest record known, or none (the waiter reads it): never an older one.
            watch.record = records.get(job_id) if records else None
            with contextlib.suppress(RuntimeError):  # a closed loop: its waiter is gone
                loop.call_soon_threadsafe(watch.changed.set)
        if changes.tasks_ready or changes.tasks_cancelled or changes.everything:
            for listener in listeners:
                listener(changes)

    def _libpq_url(self) -> str:
        return self._db.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _send_postgres(self) -> None:
        """Send the waiting payloads, all that have gathered in one statement; a failed send
        is tried once more, on a new connection."""
        import psycopg  # here: a SQLite service need not load it

        conn: psycopg.Connection[Any] | None = None
        stopping = False
        while not stopping:
            item = self._outbox.get()
            payloads: list[str] = []
            while item is not None:
                payloads.append(item)
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            for attempt in (1, 2):
                if not payloads:
                    break
                try:
                    if conn is None:
                        conn = psycopg.connect(
                            self._libpq_url(), autocommit=True, application_name="jobdeck-notify"
                        )
                    conn.execute(
                        "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload",
                        (CHANNEL, payloads),
                    )
                    break
                except Exception:
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                    if attempt == 2:
                        log.exception("could not send %d notifications", len(payloads))
        if conn is not None:
            conn.close()

    def _listen_postgres(self) -> None:
        import psycopg  # here: a SQLite service need not load it

        url = self._libpq_url()
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # A reconnect may have missed notifications: everyone looks again.
                    self.wake(Changes.unknown())
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            origin, changes = decode(notify.payload)
                            if origin != self._origin:
                                self.wake(changes)
            except Exception:
                if not self._stop.is_set():
                    log.exception("lost the LISTEN connection; reconnecting")
                    self._stop.wait(1.0)
