"""Group commit: one thread writes, and all that arrived while it was busy shares one commit.

A caller hands over an operation (a function of a :class:`Tx`) and waits for its future; the
future resolves only after the commit, so an acknowledgement means "durable". Each operation
runs in a savepoint, so one that fails leaves the others of its batch untouched.

An operation handed over with ``durable=False`` is one whose loss in a crash costs nothing
but a repetition: a claim (the task is claimed again) or a lease's extension (the task is
rescued and run again, as after any stall). On PostgreSQL a batch of only such operations
commits without waiting for its log to reach the disk (``synchronous_commit = off`` for that
transaction): it is seen by all at once, made durable by the server within moments, and by
any later durable commit, which flushes the log up to itself. A wait for the disk here cost
0.3 to 1.7 ms a commit, as the disk was at the moment; a job at light load waited for it at
its submission, its claim and its finish. Any durable operation in the batch makes the whole
commit durable. (On SQLite, ``synchronous=NORMAL`` commits without a sync already.)

On SQLite the writer also watches for other processes' commits (the CLI's, an embedded API's):
its connection's ``PRAGMA data_version`` changes with theirs and never with its own, so it
looks when it has been idle for :data:`WATCH_SECONDS`, and after a batch when that long has
passed, and wakes every waiter of this process when it changed. (A watching thread of its own
read the version on another connection, which the writer's own commits changed too: every
quarter of a second of activity woke every waiter and dispatcher here for nothing.)
"""

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from sqlalchemy import Connection, Engine

from jobdeck.store.checkpointer import WRITER_CHECKPOINT_PAGES
from jobdeck.store.database import WRITER_CACHE_KIB, is_sqlite
from jobdeck.store.driver import run

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 2000
WATCH_SECONDS = 0.25
"""How often, at most, SQLite's writer looks for other processes' commits."""


@dataclass
class Changes:
    """What a committed batch changed, for those who wait on it."""

    jobs: set[str] = field(default_factory=set)
    tasks_ready: bool = False
    tasks_cancelled: set[int] = field(default_factory=set)
    everything: bool = False
    """Something changed that is not itemised (another process wrote): everyone looks again."""

    @classmethod
    def unknown(cls) -> "Changes":
        """Changes not itemised (another process wrote, or word of it may have been missed):
        every waiter looks again, dispatchers for tasks too."""
        return cls(everything=True, tasks_ready=True)

    def merge(self, other: "Changes") -> None:
        """Add ``other``'s changes to these."""
        self.jobs |= other.jobs
        self.tasks_ready = self.tasks_ready or other.tasks_ready
        self.tasks_cancelled |= other.tasks_cancelled
        self.everything = self.everything or other.everything

    def __bool__(self) -> bool:
        return bool(self.jobs or self.tasks_ready or self.tasks_cancelled or self.everything)


@dataclass
class Tx:
    """An operation's view of the batch it runs in: the connection, the time, its changes,
    and what to call once its work is committed (``after_commit``: not called if it fails,
    or if its batch does)."""

    conn: Connection
    now: datetime
    changes: Changes
    after_commit: list[Callable[[], None]] = field(default_factory=list)


Operation = Callable[[Tx], T]


class _Item(NamedTuple):
    """An operation handed over, with its future."""

    operation: Operation[Any]
    future: "Future[Any]"
    durable: bool


NEVER_BY_COUNT = 2**31 - 1
"""psycopg's ``prepare_threshold`` for the writer: no statement is prepared for having run
often; one is when its call asks (``driver.run(prepare=True)``)."""


class ChangeSink(Protocol):
    """Who hears of committed changes, after the commit."""

    def wake(self, changes: Changes, records: dict[str, Any] | None = None) -> None:
        """Wake those in this process who wait on these changes (``records``: some changed
        jobs' new records, by id)."""

    def publish(self, changes: Changes) -> None:
        """Tell other processes (PostgreSQL's NOTIFY)."""


