"""The native API over real HTTP, on SQLite and PostgreSQL."""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import Server, end_connections
from sqlalchemy import Engine as Database

from jobdeck.engine.engine import Engine
from jobdeck.engine.settings import EngineSettings


def create(client: httpx.Client, **body: object) -> dict:
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_get_round_trip(alice: httpx.Client) -> None:
    response = alice.post(
        "/jobs",
        json={
            "name": "first",
            "parameters": {"n": 3, "x": 1.5, "s": "text", "p": {"type": "path", "value": "/a"}},
            "json_parameters": {"anything": [1, 2]},
            "run_id": "run-1",
        },
    )
    assert response.status_code == 201
    job = response.json()
    assert response.headers["Location"] == f"{alice.base_url}jobs/{job['id']}"  # absolute
    fetched = alice.get(response.headers["Location"]).json()
    assert fetched == job
    assert job["phase"] == "PENDING" and job["status"] == "waiting"
    assert job["owner"] == "alice" and job["created_by"] == "alice"
    assert job["parameters"] == {
        "n": {"type": "int", "value": 3},
        "x": {"type": "float", "value": 1.5},
        "s": {"type": "string", "value": "text"},
        "p": {"type": "path", "value": "/a"},
    }
    assert job["json_parameters"] == {"anything": [1, 2]}
    assert job["creation_time"].endswith("Z")
    assert job["timeline"][0]["status"] == "PENDING" and job["timeline"][0]["source"] == "api"
    assert job["execution"] == {"progress": {"tasks": {"value": 0, "max_value": 0}}}
    assert job["queue_position"] is None
    # destruction defaults to a week ahead
    destruction = datetime.fromisoformat(job["destruction_time"].replace("Z", "+00:00"))
    assert timedelta(days=6) < destruction - datetime.now(UTC) < timedelta(days=8)


