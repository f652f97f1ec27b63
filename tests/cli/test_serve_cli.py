"""The client commands as real processes against `jobdeck serve` with real workers.

The commands run in the directory where the service keeps ./.jobdeck, with no token given:
they use its admin token, as a newcomer on the same machine would.
"""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from conftest import alive, children_of, free_port

JOBDECK = [sys.executable, "-m", "jobdeck"]


def start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`jobdeck serve` with one worker, its data in tmp_path/.jobdeck, its output in
    tmp_path/serve.log, once it answers: the process and its URL."""
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [*JOBDECK, "serve", "--port", str(port), "--workers", "1"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"jobdeck serve did not answer: {(tmp_path / 'serve.log').read_text()}"
            )
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as a service manager stops a service; its exit status."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """`jobdeck serve` with one worker (see :func:`start`); yields its URL."""
    process, url = start(tmp_path)
    try:
        yield url
    finally:
        stop(process)


def jobdeck(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`jobdeck ARGS` run to its end in ``cwd`` (``env``: this process's when None)."""
    return subprocess.run(
        [*JOBDECK, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run(cwd: Path, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A client command against the service at ``url``, with no other JOBDECK_ setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBDECK_")}
    env["JOBDECK_URL"] = url
    return jobdeck(cwd, *args, env=env, timeout=timeout)


def test_submit_wait_logs_results_with_real_workers(service: str, tmp_path: Path) -> None:
    done = run(tmp_path, service, "submit", "echo", "-p", "message=hello there", "--wait")
    assert done.returncode == 0, done.stderr
    job_id, phase = done.stdout.split()
    assert phase == "COMPLETED"
    logs = run(tmp_path, service, "logs", job_id)
    assert logs.returncode == 0 and "hello there" in logs.stdout
    results = run(tmp_path, service, "results", job_id, "-o", "out")
    assert results.returncode == 0, results.stderr
    assert (tmp_path / "out" / "echo.txt").read_text() == "hello there\n"
    shown = json.loads(run(tmp_path, service, "show", job_id, "--json").stdout)
    assert [e["status"] for e in shown["timeline"]] == [
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "COMPLETED",
    ]


def test_failed_and_aborted_jobs_exit_3(service: str, tmp_path: Path) -> None:
    failed = run(tmp_path, service, "submit", "fail", "-p", "message=on purpose", "--wait")
    assert failed.returncode == 3 and failed.stdout.strip().endswith("ERROR: on purpose")
    slow = run(tmp_path, service, "submit", "sleep", "-p", "seconds=60")
    job_id = slow.stdout.strip()
    assert run(tmp_path, service, "abort", job_id).returncode == 0
    began = time.monotonic()
    waited = run(tmp_path, service, "wait", job_id, "--json")
    assert waited.returncode == 3 and json.loads(waited.stdout)[0]["phase"] == "ABORTED"
    assert time.monotonic() - began < 30


def submit_running(cwd: Path, url: str, seconds: int) -> str:
    """Submit a sleep of ``seconds``; its id, once it runs."""
    job_id = run(cwd, url, "submit", "sleep", "-p", f"seconds={seconds}").stdout.strip()
    deadline = time.monotonic() + 20
    while json.loads(run(cwd, url, "show", job_id, "--json").stdout)["phase"] != "EXECUTING":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    return job_id


def test_sigterm_lets_the_running_task_end_then_stops_the_workers(tmp_path: Path) -> None:
    # uvicorn raises a SIGTERM again after its own shutdown, and with the default handler
    # the service died there: its worker process ran on, orphaned, and the task's end was
    # never recorded (the job read EXECUTING until its lease ran out, and ran again).
    process, url = start(tmp_path)
    try:
        job_id = submit_running(tmp_path, url, 2)
        workers = children_of(process.pid)
        assert workers
        assert stop(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not [pid for pid in workers if alive(pid)]
    with closing(sqlite3.connect(tmp_path / ".jobdeck" / "jobdeck.db")) as db:
        phase = db.execute("SELECT phase FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert phase == ("COMPLETED",)


def test_a_killed_service_takes_its_worker_processes_and_their_tasks_with_it(
    tmp_path: Path,
) -> None:
    # A worker process went on with its task when the service was killed (kill -9, a crash):
    # the task ran on, orphaned, while the service's successor ran it again once its lease
    # had run out.
    process, url = start(tmp_path)
    try:
        run(tmp_path, url, "workers", "--set", "2")  # one more, started by a request's thread
        submit_running(tmp_path, url, 60)
        workers = children_of(process.pid)
        assert len(workers) == 2
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while [pid for pid in workers if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]


def test_without_the_admin_token_the_error_says_how_to_give_one(
    service: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run(elsewhere, service, "list")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "JOBDECK_TOKEN" in result.stderr
    assert run(elsewhere, service, "list", "--data-dir", "../.jobdeck").returncode == 0


def test_a_port_in_use_ends_serve_at_once_with_one_line_and_nothing_started(
    tmp_path: Path,
) -> None:
    # uvicorn's own bind came last: "serving on" was printed, worker processes and the store
    # had started, and then uvicorn's bind error ended the service with status 3.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = jobdeck(tmp_path, "serve", "--port", str(port), "--workers", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1 port {port}" in result.stderr
    assert not (tmp_path / ".jobdeck").exists()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        pytest.param(
            "::1",
            marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_port_0_serves_on_a_free_port_and_says_which(tmp_path: Path, host: str) -> None:
    # The URL printed said port 0; an IPv6 address was printed without its brackets.
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [*JOBDECK, "serve", "--host", host, "--port", "0", "--workers", "0"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        found = None
        while found is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"serving on (\S+/api/v1)", (tmp_path / "serve.log").read_text())
            time.sleep(0.05)
        assert found is not None, (tmp_path / "serve.log").read_text()
        assert ":0/" not in found.group(1)
        health = httpx.get(found.group(1) + "/health", timeout=10)
        assert health.status_code == 200
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--config", "bad.toml"], "bad.toml: type 't': kind must be"),
        (["--db", "mysql://user:secret@host/db"], "jobdeck's stores are PostgreSQL"),
        (["--db", "postgresql://nobody@127.0.0.1:{port}/none"], "cannot open the store:"),
        (["--data-dir", "/proc/none"], "cannot use /proc/none"),
    ],
)
def test_what_an_operator_can_put_right_is_one_line_not_a_traceback(
    tmp_path: Path, arguments: list[str], says: str
) -> None:
    (tmp_path / "bad.toml").write_text('[types.t]\nkind = "shell"\n')
    arguments = [part.replace("{port}", str(free_port())) for part in arguments]
    result = jobdeck(tmp_path, "serve", "--port", "0", "--workers", "1", *arguments)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("jobdeck serve: ") and says in result.stderr
    assert "secret" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_worker_processes_are_bounded_as_through_the_api(tmp_path: Path, command: str) -> None:
    # PUT /workers took at most 256; --workers took any number, and started them all.
    arguments = [command, "--workers", "100000"]
    if command == "worker":
        arguments += ["--db", "postgresql://nobody@127.0.0.1:1/none"]
    # COLUMNS: the usage error's box, its sentence on one line.
    result = jobdeck(tmp_path, *arguments, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2
    assert "--workers" in result.stderr and "less than or equal to 256" in result.stderr
