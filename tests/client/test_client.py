"""The Python client (sync and async) against a real server over real HTTP."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import Server, free_port
from sqlalchemy import select

from jobdeck.client import (
    AsyncClient,
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from jobdeck.client.config import api_base
from jobdeck.domain.phases import Phase
from jobdeck.domain.records import (
    CompleteRequest,
    JobRecord,
    JobSummary,
    LocalWorkers,
    LogEntry,
    ResultRef,
)
from jobdeck.engine.engine import Engine, LogLine, Principal
from jobdeck.store.schema import jobs
from jobdeck.worker.dispatcher import Dispatcher
from jobdeck.worker.pool import ProcessPool


class CountingTransport(httpx.HTTPTransport):
    """Counts the requests a client sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


@pytest.fixture
def client_as(server: Server) -> Iterator[Callable[..., Client]]:
    """Make a :class:`Client` acting as ``user``."""
    made: list[Client] = []

    def make(user: str, *, admin: bool = False, **kwargs: object) -> Client:
        client = Client(server.url, server.engine.create_token(user, admin=admin), **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def alice_client(client_as: Callable[..., Client]) -> Client:
    """A client acting as alice."""
    return client_as("alice")


def job_seq(engine: Engine, job_id: str) -> int:
    with engine.db.connect() as conn:
        return int(conn.execute(select(jobs.c.seq).where(jobs.c.id == job_id)).scalar_one())


def add_logs(engine: Engine, job_id: str, *messages: str) -> None:
    seq = job_seq(engine, job_id)
    now = datetime.now(UTC)
    engine.append_logs([LogLine(seq, 0, "info", now, message) for message in messages])
    engine.writer.run(lambda tx: None)  # the writer is serial: the lines are committed now


def later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` in ``seconds``, in a thread."""

    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_api_base_accepts_service_or_api_url() -> None:
    assert api_base("http://h:1") == "http://h:1/api/v1"
    assert api_base("http://h:1/api/v1/") == "http://h:1/api/v1"
    assert api_base("h:1") == "http://h:1/api/v1"


def test_create_get_typed_round_trip(alice_client: Client) -> None:
    job = alice_client.create(
        "sleep",
        parameters={"seconds": 0.5},
        json_parameters={"k": [1, 2]},
        name="first",
        priority=70,
        run_id="run-1",
    )
    assert isinstance(job, JobRecord)
    assert job.phase is Phase.PENDING and job.owner == "alice" and job.priority == 70
    assert job.parameters["seconds"].value == 0.5
    assert job.json_parameters == {"k": [1, 2]}
    assert alice_client.get(job.id) == job
    started = alice_client.create("noop", start=True)
    assert started.phase is Phase.QUEUED


def test_list_iterates_every_page_and_filters(
    alice_client: Client, client_as: Callable[..., Client]
) -> None:
    made = [alice_client.create(name=f"job-{i}").id for i in range(5)]
    queued = alice_client.create(name="queued", start=True).id
    client_as("bob").create(name="not alice's")
    listed = list(alice_client.list(page_size=2))
    assert all(isinstance(j, JobSummary) for j in listed)
    assert [j.id for j in listed] == [queued, *reversed(made)]
    assert [j.id for j in alice_client.list(phases=[Phase.QUEUED])] == [queued]
    assert [j.id for j in alice_client.list(phases=["PENDING"], page_size=1, limit=2)] == list(
        reversed(made)
    )[:2]


def test_run_abort_copy_delete(alice_client: Client) -> None:
    job = alice_client.create(parameters={"n": 3})
    assert alice_client.run(job.id).phase is Phase.QUEUED
    with pytest.raises(Conflict) as caught:
        alice_client.run(job.id)
    assert caught.value.code == "invalid_phase" and caught.value.status == 409
    assert "QUEUED" in caught.value.message
    assert alice_client.abort(job.id).phase is Phase.ABORTED
    copy = alice_client.copy(job.id)
    assert copy.phase is Phase.PENDING and copy.source_job_id == job.id
    assert copy.parameters == job.parameters
    alice_client.delete(job.id)
    with pytest.raises(NotFound):
        alice_client.get(job.id)


def test_wait_blocks_on_the_server_instead_of_polling(server: Server) -> None:
    transport = CountingTransport()
    token = server.engine.create_token("alice")
    with Client(server.url, token, transport=transport) as client:
        job = client.create(start=True)
        alice = Principal("alice")
        later(0.5, lambda: server.engine.start_external(alice, job.id, None))
        later(1.0, lambda: server.engine.complete_external(alice, job.id, _complete()))
        transport.requests.clear()
        began = time.monotonic()
        done = client.wait(job.id, timeout=20)
        took = time.monotonic() - began
    assert done.phase is Phase.COMPLETED
    assert [e.status for e in done.timeline] == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert 0.8 < took < 10
    # a GET, then one blocking GET per phase change (QUEUED → EXECUTING → COMPLETED)
    assert len(transport.requests) <= 4
    assert all(r.url.path.endswith(job.id) for r in transport.requests)


def _complete() -> CompleteRequest:
    return CompleteRequest(results=[ResultRef(id="out", url="https://example.org/out")])


def test_watch_yields_each_phase(alice_client: Client) -> None:
    job = alice_client.create(start=True)
    drivers = [
        later(0.3, lambda: alice_client.start(job.id)),
        later(0.6, lambda: alice_client.fail(job.id, ["it broke"])),
    ]
    phases = [r.phase for r in alice_client.watch(job.id, timeout=20, poll=5)]
    # The watch sees ERROR once it is committed, which can be before the fail call has read
    # its response: the client must not be closed under that call.
    for driver in drivers:
        driver.join(10)
    assert phases == [Phase.QUEUED, Phase.EXECUTING, Phase.ERROR]
    assert alice_client.get(job.id).errors[0].message == "it broke"


def test_wait_times_out(alice_client: Client) -> None:
    job = alice_client.create()
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        alice_client.wait(job.id, timeout=0.5, poll=0.2)
    assert time.monotonic() - began < 5
    assert "PENDING" in str(caught.value)


def test_wait_on_a_finished_job_returns_at_once(alice_client: Client) -> None:
    job = alice_client.create()
    alice_client.abort(job.id)
    began = time.monotonic()
    assert alice_client.wait(job.id, timeout=30).phase is Phase.ABORTED
    assert time.monotonic() - began < 2


def test_logs_read_and_follow(server: Server, alice_client: Client) -> None:
    job = alice_client.create(start=True)
    alice_client.start(job.id)
    add_logs(server.engine, job.id, "one", "two")
    lines = list(alice_client.logs(job.id))
    assert all(isinstance(line, LogEntry) for line in lines)
    assert [line.message for line in lines] == ["one", "two"]
    assert [line.message for line in alice_client.logs(job.id, offset=lines[0].offset)] == ["two"]

    def finish() -> None:
        add_logs(server.engine, job.id, "three")
        time.sleep(0.3)
        add_logs(server.engine, job.id, "four")
        alice_client.complete(job.id)

    finishing = later(0.3, finish)
    began = time.monotonic()
    followed = [line.message for line in alice_client.logs(job.id, follow=True, poll=0.2)]
    # The follow ends once the job is COMPLETED, which may be before the completing thread
    # has its response: let it have it before the client closes.
    finishing.join(10)
    assert followed == ["one", "two", "three", "four"]
    assert time.monotonic() - began < 10


def test_download_results(server: Server, alice_client: Client, tmp_path: Path) -> None:
    job = alice_client.create()
    alice = Principal("alice")
    server.engine.put_result_document(alice, job.id, {"answer": 42})
    server.engine.put_result_document(alice, job.id, [1, 2], name="other.json")
    refs = alice_client.results(job.id)
    assert sorted(r.id for r in refs) == ["other.json", "result.json"]
    saved = alice_client.download_results(job.id, tmp_path / "out")
    assert sorted(p.name for p in saved) == ["other.json", "result.json"]
    assert (tmp_path / "out" / "result.json").read_text() == '{"answer": 42}'
    assert not list((tmp_path / "out").glob("*.part"))
    only = alice_client.download_results(job.id, tmp_path / "one", result_ids=["other.json"])
    assert [p.name for p in only] == ["other.json"]
    with pytest.raises(NotFound):
        alice_client.download_results(job.id, tmp_path / "none", result_ids=["missing"])


def test_errors_carry_the_servers_code_and_message(
    server: Server, alice_client: Client, client_as: Callable[..., Client]
) -> None:
    with pytest.raises(NotFound) as caught:
        alice_client.get("no-such-job")
    assert caught.value.code == "not_found" and caught.value.status == 404
    assert "no-such-job" in caught.value.message
    job = alice_client.create()
    with pytest.raises(NotFound):
        client_as("bob").get(job.id)  # owners see only their own jobs
    with Client(server.url, "jd_wrong") as stranger, pytest.raises(Unauthorized) as bad:
        stranger.get(job.id)
    assert bad.value.code == "unauthorized" and bad.value.status == 401
    with Client(server.url) as anonymous, pytest.raises(Unauthorized):
        list(anonymous.list())
    with pytest.raises(ValidationFailed) as invalid:
        alice_client.create("no-such-type")
    assert invalid.value.status == 422 and "no-such-type" in invalid.value.message
    with pytest.raises(ValidationFailed) as local:
        alice_client.create(priority=500)  # refused before sending
    assert "priority" in local.value.message and local.value.status is None
    with pytest.raises(Conflict):
        alice_client.start(job.id)  # PENDING cannot start: it must be queued first


def test_odd_job_ids_are_asked_about_as_ids(alice_client: Client) -> None:
    # "." and ".." were dot segments that the URL resolved away: GET /jobs/. asked for the
    # list's address and got its redirect ("HTTP 307"), POST /jobs/../abort asked for
    # /abort; an empty id asked for the list's address too. (An id with a "/" is still
    # routed by the server as two segments: Starlette routes the decoded path.)
    for odd in (".", "..", "?x", "#x", "%2F", " "):
        for call in (alice_client.get, alice_client.abort, alice_client.delete):
            with pytest.raises(NotFound) as caught:
                call(odd)
            assert caught.value.status == 404 and caught.value.message == f"no job {odd}"
    for call in (alice_client.get, alice_client.abort, alice_client.delete):
        with pytest.raises(NotFound) as empty:
            call("")
        assert empty.value.status is None  # refused before asking


def test_server_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "token", timeout=2) as client, pytest.raises(ServiceUnavailable) as caught:
        client.get("x")
    assert caught.value is not None and isinstance(caught.value, ConnectionFailed)
    assert f"cannot reach jobdeck at {url}/api/v1" in str(caught.value)


def test_url_and_token_from_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBDECK_URL", server.url)
    monkeypatch.setenv("JOBDECK_TOKEN", server.engine.create_token("carol"))
    with Client() as client:
        assert client.url == server.url + "/api/v1"
        assert client.create().owner == "carol"
        assert client.health()["status"] == "ok"


def test_admin_creates_tokens(client_as: Callable[..., Client], server: Server) -> None:
    admin = client_as("root", admin=True)
    created = admin.create_token("dave")
    with Client(server.url, created.token) as dave:
        assert dave.create().owner == "dave"
    assert admin.stats().phases == {"PENDING": 1}


def test_async_client(server: Server, tmp_path: Path) -> None:
    token = server.engine.create_token("alice")

    async def scenario() -> None:
        async with AsyncClient(server.url, token) as client:
            job = await client.create(name="async", start=True, json_parameters=[1])
            assert isinstance(job, JobRecord) and job.phase is Phase.QUEUED
            assert (await client.get(job.id)).name == "async"
            ids = [j.id async for j in client.list(page_size=1)]
            assert ids == [job.id]

            async def drive() -> None:
                await asyncio.sleep(0.3)
                await client.start(job.id)
                await asyncio.sleep(0.3)
                await client.complete(job.id)

            driver = asyncio.create_task(drive())
            phases = [r.phase async for r in client.watch(job.id, timeout=20, poll=5)]
            await driver
            assert phases == [Phase.QUEUED, Phase.EXECUTING, Phase.COMPLETED]
            assert (await client.wait(job.id, timeout=5)).phase is Phase.COMPLETED
            server.engine.put_result_document(Principal("alice"), job.id, {"x": 1})
            saved = await client.download_results(job.id, tmp_path)
            assert saved == [tmp_path.resolve() / "result.json"]
            assert [r.id for r in await client.results(job.id)] == ["result.json"]
            assert [line async for line in client.logs(job.id)] == []
            other = await client.copy(job.id)
            assert (await client.abort(other.id)).phase is Phase.ABORTED
            await client.delete(other.id)
            with pytest.raises(NotFound) as caught:
                await client.get(other.id)
            assert caught.value.code == "not_found"
            with pytest.raises(Conflict):
                await client.run(job.id)
        async with AsyncClient(server.url, "jd_wrong") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.get(job.id)
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", token, timeout=2) as down:
            with pytest.raises(ServiceUnavailable):
                await down.get(job.id)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_both_clients_resize_the_servers_local_workers(engine: Engine) -> None:
    dispatcher = Dispatcher(engine, ProcessPool(0, engine.job_types), worker_id="local")
    dispatcher.start()
    server = Server(engine, dispatcher)
    server.start()
    try:
        admin = engine.create_token("root", admin=True)
        with Client(server.url, admin) as client:
            assert client.workers() == LocalWorkers(worker_id="local", processes=0, held_tasks=0)
            assert client.set_workers(1).processes == 1
            job = client.create(job_type="noop", start=True)
            assert client.wait(job.id, timeout=20).phase is Phase.COMPLETED
            # Submitted and run in one request.
            ran = client.create(job_type="noop", start=True, wait=20)
            assert ran.phase is Phase.COMPLETED
            with pytest.raises(ValidationFailed):
                client.set_workers(-1)

        async def scenario() -> None:
            async with AsyncClient(server.url, admin) as client:
                ran = await client.create(job_type="noop", start=True, wait=20)
                assert ran.phase is Phase.COMPLETED
                assert (await client.set_workers(0)).processes == 0
                assert (await client.workers()).processes == 0
            async with AsyncClient(server.url, engine.create_token("alice")) as alice:
                with pytest.raises(Forbidden):
                    await alice.workers()

        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        server.stop()
        dispatcher.stop(timeout=5)
