"""Fixtures that start real things: a SQLite file, a PostgreSQL database, an HTTP server.

PostgreSQL tests run where ``JOBDECK_TEST_PG`` names a server (``.ci/run`` sets it); each test
gets a database of its own, created and dropped here.
"""

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine as Database

from jobdeck.doors.native.app import create_asgi
from jobdeck.engine.engine import Engine
from jobdeck.engine.settings import EngineSettings
from jobdeck.store.database import admin_engine, database_url, open_database, upgrade

PG_URL = os.environ.get("JOBDECK_TEST_PG")
DATABASES = ["sqlite", "postgresql"]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (state, parent, group, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        state = _stat(pid)[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, before or while it was read
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(_stat(int(stat.parent.name))[1])
        except OSError:  # gone meanwhile
            continue
        if parent == pid:
            kids.append(int(stat.parent.name))
    return kids


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The URL (postgresql://) of a fresh PostgreSQL database, dropped afterwards."""
    if not PG_URL:
        pytest.skip("JOBDECK_TEST_PG is not set")
    name = f"jobdeck_test_{uuid.uuid4().hex[:12]}"
    server = database_url(db=PG_URL, data_dir=Path())
    admin = admin_engine(server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def end_connections(db: Database, where: str, params: dict[str, Any] | None = None) -> int:
    """Have the PostgreSQL server end the backends ``where`` selects in ``pg_stat_activity``
    (as a restart or a dropped link would), other than the caller's own, and wait until they
    are gone; how many it ended."""
    selected = f"FROM pg_stat_activity WHERE ({where}) AND pid <> pg_backend_pid()"
    # Autocommit: a transaction would keep seeing the activity of its first look.
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        ended = admin.exec_driver_sql(
            f"SELECT count(pg_terminate_backend(pid)) {selected}", params or {}
        ).scalar_one()
        deadline = time.monotonic() + 10
        while admin.exec_driver_sql(f"SELECT count(*) {selected}", params or {}).scalar_one():
            assert time.monotonic() < deadline, "the server did not end the connections"
            time.sleep(0.05)
    return int(ended)


@pytest.fixture
def unreachable_pg() -> Iterator[Database]:
    """A PostgreSQL store nobody listens for (PostgreSQL down): every connection is refused."""
    db = open_database(
        database_url(db=f"postgresql://nobody@127.0.0.1:{free_port()}/none", data_dir=Path())
    )
    yield db
    db.dispose()


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL of an empty database, once per kind of database."""
    if request.param == "sqlite":
        return database_url(db=None, data_dir=tmp_path / "data")
    pg = request.getfixturevalue("pg_database")
    return database_url(db=pg, data_dir=tmp_path)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    """The migrated database."""
    db = open_database(db_url)
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> EngineSettings:
    """Engine settings for tests: fast retries, results under the test's directory."""
    return EngineSettings(
        results_dir=tmp_path / "results",
        retry_base_delay=0.05,
        retry_max_delay=0.2,
        lease_seconds=5,
        wait_cap=10,
    )


@pytest.fixture
def engine(database: Database, settings: EngineSettings) -> Iterator[Engine]:
    """A started engine over the test's database."""
    engine = Engine(database, settings)
    engine.start()
    yield engine
    engine.close()


class Server:
    """A real uvicorn server on a loopback port, in a thread."""

    def __init__(self, engine: Engine, dispatcher: Any = None) -> None:
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_asgi(engine, dispatcher=dispatcher),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def server(engine: Engine) -> Iterator[Server]:
    """The native API over real HTTP."""
    server = Server(engine)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client_for(server: Server) -> Iterator[Callable[..., httpx.Client]]:
    """Make an httpx client that acts as ``user`` (an admin with ``admin=True``)."""
    clients: list[httpx.Client] = []

    def make(user: str, *, admin: bool = False) -> httpx.Client:
        token = server.engine.create_token(user, admin=admin)
        client = httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def alice(client_for: Callable[..., httpx.Client]) -> httpx.Client:
    """A client acting as the user alice."""
    return client_for("alice")