def test_no_token_and_bad_token(server: Server) -> None:
    with httpx.Client(base_url=server.url + "/api/v1") as anonymous:
        response = anonymous.get("/jobs")
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        response = anonymous.get("/jobs", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        response = anonymous.get("/jobs", headers={"Authorization": "Basic abc"})
        assert response.status_code == 401
        assert "Bearer <token>" in response.json()["message"]


def test_owner_isolation(client_for: Callable[..., httpx.Client]) -> None:
    alice, bob, admin = client_for("alice"), client_for("bob"), client_for("root", admin=True)
    job = create(alice, name="mine")
    assert bob.get(f"/jobs/{job['id']}").status_code == 404
    assert bob.post(f"/jobs/{job['id']}/abort").status_code == 404
    assert bob.delete(f"/jobs/{job['id']}").status_code == 404
    assert bob.get("/jobs").json()["jobs"] == []
    assert bob.get("/jobs", params={"owner": "alice"}).status_code == 403
    assert admin.get(f"/jobs/{job['id']}").status_code == 200
    assert [j["id"] for j in admin.get("/jobs", params={"owner": "alice"}).json()["jobs"]] == [
        job["id"]
    ]
    assert bob.post("/tokens", json={"user": "eve"}).status_code == 403
    created = admin.post("/tokens", json={"user": "eve"}).json()
    with httpx.Client(
        base_url=str(alice.base_url), headers={"Authorization": f"Bearer {created['token']}"}
    ) as eve:
        assert eve.get("/jobs").status_code == 200


def test_client_transitions(alice: httpx.Client) -> None:
    job = create(alice)
    queued = alice.post(f"/jobs/{job['id']}/run").json()
    assert queued["phase"] == "QUEUED"
    assert queued["queue_position"] == 0
    # run twice: QUEUED → QUEUED is refused, naming the phase
    again = alice.post(f"/jobs/{job['id']}/run")
    assert again.status_code == 409
    assert "QUEUED" in again.json()["message"]
    aborted = alice.post(f"/jobs/{job['id']}/abort").json()
    assert aborted["phase"] == "ABORTED" and aborted["status"] == "cancelled"
    assert aborted["end_time"] is not None
    assert aborted["errors"][0]["error_code"] == "aborted"
    assert [e["status"] for e in aborted["timeline"]] == ["PENDING", "QUEUED", "ABORTED"]
    # abort of a finished job is a no-op
    assert alice.post(f"/jobs/{job['id']}/abort").json()["timeline"] == aborted["timeline"]
    assert alice.post(f"/jobs/{job['id']}/run").status_code == 409
    # a PENDING job can be aborted too
    pending = create(alice)
    assert alice.post(f"/jobs/{pending['id']}/abort").json()["phase"] == "ABORTED"


def test_external_job_lifecycle(alice: httpx.Client) -> None:
    job = create(alice, name="wobbly-style")
    # start before queue is refused
    assert alice.post(f"/jobs/{job['id']}/start", json={}).status_code == 409
    queued = alice.post(f"/jobs/{job['id']}/queue", json={"message_id": "m-1"}).json()
    assert queued["phase"] == "QUEUED" and queued["message_id"] == "m-1"
    started = alice.post(
        f"/jobs/{job['id']}/start", json={"start_time": "2026-01-02T03:04:05.123456Z"}
    ).json()
    assert started["phase"] == "EXECUTING"
    assert started["start_time"] == "2026-01-02T03:04:05.123456Z"
    done = alice.post(
        f"/jobs/{job['id']}/complete",
        json={"results": [{"id": "out", "url": "https://example.org/out", "size": 3}]},
    ).json()
    assert done["phase"] == "COMPLETED" and done["status"] == "completed"
    assert done["results"] == [
        {"id": "out", "url": "https://example.org/out", "size": 3, "mime_type": None}
    ]
    assert [e["status"] for e in done["timeline"]] == [
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "COMPLETED",
    ]
    assert alice.post(f"/jobs/{job['id']}/complete", json={}).status_code == 409
    redirect = alice.get(f"/jobs/{job['id']}/results/out", follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "https://example.org/out"


def test_external_job_failure_and_abort_race(alice: httpx.Client) -> None:
    job = create(alice, start=True)
    failed = alice.post(
        f"/jobs/{job['id']}/fail",
        json={"errors": [{"message": "boom", "error_code": "E1", "type": "transient"}]},
    ).json()
    assert failed["phase"] == "ERROR" and failed["status"] == "failed"
    assert failed["errors"][0]["message"] == "boom"
    assert failed["errors"][0]["type"] == "transient"
    # abort racing completion: ABORTED stays, results are kept
    racing = create(alice, start=True)
    alice.post(f"/jobs/{racing['id']}/start", json={})
    alice.post(f"/jobs/{racing['id']}/abort")
    late = alice.post(
        f"/jobs/{racing['id']}/complete", json={"results": [{"id": "r", "url": "https://x/r"}]}
    ).json()
    assert late["phase"] == "ABORTED"
    assert [r["id"] for r in late["results"]] == ["r"]


def test_typed_job_cannot_be_driven_externally(alice: httpx.Client) -> None:
    job = create(alice, job_type="noop", start=True)
    response = alice.post(f"/jobs/{job['id']}/start", json={})
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


def test_patch_parameters_only_while_pending(alice: httpx.Client) -> None:
    job = create(alice, job_type="sleep", parameters={"seconds": 1})
    changed = alice.patch(
        f"/jobs/{job['id']}", json={"parameters": {"seconds": "2.5"}, "priority": 90}
    ).json()
    assert changed["parameters"]["seconds"] == {"type": "float", "value": 2.5}
    assert changed["priority"] == 90
    bad = alice.patch(f"/jobs/{job['id']}", json={"parameters": {"seconds": "soon"}})
    assert bad.status_code == 422
    alice.post(f"/jobs/{job['id']}/run")
    locked = alice.patch(f"/jobs/{job['id']}", json={"parameters": {"seconds": 3}})
    assert locked.status_code == 409
    assert "PENDING" in locked.json()["message"]
    assert alice.patch(f"/jobs/{job['id']}", json={"name": "renamed"}).json()["name"] == "renamed"


def test_job_types_validated(alice: httpx.Client) -> None:
    unknown = alice.post("/jobs", json={"job_type": "nope"})
    assert unknown.status_code == 422
    assert "noop" in unknown.json()["message"] and "sleep" in unknown.json()["message"]
    wrong = alice.post("/jobs", json={"job_type": "sleep", "parameters": {"minutes": 1}})
    assert wrong.status_code == 422
    assert "minutes" in wrong.json()["message"]
    types = {t["name"]: t for t in alice.get("/job-types").json()}
    assert {"noop", "sleep", "echo", "fail"} <= set(types)
    assert types["sleep"]["execution_duration"] == 0
    assert types["sleep"]["max_log_bytes"] == 16 * 2**20


def test_bad_input_is_a_clear_4xx(alice: httpx.Client, server: Server) -> None:
    malformed = alice.post(
        "/jobs", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["code"] == "malformed_json"
    wrong_type = alice.post("/jobs", json={"priority": "high"})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["code"] == "validation_failed"
    assert "priority" in wrong_type.json()["message"]
    assert alice.post("/jobs", json={"priority": 101}).status_code == 422
    assert alice.post("/jobs", json={"surprise": 1}).status_code == 422
    assert alice.post("/jobs", json={"parameters": {"b": True}}).status_code == 422
    assert alice.post("/jobs", json={"parameters": {"n": [1]}}).status_code == 422
    assert alice.post("/jobs", json=[1, 2]).status_code == 422
    assert alice.get("/jobs", params={"phase": "SLEEPING"}).status_code == 422
    assert alice.get("/jobs", params={"cursor": "abc"}).status_code == 422
    assert alice.get("/jobs", params={"limit": 0}).status_code == 422
    assert alice.get("/jobs/no-such-job").status_code == 404
    assert alice.get("/jobs/x/logs", params={"level": "loud"}).status_code in (404, 422)
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert alice.post("/jobs", json={"destruction_time": past}).status_code == 422
    huge = alice.post(
        "/jobs",
        content=b'{"name": "' + b"x" * (40 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and huge.json()["code"] == "payload_too_large"
    assert alice.post("/jobs", json={"name": "x" * 300}).status_code == 422
    unknown_route = alice.get("/nothing-here")
    assert unknown_route.status_code == 404 and unknown_route.json()["code"] == "not_found"


def test_destruction_time_is_clamped(alice: httpx.Client) -> None:
    far = (datetime.now(UTC) + timedelta(days=3650)).isoformat()
    job = create(alice, destruction_time=far)
    destruction = datetime.fromisoformat(job["destruction_time"].replace("Z", "+00:00"))
    assert destruction - datetime.now(UTC) < timedelta(days=31)


def test_idempotency_key(alice: httpx.Client) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    first = alice.post("/jobs", json={"name": "once"}, headers=headers)
    second = alice.post("/jobs", json={"name": "once"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    other = alice.post("/jobs", json={"name": "once"}, headers={"Idempotency-Key": "other"})
    assert other.json()["id"] != first.json()["id"]
    assert len(alice.get("/jobs").json()["jobs"]) == 2


def test_batch_create_and_pagination(alice: httpx.Client) -> None:
    response = alice.post(
        "/jobs/batch", json={"jobs": [{"name": f"j{i}", "priority": i % 100} for i in range(25)]}
    )
    assert response.status_code == 201
    created = response.json()["jobs"]
    assert len(created) == 25 and all(j["phase"] == "PENDING" for j in created)
    seen: list[str] = []
    url: str | None = "/jobs?limit=10"
    pages = 0
    while url:
        page = alice.get(url)
        body = page.json()
        seen += [j["id"] for j in body["jobs"]]
        link = page.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
        pages += 1
        assert (body["next_cursor"] is None) == (link is None)
    assert pages == 3
    assert seen == [j["id"] for j in reversed(created)]  # newest first
    assert alice.post("/jobs/batch", json={"jobs": []}).status_code == 422
    # one bad job refuses the whole batch, and nothing is created
    bad = alice.post("/jobs/batch", json={"jobs": [{"name": "ok"}, {"job_type": "nope"}]})
    assert bad.status_code == 422
    assert len(seen) == 25 == len(alice.get("/jobs", params={"limit": 100}).json()["jobs"])


def test_list_filters(alice: httpx.Client) -> None:
    a = create(alice, run_id="r1")
    b = create(alice, run_id="r2", start=True)
    c = create(alice, job_type="noop")
    ids = lambda **p: [j["id"] for j in alice.get("/jobs", params=p).json()["jobs"]]  # noqa: E731
    assert ids(run_id="r1") == [a["id"]]
    assert ids(phase="QUEUED") == [b["id"]]
    assert ids(phase=["QUEUED", "PENDING"]) == [c["id"], b["id"], a["id"]]
    assert ids(job_type="noop") == [c["id"]]
    assert ids(status="waiting") == [c["id"], b["id"], a["id"]]
    assert ids(after=a["creation_time"]) == [c["id"], b["id"]]
    assert ids(before=b["creation_time"]) == [a["id"]]


def test_queue_position_follows_priority(alice: httpx.Client) -> None:
    low = create(alice, priority=10, start=True)
    mid1 = create(alice, priority=50, start=True)
    mid2 = create(alice, priority=50, start=True)
    high = create(alice, priority=90, start=True)
    position = lambda j: alice.get(f"/jobs/{j['id']}").json()["queue_position"]  # noqa: E731
    assert [position(j) for j in (high, mid1, mid2, low)] == [0, 1, 2, 3]


def test_copy_and_delete(alice: httpx.Client) -> None:
    job = create(alice, job_type="echo", parameters={"message": "hi"}, priority=70)
    response = alice.post(f"/jobs/{job['id']}/copy")
    assert response.status_code == 201
    copy = response.json()
    assert copy["id"] != job["id"] and copy["source_job_id"] == job["id"]
    assert copy["parameters"] == job["parameters"] and copy["priority"] == 70
    assert copy["phase"] == "PENDING"
    assert alice.delete(f"/jobs/{job['id']}").status_code == 204
    assert alice.get(f"/jobs/{job['id']}").status_code == 404
    assert alice.delete(f"/jobs/{job['id']}").status_code == 404


def test_messages_and_timeline(alice: httpx.Client) -> None:
    job = create(alice)
    alice.post(f"/jobs/{job['id']}/messages", json={"message": "hello", "level": "warning"})
    record = alice.get(f"/jobs/{job['id']}").json()
    assert record["messages"][0]["message"] == "hello"
    assert record["messages"][0]["source"] == "alice"
    timeline = alice.get(f"/jobs/{job['id']}/timeline").json()
    assert timeline == record["timeline"]


def test_blocking_get_returns_on_change(alice: httpx.Client) -> None:
    job = create(alice, start=True)
    aborting = threading.Timer(0.5, lambda: alice.post(f"/jobs/{job['id']}/abort"))
    aborting.start()
    started = time.monotonic()
    record = alice.get(f"/jobs/{job['id']}", params={"wait": 8}).json()
    elapsed = time.monotonic() - started
    aborting.join()  # its response, too, is read before the client closes
    assert record["phase"] == "ABORTED"
    assert 0.3 < elapsed < 5


def test_blocking_get_waits_through_changes_that_keep_the_phase(alice: httpx.Client) -> None:
    job = create(alice, start=True)

    def note_then_abort() -> None:
        alice.post(f"/jobs/{job['id']}/messages", json={"message": "still queued"})
        time.sleep(0.5)
        alice.post(f"/jobs/{job['id']}/abort")

    driver = threading.Timer(0.3, note_then_abort)
    driver.start()
    started = time.monotonic()
    record = alice.get(f"/jobs/{job['id']}", params={"wait": 8}).json()
    elapsed = time.monotonic() - started
    driver.join()
    assert record["phase"] == "ABORTED"
    assert record["messages"][0]["message"] == "still queued"
    assert 0.7 < elapsed < 5


def test_blocking_get_times_out_and_skips_final_jobs(alice: httpx.Client) -> None:
    job = create(alice, start=True)
    started = time.monotonic()
    assert alice.get(f"/jobs/{job['id']}", params={"wait": 1}).json()["phase"] == "QUEUED"
    assert 0.9 < time.monotonic() - started < 4
    alice.post(f"/jobs/{job['id']}/abort")
    started = time.monotonic()
    assert alice.get(f"/jobs/{job['id']}", params={"wait": 5}).json()["phase"] == "ABORTED"
    assert time.monotonic() - started < 1


def test_create_and_wait_answers_once_the_job_has_run(alice: httpx.Client) -> None:
    def drive() -> None:
        job_id = alice.get("/jobs").json()["jobs"][0]["id"]
        alice.post(f"/jobs/{job_id}/start", json={})  # EXECUTING: still under way
        time.sleep(0.4)
        alice.post(f"/jobs/{job_id}/complete", json={})

    driver = threading.Timer(0.4, drive)
    driver.start()
    started = time.monotonic()
    response = alice.post("/jobs", json={"start": True}, params={"wait": 8})
    elapsed = time.monotonic() - started
    driver.join()
    assert response.status_code == 201, response.text
    record = response.json()
    assert response.headers["Location"].endswith(f"/jobs/{record['id']}")
    assert record["phase"] == "COMPLETED"
    assert [e["status"] for e in record["timeline"]] == [
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "COMPLETED",
    ]
    assert 0.7 < elapsed < 5


def test_create_and_wait_times_out_and_skips_jobs_not_under_way(alice: httpx.Client) -> None:
    started = time.monotonic()
    queued = alice.post("/jobs", json={"start": True}, params={"wait": 1})
    assert queued.status_code == 201 and queued.json()["phase"] == "QUEUED"
    assert 0.9 < time.monotonic() - started < 4
    started = time.monotonic()
    pending = alice.post("/jobs", json={}, params={"wait": 5})
    assert pending.status_code == 201 and pending.json()["phase"] == "PENDING"
    assert time.monotonic() - started < 1
    refused = alice.post("/jobs", json={}, params={"wait": -1})
    assert refused.status_code == 422 and "wait" in refused.json()["message"]


def test_create_and_wait_with_an_idempotency_key_waits_on_the_first_job(
    alice: httpx.Client,
) -> None:
    key = {"Idempotency-Key": "once"}
    first = alice.post("/jobs", json={"start": True}, headers=key).json()
    aborting = threading.Timer(0.4, lambda: alice.post(f"/jobs/{first['id']}/abort"))
    aborting.start()
    started = time.monotonic()
    again = alice.post("/jobs", json={"start": True}, headers=key, params={"wait": 8})
    aborting.join()  # its response, too, is read before the client closes
    assert again.json()["id"] == first["id"]
    assert again.json()["phase"] == "ABORTED"
    assert 0.2 < time.monotonic() - started < 5


def test_stats_and_openapi(alice: httpx.Client, server: Server) -> None:
    create(alice)
    create(alice, start=True)
    assert alice.get("/stats").json() == {"phases": {"PENDING": 1, "QUEUED": 1}}
    spec = httpx.get(server.url + "/openapi.json").json()
    job = spec["components"]["schemas"]["JobRecord"]["properties"]
    assert job["queue_position"]["title"] == "Queue position"
    assert job["timeline"]["description"]
    # Every job route names the bearer scheme, which the document describes.
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"HTTPBearer": []} in spec["paths"]["/api/v1/jobs"]["post"]["security"]
    assert httpx.get(server.url + "/api/v1/health").json()["status"] == "ok"


@pytest.mark.parametrize("count", [3])
def test_concurrent_submissions_share_commits(alice: httpx.Client, count: int) -> None:
    results: list[int] = []

    def submit() -> None:
        for _ in range(20):
            results.append(alice.post("/jobs", json={"start": True}).status_code)

    threads = [threading.Thread(target=submit) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 60
    assert alice.get("/stats").json()["phases"]["QUEUED"] == 60


def test_a_value_the_database_refuses_is_invalid_input(alice: httpx.Client, db_url: str) -> None:
    # A NUL character in a job's text is refused on every store (PostgreSQL would refuse it,
    # SQLite would cut a batch's text there).
    for field in ("name", "description", "run_id"):
        created = alice.post("/jobs", json={field: "a\x00b"})
        assert created.status_code == 422, created.text
        assert created.json()["code"] == "validation_failed"
        assert "NUL" in created.json()["message"] and field in created.json()["message"]
    batch = alice.post("/jobs/batch", json={"jobs": [{"name": "ok"}, {"name": "a\x00b"}]})
    assert batch.status_code == 422, batch.text
    job = create(alice)
    changed = alice.patch(f"/jobs/{job['id']}", json={"description": "a\x00b"})
    assert changed.status_code == 422, changed.text
    looked_up = alice.get("/jobs/a%00b")
    if db_url.startswith("sqlite"):  # SQLite looks any text up
        assert looked_up.status_code == 404
    else:  # PostgreSQL refuses it: the request's fault, never a 500.
        assert looked_up.status_code == 422, looked_up.text
        assert looked_up.json()["code"] == "validation_failed"
        assert "the database refused a value" in looked_up.json()["message"]
    # In an opaque JSON document (a json column, kept as sent) it is an escape, and stays.
    kept = create(alice, json_parameters={"k": "\x00"})
    assert alice.get(f"/jobs/{kept['id']}").json()["json_parameters"] == {"k": "\x00"}


def test_numbers_and_times_beyond_what_a_store_keeps_are_invalid_input(
    alice: httpx.Client,
) -> None:
    # Each was a 500 on SQLite (its driver cannot convert them), and the connection closed
    # under the next request; some were on PostgreSQL too.
    job = create(alice)
    refused = [
        alice.post("/jobs", json={"execution_duration": 10**30}),
        alice.post("/jobs", json={"execution_duration": 2**31}),
        alice.post("/jobs", json={"max_failed_tasks": 10**30}),
        alice.post("/jobs/batch", json={"jobs": [{"max_failed_tasks": 2**40}]}),
        alice.patch(f"/jobs/{job['id']}", json={"execution_duration": 10**30}),
        alice.get("/jobs", params={"cursor": str(10**26)}),
        alice.get("/jobs", params={"cursor": "-1"}),
        alice.get("/jobs", params={"cursor": "\u00b2"}),
        alice.get("/jobs", params={"after": "0001-01-01T00:00:00+14:00"}),
        alice.get("/jobs", params={"before": "0001-01-01T01:00:00+05:00"}),
        alice.get(f"/jobs/{job['id']}/logs", params={"offset": 10**30}),
    ]
    for response in refused:
        assert response.status_code == 422, (response.request.url, response.text)
        assert response.json()["code"] == "validation_failed"
    assert create(alice, execution_duration=2**31 - 1, max_failed_tasks=2**31 - 1)
    listed = alice.get("/jobs", params={"cursor": str(2**63 - 1), "after": "0001-01-02T00:00Z"})
    assert len(listed.json()["jobs"]) == 2


def test_an_internal_error_is_a_500_that_leaves_the_connection_open(
    alice: httpx.Client, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.engine, "stats", broken)
    for _ in range(3):
        failed = alice.get("/stats")
        assert failed.status_code == 500
        assert failed.json() == {
            "code": "internal",
            "message": "internal error; the server log has the details",
            "detail": None,
        }
        # Uvicorn closed the connection after such an answer: this request, sent on it at
        # once, met a reset.
        assert alice.get("/health").status_code == 200


def test_what_one_store_refused_and_the_other_kept_is_invalid_input_on_both(
    alice: httpx.Client,
) -> None:
    # NaN and Infinity (Python's JSON reads them; they are no JSON numbers), texts longer
    # than PostgreSQL's columns: PostgreSQL refused them (a 422 from the database), SQLite
    # kept them.
    headers = {"Content-Type": "application/json"}
    for body in (
        '{"json_parameters": {"x": NaN}}',
        '{"json_parameters": [Infinity]}',
        '{"parameters": {"x": -Infinity}}',
    ):
        created = alice.post("/jobs", content=body, headers=headers)
        assert created.status_code == 422, created.text
        assert "must be valid JSON" in created.json()["message"]
    job = create(alice)
    alice.post(f"/jobs/{job['id']}/queue", json={})
    alice.post(f"/jobs/{job['id']}/start", json={})
    for results in ([{"id": "r" * 513}], [{"id": "r", "mime_type": "m" * 129}]):
        completed = alice.post(f"/jobs/{job['id']}/complete", json={"results": results})
        assert completed.status_code == 422, completed.text
    for error in ({"message": "m", "error_code": "c" * 65}, {"message": "m", "source": "s" * 161}):
        failed = alice.post(f"/jobs/{job['id']}/fail", json={"errors": [error]})
        assert failed.status_code == 422, failed.text
    assert alice.get(f"/jobs/{job['id']}").json()["phase"] == "EXECUTING"
    fits = [{"id": "r" * 512, "mime_type": "m" * 128}]
    completed = alice.post(f"/jobs/{job['id']}/complete", json={"results": fits})
    assert completed.status_code == 200, completed.text


def test_a_lone_surrogate_in_a_document_is_invalid_input(alice: httpx.Client) -> None:
    # JSON's escapes can spell one; no UTF-8 text holds it. It was stored, and every answer
    # holding its job failed, the creation's first.
    headers = {"Content-Type": "application/json"}
    job = create(alice)
    for body in (
        '{"json_parameters": {"k": ["\\udce9"]}}',
        '{"json_parameters": {"\\ud800": 1}}',
        '{"parameters": {"x\\udce9": "v"}}',
        '{"name": "\\udce9"}',
    ):
        created = alice.post("/jobs", content=body, headers=headers)
        assert created.status_code == 422, created.text
        assert created.json()["code"] == "validation_failed"
        batch = alice.post("/jobs/batch", content=f'{{"jobs": [{body}]}}', headers=headers)
        assert batch.status_code == 422, batch.text
        changed = alice.patch(f"/jobs/{job['id']}", content=body, headers=headers)
        assert changed.status_code == 422, changed.text
    assert [listed["id"] for listed in alice.get("/jobs").json()["jobs"]] == [job["id"]]
    # A surrogate pair is a character like any other.
    kept = create(alice, json_parameters={"k": "\U0001f600"})
    assert alice.get(f"/jobs/{kept['id']}").json()["json_parameters"] == {"k": "\U0001f600"}


def test_connections_postgresql_ended_are_replaced_unseen(
    alice: httpx.Client, server: Server, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database server ends every connection of the service (a restart, say): the
    write that meets its dead connection before its commit runs again on a new one, and
    reads read again on their own; the client sees only its answers."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no connection to lose")
    job = create(alice)
    # The writer's and a reader's at least.
    assert end_connections(server.engine.db, "datname = current_database()") >= 2
    assert alice.post("/jobs", json={"name": "after"}).status_code == 201
    assert alice.get(f"/jobs/{job['id']}").json()["id"] == job["id"]
    assert "writing the batch again" in caplog.text


def test_a_database_that_cannot_be_reached_is_a_503(
    settings: EngineSettings, unreachable_pg: Database
) -> None:
    """PostgreSQL down (nothing listens on its port): requests that need it are refused with
    503 and Retry-After, which the client raises as ServiceUnavailable, not a 500."""
    server = Server(Engine(unreachable_pg, settings))
    server.start()
    try:
        client = httpx.Client(
            base_url=f"{server.url}/api/v1", headers={"Authorization": "Bearer jd_x"}
        )
        assert client.get("/health").status_code == 200
        for response in (client.get("/jobs/some-id"), client.post("/jobs", json={})):
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "unavailable"
            assert response.headers["Retry-After"] == "1"
    finally:
        server.stop()


def test_workers_of_a_server_without_local_workers(
    server: Server, client_for: Callable[..., httpx.Client], alice: httpx.Client
) -> None:
    admin = client_for("root", admin=True)
    for method in ("GET", "PUT"):
        missing = admin.request(method, "/workers", json={"processes": 1})
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"
        assert alice.request(method, "/workers", json={"processes": 1}).status_code == 403
