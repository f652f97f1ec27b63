"""The ``jobdeck`` entry point: start-up runs without garbage collection, the command with it."""

import subprocess
import sys

CHECK = """
import gc, sys
from jobdeck.cli import run
sys.argv = ["jobdeck", "--help"]
try:
    run()
except SystemExit:
    pass
print(gc.isenabled(), gc.get_freeze_count() > 10_000)
"""


def test_the_command_collects_again_once_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    # Collection is back on, and the start-up's objects are frozen out of it.
    assert done.stdout.strip().splitlines()[-1] == "True True"


def test_python_dash_m_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobdeck", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "serve" in done.stdout


SERVICE_ONLY = """
import sys
from jobdeck.cli import run
sys.argv = ["jobdeck", "serve", "--help"]
try:
    run()
except SystemExit:
    pass
print("jobdeck.cli.jobs" in sys.modules, "jobdeck.client" in sys.modules)
"""


def test_the_service_commands_start_without_the_client_commands() -> None:
    # Their modules (Rich's live displays and tables, the HTTP client) cost a service about
    # 0.1 s of its start, before its first job.
    done = subprocess.run(
        [sys.executable, "-c", SERVICE_ONLY], capture_output=True, text=True, check=True, timeout=60
    )
    assert "--workers" in done.stdout  # serve's own help
    assert done.stdout.strip().splitlines()[-1] == "False False"


SERVICE_MODULES = """
import sys
import typer.main
from jobdeck.cli.main import service_app
typer.main.get_command(service_app())
import jobdeck.doors.native.app, jobdeck.engine.maintenance, jobdeck.service
import jobdeck.worker.dispatcher, uvicorn
print(sorted(name for name in sys.modules if name.split(".")[0] == "rich"))
"""


def test_a_service_runs_without_rich() -> None:
    # What serve and worker import (its own lines are plain click output): Rich alone cost
    # a start some 30 ms here.
    done = subprocess.run(
        [sys.executable, "-c", SERVICE_MODULES],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
