"""`jobdeck serve` and `jobdeck worker` as real processes, over real HTTP."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

JOBDECK = [sys.executable, "-m", "jobdeck"]


class Processes:
    """Started processes, all stopped at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen([*JOBDECK, *args], stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the server did not answer")


def serve(processes: Processes, data_dir: Path, *extra: str) -> httpx.Client:
    port = free_port()
    server = processes.start(
        "serve", "--data-dir", str(data_dir), "--port", str(port), *extra, name="serve"
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, server)
    token = (data_dir / "admin-token").read_text().strip()
    return httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def wait_phase(client: httpx.Client, job_id: str, phases: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/jobs/{job_id}", params={"wait": 2}).json()
        if record["phase"] in phases:
            return record
    raise AssertionError(f"job {job_id} never reached {phases}: {record}")


def test_serve_on_sqlite_round_trip_and_admin_token(processes: Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serve(processes, data_dir, "--workers", "2") as client:
        assert "admin token" in processes.log("serve")
        assert oct((data_dir / "admin-token").stat().st_mode & 0o777) == "0o600"
        job = client.post("/jobs", json={"job_type": "echo", "parameters": {"message": "hi"}})
        assert job.status_code == 201
        job_id = job.json()["id"]
        assert client.get(f"/jobs/{job_id}").json()["phase"] == "PENDING"
        client.post(f"/jobs/{job_id}/run")
        record = wait_phase(client, job_id, {"COMPLETED", "ERROR"}, 20)
        assert record["phase"] == "COMPLETED"
        assert client.get(f"/jobs/{job_id}/results/echo.txt").text.strip() == "hi"


def test_an_admin_resizes_the_local_workers_of_a_running_server(
    processes: Processes, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with serve(processes, data_dir, "--workers", "0") as client:
        assert client.get("/workers").json()["processes"] == 0
        job_id = client.post("/jobs", json={"job_type": "noop", "start": True}).json()["id"]
        assert client.get(f"/jobs/{job_id}", params={"wait": 1}).json()["phase"] == "QUEUED"

        grown = client.put("/workers", json={"processes": 2})
        assert grown.status_code == 200, grown.text
        assert grown.json()["processes"] == 2
        assert wait_phase(client, job_id, {"COMPLETED", "ERROR"}, 20)["phase"] == "COMPLETED"

        # The command line, as a real process, against the running server.
        token = (data_dir / "admin-token").read_text().strip()
        url = str(client.base_url).removesuffix("/api/v1")
        cli = [*JOBDECK, "workers", "--url", url, "--token", token]
        shown = subprocess.run(cli, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("2 worker processes")
        stopped = subprocess.run([*cli, "--set", "0"], capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith("0 worker processes")
        job_id = client.post("/jobs", json={"job_type": "noop", "start": True}).json()["id"]
        assert client.get(f"/jobs/{job_id}", params={"wait": 1}).json()["phase"] == "QUEUED"

        for bad in (-1, 257, "two"):
            refused = client.put("/workers", json={"processes": bad})
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "validation_failed"
        bob = client.post("/tokens", json={"user": "bob"}).json()["token"]
        for method in ("GET", "PUT"):
            denied = client.request(
                method,
                "/workers",
                json={"processes": 1},
                headers={"Authorization": f"Bearer {bob}"},
            )
            assert denied.status_code == 403, denied.text
        assert client.get("/workers").json()["processes"] == 0


def test_acknowledged_jobs_survive_kill_9(processes: Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    client = serve(processes, data_dir, "--workers", "0")
    ids = [client.post("/jobs", json={"name": f"j{i}"}).json()["id"] for i in range(50)]
    batch = client.post("/jobs/batch", json={"jobs": [{"name": "b"}] * 200}).json()["jobs"]
    client.close()
    processes.started[0].send_signal(signal.SIGKILL)
    processes.started[0].wait()
    with serve(processes, data_dir, "--workers", "0") as again:
        for job_id in ids + [j["id"] for j in batch]:
            assert again.get(f"/jobs/{job_id}").status_code == 200
        assert again.get("/stats").json()["phases"] == {"PENDING": 250}


@pytest.fixture
def pg_url(pg_database: str) -> str:
    return pg_database


def test_worker_nodes_beside_an_api_node(processes: Processes, tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "shared"
    common = ["--db", pg_url, "--data-dir", str(data_dir), "--lease-seconds", "2"]
    client = serve(processes, data_dir, "--workers", "0", *common[:2], "--lease-seconds", "2")
    worker = processes.start("worker", *common, "--workers", "2", name="worker-1")
    try:
        created = client.post(
            "/jobs/batch", json={"jobs": [{"job_type": "noop", "start": True}] * 50}
        ).json()["jobs"]
        for job in created:
            wait_phase(client, job["id"], {"COMPLETED"}, 30)
        record = client.get(f"/jobs/{created[0]['id']}").json()
        assert record["timeline"][2]["source"] == f"worker:{os.uname().nodename}-{worker.pid}"

        # kill -9 of a worker node mid-task: its lease lapses, the task runs elsewhere
        job = client.post(
            "/jobs", json={"job_type": "sleep", "parameters": {"seconds": 3}, "start": True}
        ).json()
        wait_phase(client, job["id"], {"EXECUTING"}, 20)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        processes.start("worker", *common, "--workers", "1", name="worker-2")
        record = wait_phase(client, job["id"], {"COMPLETED", "ERROR"}, 40)
        assert record["phase"] == "COMPLETED", record
        sources = [(e["status"], e["source"]) for e in record["timeline"]]
        assert ("RETRYING", "rescuer") in sources
    finally:
        client.close()
