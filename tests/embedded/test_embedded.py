"""The embedded job API (no server) on SQLite and PostgreSQL, and its jobs seen over HTTP."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server

from jobdeck import embedded
from jobdeck.client import Client
from jobdeck.client import NotFound as ClientNotFound
from jobdeck.domain.errors import Conflict, InvalidTransition, NotFound
from jobdeck.domain.phases import Phase
from jobdeck.domain.records import JobCreate
from jobdeck.embedded import JobStore
from jobdeck.engine.engine import Principal


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[JobStore]:
    """An embedded store over the test's database (results under tmp_path/results)."""
    with JobStore(data_dir=tmp_path, db=db_url) as store:
        yield store


def timeline(store: JobStore, job_id: str) -> list[str]:
    job = store.get_job(job_id)
    assert job is not None
    return [entry.status for entry in job.timeline]


def test_lifecycle_step_by_step(store: JobStore) -> None:
    job_id = store.create_job("first", "alice", request={"x": [1, 2]}, result={"r": 0})
    job, state = store.find_job(job_id)
    assert job is not None and state == "idle"
    assert job.phase is Phase.PENDING and job.owner == "alice" and job.name == "first"
    assert job.json_parameters == {"x": [1, 2]} and job.job_type is None
    assert store.get_job(job_id, state="idle") == job
    assert store.get_job(job_id, state="pending") is None
    assert store.get_job_results(job_id) == {"r": 0}

    assert store.set_job_pending(job_id).phase is Phase.QUEUED
    assert [j.id for j in store.get_pending_jobs()] == [job_id]
    running = store.set_job_running(job_id, {"step": 1})
    assert running.phase is Phase.EXECUTING and running.start_time is not None
    assert store.get_job_results(job_id) == {"step": 1}
    assert [j.id for j in store.get_running_jobs()] == [job_id]
    finished = store.set_job_finished(job_id, {"done": True})
    assert finished.phase is Phase.COMPLETED and store.find_job(job_id)[1] == "finished"
    assert store.get_job_results(job_id) == {"done": True}
    assert [r.id for r in finished.results] == ["result.json"]
    assert timeline(store, job_id) == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert [j.id for j in store.get_finished_jobs()] == [job_id]

    store.update_job_result(job_id, [3])  # in any state
    assert store.get_job_results(job_id) == [3]
    store.delete_job(job_id)
    assert store.find_job(job_id) == (None, None)
    assert store.get_job(job_id) is None
    with pytest.raises(NotFound):
        store.delete_job(job_id)
    with pytest.raises(NotFound):
        store.set_job_pending(job_id)
    with pytest.raises(NotFound):
        store.get_job_results(job_id)


def test_moves_of_several_steps_walk_the_path(store: JobStore) -> None:
    job_id = store.create_job("jump", "alice")
    assert store.get_job_results(job_id) is None
    done = store.set_job(job_id, {"all": "at once"}, "finished")
    assert done.phase is Phase.COMPLETED
    assert timeline(store, job_id) == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert store.get_job_results(job_id) == {"all": "at once"}
    assert store.set_job(job_id, None, "finished").phase is Phase.COMPLETED  # no move

    failed_id = store.create_job("bad", "alice")
    store.set_job_running(failed_id)
    failed = store.set_job(failed_id, {"partial": 1}, "error", message="disk full")
    assert failed.phase is Phase.ERROR and failed.errors[-1].message == "disk full"
    assert timeline(store, failed_id) == ["PENDING", "QUEUED", "EXECUTING", "ERROR"]
    assert store.get_job_results(failed_id) == {"partial": 1}
    idle_failed = store.set_job_error(store.create_job("early", "bob"))
    assert idle_failed.phase is Phase.ERROR and idle_failed.errors[-1].message == "failed"


def test_forbidden_moves_and_bad_state_names(store: JobStore) -> None:
    done = store.create_job("done", "alice")
    store.set_job_finished(done)
    with pytest.raises(InvalidTransition, match=r"finished .* cannot move to pending"):
        store.set_job_pending(done)
    with pytest.raises(InvalidTransition):
        store.set_job(done, None, "idle")
    with pytest.raises(InvalidTransition):
        store.set_job(done, None, "error")
    failed = store.create_job("failed", "alice")
    store.set_job_error(failed)
    with pytest.raises(InvalidTransition, match="cannot move to finished"):
        store.set_job_finished(failed)
    assert store.get_job_results(done) is None  # nothing was written by the refused moves
    with pytest.raises(ValueError, match="valid states: idle, pending, running, finished, error"):
        store.set_job(done, None, "complete")
    with pytest.raises(ValueError, match="'RUNNING'"):
        store.get_job(done, state="RUNNING")
    with pytest.raises(ValueError):
        store.get_jobs("nope")


