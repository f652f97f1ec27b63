"""The client commands (submit, list, show, wait, logs, results, abort, rm) against a real
server: through Typer's CliRunner, and as real processes."""

import asyncio
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from conftest import Server, free_port
from rich.console import Console
from sqlalchemy import select
from typer.testing import CliRunner, Result

from jobdeck.cli import jobs as jobs_cli
from jobdeck.domain.jobtypes import JobType
from jobdeck.domain.phases import Phase
from jobdeck.domain.records import CompleteRequest, FailRequest, JobCreate, JobError, JobRecord
from jobdeck.engine.engine import Engine, ListFilter, LogLine, Principal, TaskOutcome
from jobdeck.store.schema import jobs

ALICE = Principal("alice")
JOBDECK = [sys.executable, "-m", "jobdeck"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token or URL from the outside, and no stray ./.jobdeck/admin-token."""
    for name in ("JOBDECK_URL", "JOBDECK_TOKEN", "JOBDECK_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def app() -> typer.Typer:
    """A Typer app with the client commands, as `jobdeck` registers them."""
    app = typer.Typer(pretty_exceptions_enable=False)
    jobs_cli.register(app)
    return app


@pytest.fixture
def cli(server: Server, app: typer.Typer) -> Callable[..., Result]:
    """Run a command as alice against the test server."""
    token = server.engine.create_token("alice")
    runner = CliRunner()

    def run(*args: str, token_: str | None = token) -> Result:
        options = ["--url", server.url] + (["--token", token_] if token_ else [])
        return runner.invoke(app, [*args, *options])

    return run


def one_error_line(result: Result) -> str:
    """The command failed with one readable line on stderr."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def external_job(engine: Engine, *, start: bool = True, name: str = "") -> JobRecord:
    """A job without a type, which the test drives itself."""
    return engine.create_job(ALICE, JobCreate(name=name, start=start))


def later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def add_logs(engine: Engine, job_id: str, *messages: str) -> None:
    with engine.db.connect() as conn:
        seq = conn.execute(select(jobs.c.seq).where(jobs.c.id == job_id)).scalar_one()
    now = datetime.now(UTC)
    engine.append_logs([LogLine(seq, 1, "info", now, m) for m in messages])
    engine.writer.run(lambda tx: None)  # committed once the serial writer got here


def test_submit_show_list_abort_rm(cli: Callable[..., Result], server: Server) -> None:
    result = cli(
        "submit", "sleep", "-p", "seconds=2.5", "--name", "nap", "--priority", "70",
        "--json-parameters", '{"k": [1]}', "--no-start",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    record = server.engine.get_job(ALICE, job_id)
    assert record.phase is Phase.PENDING and record.name == "nap" and record.priority == 70
    assert record.parameters["seconds"].value == 2.5 and record.json_parameters == {"k": [1]}

    queued = cli("submit", "noop", "--json")
    assert queued.exit_code == 0, queued.output
    queued_record = JobRecord.model_validate_json(queued.stdout)
    assert queued_record.phase is Phase.QUEUED

    shown = cli("show", job_id)
    assert shown.exit_code == 0, shown.output
    assert job_id in shown.stdout and "nap" in shown.stdout and "PENDING" in shown.stdout
    assert "timeline" in shown.stdout and "seconds" in shown.stdout
    as_json = cli("show", job_id, "--json")
    assert JobRecord.model_validate_json(as_json.stdout) == server.engine.get_job(ALICE, job_id)

    table = cli("list")
    assert table.exit_code == 0, table.output
    assert table.stdout.index(queued_record.id) < table.stdout.index(job_id)  # newest first
    assert "nap" in table.stdout and "QUEUED" in table.stdout
    only_queued = json.loads(cli("list", "--phase", "QUEUED", "--json").stdout)
    assert [j["id"] for j in only_queued] == [queued_record.id]
    assert len(json.loads(cli("list", "--limit", "1", "--json").stdout)) == 1

    aborted = cli("abort", job_id, queued_record.id)
    assert aborted.exit_code == 0, aborted.output
    assert aborted.stdout.splitlines() == [f"{job_id} ABORTED", f"{queued_record.id} ABORTED"]
    removed = cli("rm", job_id)
    assert removed.exit_code == 0 and removed.stdout.strip() == f"deleted {job_id}"
    gone = cli("show", job_id)
    assert gone.exit_code == 1 and f"no job {job_id}" in one_error_line(gone)


def test_wait_reports_each_job_and_fails_on_a_failed_one(
    cli: Callable[..., Result], server: Server
) -> None:
    engine = server.engine
    good, bad = external_job(engine, name="good"), external_job(engine, name="bad")

    def drive() -> None:
        engine.start_external(ALICE, good.id, None)
        engine.start_external(ALICE, bad.id, None)
        time.sleep(0.3)
        engine.complete_external(ALICE, good.id, CompleteRequest())
        engine.fail_external(ALICE, bad.id, FailRequest(errors=[JobError(message="boom")]))

    later(0.5, drive)
    began = time.monotonic()
    result = cli("wait", good.id, bad.id, "--timeout", "30")
    assert time.monotonic() - began < 20
    assert result.exit_code == 3, result.output
    assert result.stdout.splitlines() == [f"{good.id} COMPLETED", f"{bad.id} ERROR: boom"]
    again = cli("wait", good.id, "--json")
    assert again.exit_code == 0, again.output
    assert [r["phase"] for r in json.loads(again.stdout)] == ["COMPLETED"]


def test_wait_shows_phase_task_progress_and_elapsed_time(server: Server) -> None:
    engine = server.engine
    engine.settings.job_types["frames"] = JobType(
        name="frames", kind="builtin", target="noop", task_parameters={"frame": "1-4"}
    )
    job = engine.create_job(ALICE, JobCreate(job_type="frames", name="render", start=True))
    claimed = engine.claim_tasks("test-worker", 4)  # the test is the worker
    assert len(claimed) == 4

    def finish(tasks: list) -> None:
        outcomes = [TaskOutcome(t.task_seq, "test-worker", ok=True) for t in tasks]
        engine.finish_tasks(outcomes).result(timeout=10)

    later(0.3, lambda: finish(claimed[:2]))
    later(3.0, lambda: finish(claimed[2:]))
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)
    connection = jobs_cli.Connection(server.url, engine.create_token("alice"), Path())
    finals = asyncio.run(jobs_cli.wait_live(connection, [job.id], timeout=30, console=console))
    assert [r.phase for r in finals] == [Phase.COMPLETED]
    shown = screen.getvalue()
    assert f"render ({job.id[:8]})" in shown
    assert "EXECUTING" in shown and "COMPLETED" in shown
    assert "2/4 tasks" in shown and "4/4 tasks" in shown
    assert re.search(r"COMPLETED .* 4/4 tasks \d+\.\ds", shown)


def test_wait_times_out_and_unknown_ids_fail(cli: Callable[..., Result], server: Server) -> None:
    job = external_job(server.engine)
    result = cli("wait", job.id, "--timeout", "0.5")
    assert result.exit_code == 1 and "still QUEUED" in one_error_line(result)
    missing = cli("wait", job.id, "no-such-job")
    assert missing.exit_code == 1 and "no job no-such-job" in one_error_line(missing)


def test_submit_wait_exits_3_when_the_job_is_aborted(
    cli: Callable[..., Result], server: Server
) -> None:
    engine = server.engine

    def abort_it() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            page = engine.list_jobs(ALICE, ListFilter(phases=[Phase.QUEUED]))
            if page.jobs:
                engine.abort(ALICE, page.jobs[0].id)
                return
            time.sleep(0.05)

    later(0, abort_it)
    result = cli("submit", "noop", "--wait", "--timeout", "20")
    assert result.exit_code == 3, result.output
    assert result.stdout.strip().endswith("ABORTED: aborted by alice")


def test_logs_and_follow(cli: Callable[..., Result], server: Server) -> None:
    engine = server.engine
    job = external_job(engine)
    engine.start_external(ALICE, job.id, None)
    add_logs(engine, job.id, "first", "second")
    result = cli("logs", job.id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("INFO task 1: first")
    as_json = [json.loads(line) for line in cli("logs", job.id, "--json").stdout.splitlines()]
    assert [e["message"] for e in as_json] == ["first", "second"]

    def finish() -> None:
        add_logs(engine, job.id, "third")
        engine.complete_external(ALICE, job.id, CompleteRequest())

    later(0.5, finish)
    followed = cli("logs", job.id, "-f")
    assert followed.exit_code == 0, followed.output
    assert [line.rsplit(": ", 1)[1] for line in followed.stdout.splitlines()] == [
        "first",
        "second",
        "third",
    ]


def test_results_download_and_list(
    cli: Callable[..., Result], server: Server, tmp_path: Path
) -> None:
    job = external_job(server.engine)
    server.engine.put_result_document(ALICE, job.id, {"answer": 42})
    result = cli("results", job.id, "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    saved = tmp_path / "out" / "result.json"
    assert result.stdout.strip() == str(saved.resolve())
    assert json.loads(saved.read_text()) == {"answer": 42}
    default = cli("results", job.id)  # into ./JOB_ID
    assert default.exit_code == 0 and (tmp_path / job.id / "result.json").is_file()
    listed = json.loads(cli("results", job.id, "--list", "--json").stdout)
    assert listed == [
        {"id": "result.json", "url": None, "size": 14, "mime_type": "application/json"}
    ]


def test_error_lines(cli: Callable[..., Result], server: Server) -> None:
    bad_token = cli("list", token_="jd_wrong")
    assert bad_token.exit_code == 1 and "the token is not valid" in one_error_line(bad_token)
    no_token = cli("list", token_=None)
    line = one_error_line(no_token)
    assert no_token.exit_code == 1 and "no token" in line and "JOBDECK_TOKEN" in line
    bad_param = cli("submit", "noop", "-p", "oops")
    assert bad_param.exit_code == 2 and "key=value" in one_error_line(bad_param)
    bad_json = cli("submit", "noop", "--json-parameters", "{")
    assert bad_json.exit_code == 2 and "not JSON" in one_error_line(bad_json)
    before = len(server.engine.list_jobs(ALICE, ListFilter()).jobs)
    pending_wait = cli("submit", "noop", "--no-start", "--wait")
    assert pending_wait.exit_code == 2 and "--wait needs --start" in one_error_line(pending_wait)
    assert len(server.engine.list_jobs(ALICE, ListFilter()).jobs) == before  # nothing made
    unknown_type = cli("submit", "no-such-type")
    assert unknown_type.exit_code == 1 and "no-such-type" in one_error_line(unknown_type)
    refused = cli("submit", "noop", "--priority", "500")
    assert refused.exit_code == 1 and "priority" in one_error_line(refused)
    not_allowed = cli("list", "--owner", "bob")
    assert not_allowed.exit_code == 1 and "admins" in one_error_line(not_allowed)


def test_server_down(app: typer.Typer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["list", "--url", url, "--token", "t"])
    line = one_error_line(result)
    assert result.exit_code == 1 and f"cannot reach jobdeck at {url}/api/v1" in line


def test_token_from_the_data_dir_and_url_from_the_environment(
    server: Server, app: typer.Typer, tmp_path: Path
) -> None:
    admin_token = "jd_test_admin"
    server.engine.add_token(admin_token, "admin", admin=True)
    mine = external_job(server.engine, start=False)
    (tmp_path / ".jobdeck").mkdir()
    (tmp_path / ".jobdeck" / "admin-token").write_text(admin_token + "\n")
    runner = CliRunner()
    env = {"JOBDECK_URL": server.url}
    found = runner.invoke(app, ["list", "--json"], env=env)  # ./.jobdeck/admin-token
    assert found.exit_code == 0, found.output
    assert [j["id"] for j in json.loads(found.stdout)] == [mine.id]  # an admin sees alice's job
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".jobdeck" / "admin-token").rename(tmp_path / "elsewhere" / "admin-token")
    assert runner.invoke(app, ["list"], env=env).exit_code == 1
    moved = runner.invoke(app, ["show", mine.id, "--data-dir", "elsewhere"], env=env)
    assert moved.exit_code == 0 and mine.id in moved.stdout
    bob = server.engine.create_token("bob")
    as_bob = runner.invoke(app, ["show", mine.id], env={**env, "JOBDECK_TOKEN": bob})
    assert as_bob.exit_code == 1 and "no job" in one_error_line(as_bob)


# ---------------------------------------------------------------------- real processes


def jobdeck(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `jobdeck` as a process, with a clean environment for its options."""
    return subprocess.run(
        [*JOBDECK, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_commands_as_processes(server: Server) -> None:
    token = server.engine.create_token("alice")
    options = ["--url", server.url, "--token", token]
    submitted = jobdeck("submit", "noop", "--no-start", "--name", "proc", *options)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert server.engine.get_job(ALICE, job_id).name == "proc"
    listed = jobdeck("list", "--json", *options)
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    later(0.5, lambda: server.engine.abort(ALICE, job_id))
    waited = jobdeck("wait", job_id, "--timeout", "30", *options)
    assert waited.returncode == 3 and waited.stdout.startswith(f"{job_id} ABORTED")
    assert "Traceback" not in waited.stderr


def test_errors_as_processes(server: Server) -> None:
    down = jobdeck("show", "x", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t")
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1 and down.stderr.startswith("error: cannot reach jobdeck")
    bad = jobdeck("show", "x", "--url", server.url, "--token", "jd_wrong")
    assert bad.returncode == 1 and bad.stderr == "error: the token is not valid\n"
    token = server.engine.create_token("alice")
    unknown = jobdeck("show", "nope", "--url", server.url, "--token", token)
    assert unknown.returncode == 1 and unknown.stderr == "error: no job nope\n"