class Writer:
    """The single writing thread of this process."""

    def __init__(
        self,
        db: Engine,
        *,
        notifier: "ChangeSink",
        records_of: "Callable[[Connection, set[str]], dict[str, Any]] | None" = None,
    ) -> None:
        """``records_of(conn, job_ids)``: the new records of those of these changed jobs that
        someone waits on, read at the end of the transaction that changed them, before its
        commit (None: the waiters read them themselves)."""
        self._db = db
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._notifier = notifier
        self._records_of = records_of
        self._thread: threading.Thread | None = None
        self._sqlite = is_sqlite(db)
        self._options = {"sqlite_begin": "IMMEDIATE"} if self._sqlite else {}
        self._connection: Connection | None = None
        self._committing = False
        self._data_version: int | None = None
        self._next_look = 0.0

    def start(self) -> None:
        """Start the writing thread."""
        self._thread = threading.Thread(target=self._loop, name="jobdeck-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what was handed over, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, operation: Operation[T], *, durable: bool = True) -> "Future[T]":
        """Hand over ``operation``; its future resolves once it is committed (or failed).
        ``durable=False``: its loss in a crash would only repeat work (see the module)."""
        if self._thread is None:  # its future would never resolve
            raise RuntimeError("the writer is not running")
        future: Future[T] = Future()
        self._queue.put(_Item(operation, future, durable))
        return future

    def run(self, operation: Operation[T], *, durable: bool = True) -> T:
        """Run ``operation`` and wait until it is committed."""
        if threading.current_thread() is self._thread:  # it would wait for itself
            raise RuntimeError("an operation of the writer cannot wait for the writer")
        return self.submit(operation, durable=durable).result()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=WATCH_SECONDS if self._sqlite else None)
            except queue.Empty:
                self._look_for_others()
                continue
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            # A future its caller cancelled (an asyncio task cancelled while awaiting it) is
            # not written, and could not be resolved; the others cannot be cancelled now.
            batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if batch:
                self._write(batch)
            if self._sqlite and time.monotonic() >= self._next_look:
                self._look_for_others()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _look_for_others(self) -> None:
        """Wake every waiter if another process committed since the last look (SQLite)."""
        self._next_look = time.monotonic() + WATCH_SECONDS
        try:
            driver: Any = self._connect().connection.driver_connection
            (version,) = driver.execute("PRAGMA data_version").fetchone()
        except Exception:
            log.exception("could not read SQLite's data_version")
            self._drop_connection()
            return
        if self._data_version is not None and version != self._data_version:
            self._notifier.wake(Changes.unknown())
        self._data_version = version

    def _drop_connection(self) -> None:
        """Let go of the writer's connection, closed as far as it can be: the next use makes
        a new one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _connect(self) -> Connection:
        """The writer's connection, made on first use and after a failure."""
        if self._connection is None:
            connection = self._db.connect().execution_options(**self._options)
            # On the driver's connection: through SQLAlchemy it would begin a transaction.
            driver: Any = connection.connection.driver_connection
            if self._sqlite:
                driver.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
                # The log is checkpointed by a thread of its own (store.checkpointer).
                driver.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")
                # A new connection counts from a new version: what changed meanwhile is
                # looked at again by everyone.
                if self._data_version is not None:
                    self._data_version = None
                    self._notifier.wake(Changes.unknown())
            else:
                # The writer's statements handle batches, whose plans depend on the tables'
                # sizes: prepared (psycopg prepares a statement run five times), a plan made
                # generic while they were small kept scanning them whole once they had grown,
                # until an ANALYZE. Unprepared, each run is planned for the tables as they
                # are, which costs little against a batch. (PostgreSQL's plan_cache_mode
                # would also replan the foreign key checks of every inserted task.) Only
                # statements whose plan scans no table ask to be prepared: the inserts of new
                # jobs, the read of a job's record by key (with no threshold at all, psycopg
                # would prepare nothing even then).
                driver.prepare_threshold = NEVER_BY_COUNT
            self._connection = connection
        return self._connection

    def _write(self, batch: list["_Item"]) -> None:
        """Run a batch in one transaction and resolve its futures. A batch whose connection
        turns out dead before its commit (the server restarted, the link dropped) committed
        nothing: it runs once more on a new connection. One whose connection is lost during
        the commit may have committed: it fails, as does any other failure."""
        for attempt in (1, 2):
            conn: Connection | None = None
            self._committing = False
            try:
                conn = self._connect()
                outcomes, changes, calls, records = self._transaction(conn, batch)
            except Exception as error:
                lost = conn is not None and conn.invalidated and not self._committing
                # The connection may be broken: the next batch starts on a fresh one.
                self._drop_connection()
                if lost and attempt == 1:
                    log.warning("the database connection was lost; writing the batch again")
                    continue
                if len(batch) > 1:
                    log.exception("a write batch of %d operations failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            # First: a task handed to an idle worker here (Engine.set_standby) is what a
            # waiting client waits for.
            for call in calls:
                try:
                    call()
                except Exception:
                    log.exception("a call after a commit failed")
            for future, ok, value in outcomes:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if changes:
                self._notifier.wake(changes, records)
                self._notifier.publish(changes)
            return

    def _transaction(
        self, conn: Connection, batch: list["_Item"]
    ) -> tuple[
        list[tuple["Future[Any]", bool, Any]],
        Changes,
        list[Callable[[], None]],
        dict[str, Any] | None,
    ]:
        """Run the batch's operations in one transaction and commit it: each operation's
        outcome (its future, whether it succeeded, its result or error), the changes, the
        calls the operations that succeeded asked for after the commit, and the records
        waiters are to be given (``records_of``)."""
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        changes = Changes()
        calls: list[Callable[[], None]] = []
        # A savepoint per operation keeps one failure from failing the batch; a batch of one
        # needs none (and light load is mostly batches of one).
        alone = len(batch) == 1
        relaxed = not self._sqlite and not any(item.durable for item in batch)
        with conn.begin():
            if relaxed:
                run(conn, "SET LOCAL synchronous_commit = off", ())
            for operation, future, _durable in batch:
                tx = Tx(conn=conn, now=datetime.now(UTC), changes=Changes())
                try:
                    if alone:
                        result = operation(tx)
                    else:
                        with conn.begin_nested():
                            result = operation(tx)
                except Exception as error:  # the operation's own failure
                    if alone or conn.invalidated:  # a lost connection fails the batch
                        raise
                    outcomes.append((future, False, error))
                else:
                    outcomes.append((future, True, result))
                    changes.merge(tx.changes)
                    calls += tx.after_commit
            records = None
            if self._records_of is not None and changes.jobs:
                records = self._records_of(conn, changes.jobs)
            # What fails from here on fails in the commit, which may have been done.
            self._committing = True
        return outcomes, changes, calls, records