def test_lists_by_state_oldest_first(store: JobStore) -> None:
    ids = [store.create_job(f"job-{i}", "alice") for i in range(4)]
    store.set_job_pending(ids[1])
    store.set_job_running(ids[2])
    store.engine.abort(Principal("alice"), ids[3])  # ABORTED is the simple API's error
    assert [j.id for j in store.get_jobs()] == ids
    assert [j.id for j in store.get_jobs("idle")] == [ids[0]]
    assert [j.id for j in store.get_idle_jobs()] == [ids[0]]
    assert [j.id for j in store.get_pending_jobs()] == [ids[1]]
    assert [j.id for j in store.get_running_jobs()] == [ids[2]]
    assert [j.id for j in store.get_error_jobs()] == [ids[3]]
    assert store.find_job(ids[3])[1] == "error"
    assert store.get_finished_jobs() == []


def test_jobs_with_a_type_are_moved_by_workers(store: JobStore) -> None:
    typed = store.engine.create_job(Principal("alice"), JobCreate(job_type="noop"))
    with pytest.raises(Conflict, match="noop"):
        store.set_job_finished(typed.id)
    assert store.find_job(typed.id)[1] == "idle"  # refused before any step
    assert store.set_job_pending(typed.id).phase is Phase.QUEUED  # queuing it is allowed
    with pytest.raises(Conflict):
        store.set_job_running(typed.id)


def test_a_result_json_cannot_hold_is_refused_before_the_job_is_made(store: JobStore) -> None:
    # The job was made, and then the TypeError raised: the caller saw a failure and had a job.
    with pytest.raises(TypeError):
        store.create_job("report", "alice", request={"a": 1}, result={"when": object()})
    with pytest.raises(TypeError):
        store.create_job("report", "alice", request={"when": object()})
    assert store.get_jobs() == []


def test_job_schema() -> None:
    schema = embedded.get_job_schema()
    assert schema["title"] == "JobRecord"
    assert {"id", "phase", "json_parameters", "results"} <= set(schema["properties"])


def test_module_functions_use_a_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBDECK_DATA_DIR", str(tmp_path / "from-env"))
    monkeypatch.delenv("JOBDECK_DB", raising=False)
    try:
        job_id = embedded.create_job("simple", "carol", {"in": 1}, {"out": 0})
        assert (tmp_path / "from-env" / "jobdeck.db").is_file()
        job, state = embedded.find_job(job_id)
        assert job is not None and state == "idle" and job.owner == "carol"
        embedded.set_job_pending(job_id)
        embedded.set_job_running(job_id, {"out": 1})
        assert [j.id for j in embedded.get_running_jobs()] == [job_id]
        embedded.set_job_finished(job_id, {"out": 2})
        assert embedded.get_job(job_id, state="finished") is not None
        assert [j.id for j in embedded.get_finished_jobs()] == [job_id]
        assert embedded.get_pending_jobs() == []
        embedded.update_job_result(job_id, {"out": 3})
        assert embedded.get_job_results(job_id) == {"out": 3}
        assert embedded.set_job(job_id, None, "finished").phase is Phase.COMPLETED
        assert [j.id for j in embedded.get_jobs()] == [job_id]
        other = embedded.configure(tmp_path / "other")
        assert embedded.default_store() is other
        assert embedded.get_jobs() == []
        embedded.delete_job(embedded.create_job("gone", "carol"))
        assert embedded.get_jobs() == []
    finally:
        embedded.close()


def test_embedded_jobs_are_visible_through_the_http_api(
    server: Server, db_url: str, tmp_path: Path
) -> None:
    # the server's engine runs on the same database, with results under tmp_path/results
    token = server.engine.create_token("alice")
    with JobStore(data_dir=tmp_path, db=db_url) as store, Client(server.url, token) as client:
        job_id = store.create_job("shared", "alice", request={"n": 1})
        over_http = client.get(job_id)
        assert over_http.name == "shared" and over_http.json_parameters == {"n": 1}
        assert over_http.phase is Phase.PENDING
        store.set_job_finished(job_id, {"answer": 42})
        done = client.wait(job_id, timeout=10)
        assert done.phase is Phase.COMPLETED
        assert [e.status for e in done.timeline] == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
        saved = client.download_results(job_id, tmp_path / "download")
        assert saved[0].read_text() == '{"answer": 42}'

        made_over_http = client.create(name="from http", start=True)
        job, state = store.find_job(made_over_http.id)
        assert job is not None and state == "pending" and job.owner == "alice"
        store.set_job_running(made_over_http.id)
        assert client.get(made_over_http.id).phase is Phase.EXECUTING
        store.delete_job(made_over_http.id)
        with pytest.raises(ClientNotFound):
            client.get(made_over_http.id)
