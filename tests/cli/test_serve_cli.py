"""The client commands as real processes against `jobdeck serve` with real workers.

The commands run in the directory where the service keeps ./.jobdeck, with no token given:
they use its admin token, as a newcomer on the same machine would.
"""

import json
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


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """`jobdeck serve` with one worker, its data in tmp_path/.jobdeck; yields its URL."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*JOBDECK, "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "jobdeck serve did not answer"
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def run(cwd: Path, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBDECK_")}
    env["JOBDECK_URL"] = url
    return subprocess.run(
        [*JOBDECK, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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


def test_without_the_admin_token_the_error_says_how_to_give_one(
    service: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run(elsewhere, service, "list")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "JOBDECK_TOKEN" in result.stderr
    assert run(elsewhere, service, "list", "--data-dir", "../.jobdeck").returncode == 0
