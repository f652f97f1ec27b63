"""A change made by one process wakes waiters in another (NOTIFY, or SQLite's data_version)."""

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import end_connections

from jobdeck.domain.phases import Phase
from jobdeck.domain.records import JobCreate
from jobdeck.engine.engine import Engine, Principal
from jobdeck.engine.notifier import decode, encode
from jobdeck.engine.writer import Changes
from jobdeck.store.database import open_database

ALICE = Principal("alice")


def test_payload_round_trip() -> None:
    changes = Changes(jobs={"a", "b"}, tasks_ready=True, tasks_cancelled={3, 4})
    assert decode(encode(changes, "p1")) == ("p1", changes)
    big = Changes(jobs={str(i) * 40 for i in range(1000)})
    assert encode(big, "p1") == "o:p1;*"
    origin, everything = decode("o:p1;*")
    assert origin == "p1" and everything.everything and everything.tasks_ready


def test_a_process_does_not_hear_its_own_notifications(engine: Engine, db_url: str) -> None:
    """Its writer wakes its waiters at the commit; the NOTIFY it sent for other processes, which
    comes back to it too, would wake them all again (a dispatcher round, a read per waiter)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("NOTIFY is PostgreSQL's")
    heard: list[Changes] = []
    engine.notifier.add_task_listener(heard.append)
    time.sleep(0.6)  # let the listener connect (it wakes everyone once when it has)
    heard.clear()
    engine.create_job(ALICE, JobCreate(job_type="noop", start=True))
    time.sleep(1.0)  # long enough for the NOTIFY to come back
    assert len(heard) == 1 and heard[0].tasks_ready


def test_a_sqlite_process_does_not_hear_its_own_commits(engine: Engine, db_url: str) -> None:
    """Its writer wakes its waiters at the commit; another process's commit is seen by the
    version of the store the writer's connection reads, which its own commits leave as it
    is (another connection's version, which they change, woke every waiter again)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("data_version is SQLite's")
    heard: list[Changes] = []
    engine.notifier.add_task_listener(heard.append)
    time.sleep(0.6)  # past the writer's first look
    heard.clear()
    for _ in range(3):
        engine.create_job(ALICE, JobCreate(job_type="noop", start=True))
        time.sleep(0.4)  # longer than the writer waits between two looks
    assert len(heard) == 3
    assert all(changes.tasks_ready and not changes.everything for changes in heard)


@pytest.fixture
def other(engine: Engine, db_url: str) -> Iterator[Engine]:
    """Another engine on the test's store: another process."""
    other = Engine(open_database(db_url), engine.settings)
    other.start()
    yield other
    other.close()
    other.db.dispose()


def hearing(engine: Engine) -> threading.Event:
    """An event set when ``engine``'s task listeners hear of a change, from now on."""
    heard = threading.Event()
    engine.notifier.add_task_listener(lambda changes: heard.set())
    # Let the listener connect (PostgreSQL; it wakes everyone once when it has) or the
    # writer take its first reading (SQLite).
    time.sleep(0.6)
    heard.clear()
    return heard


def test_change_in_another_engine_wakes_a_waiter(engine: Engine, other: Engine) -> None:
    job = engine.create_job(ALICE, JobCreate(start=True)).id
    threading.Timer(0.3, lambda: other.abort(ALICE, job)).start()

    async def wait() -> tuple[Phase, float]:
        started = time.monotonic()
        record = await engine.get_job_waiting(ALICE, job, wait=8)
        return record.phase, time.monotonic() - started

    phase, elapsed = asyncio.run(wait())
    assert phase == Phase.ABORTED
    assert elapsed < 3


def test_tasks_ready_in_another_engine_reach_its_listeners(engine: Engine, other: Engine) -> None:
    heard = hearing(engine)
    other.create_job(ALICE, JobCreate(job_type="noop", start=True))
    assert heard.wait(5)


def test_changes_reach_other_processes_after_their_announcing_connection_is_lost(
    engine: Engine, other: Engine, db_url: str
) -> None:
    """A process announces its changes on a connection of its own, after the commit; when
    that connection dies (a restart, a dropped link), the next announcement goes on a new one."""
    if not db_url.startswith("postgresql"):
        pytest.skip("NOTIFY is PostgreSQL's")
    heard = hearing(engine)
    other.create_job(ALICE, JobCreate(job_type="noop", start=True))
    assert heard.wait(5)
    ended = end_connections(engine.db, "application_name = 'jobdeck-notify'")
    assert ended >= 1  # the other engine's, at least
    heard.clear()
    other.create_job(ALICE, JobCreate(job_type="noop", start=True))
    assert heard.wait(5)


def test_a_wake_without_a_record_drops_an_older_one(engine: Engine) -> None:
    """A waiter given a record by one change and woken again by another that brought none
    (another process's change) reads the job again, rather than take the older record."""
    notifier = engine.notifier

    async def watch_twice() -> tuple[object, object]:
        with notifier.watch_job("j") as watch:
            notifier.wake(Changes(jobs={"j"}), {"j": "record one"})
            await watch.changed.wait()
            watch.changed.clear()
            first = watch.take_record()
            notifier.wake(Changes(jobs={"j"}), {"j": "record two"})
            notifier.wake(Changes.unknown())
            await watch.changed.wait()
            return first, watch.take_record()

    assert asyncio.run(watch_twice()) == ("record one", None)
