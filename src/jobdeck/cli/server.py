"""Commands that run or administer the service: serve, worker, db upgrade, token create."""

import gc
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobdeck.cli import settle
from jobdeck.cli.options import (
    DEFAULT_DATA_DIR,
    ConfigOption,
    DataDirOption,
    DbOption,
    store_options,
)
from jobdeck.domain.jobtypes import JobType
from jobdeck.domain.limits import MAX_LOCAL_PROCESSES
from jobdeck.worker.config import load_job_types
from jobdeck.worker.pool import ProcessPool

if TYPE_CHECKING:
    from jobdeck.engine.engine import Engine
    from jobdeck.service import StoreOptions

LeaseOption = Annotated[
    float,
    typer.Option(
        help="Seconds a claimed task stays this worker's without a heartbeat; after that "
        "(the worker died) it is retried elsewhere.",
        min=1,
    ),
]
SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits (Python's default is 5 ms). A job
passes through several threads of a service or worker (HTTP, writer, dispatcher, pool
reader); with the default, each hand-off behind a busy thread could cost up to 5 ms."""

BACKLOG = 2048
"""Connections the kernel holds until the service accepts them (uvicorn's default)."""


def say(message: str) -> None:
    """A line for the operator, on stderr."""
    typer.echo(message, err=True)


db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens.", no_args_is_help=True)


def serve(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    db: DbOption = None,
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on (0: any free one, printed).", min=0, max=65535)
    ] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local worker processes (default: CPU count; 0: API only). An admin can "
            "change it while the server runs: `jobdeck workers --set N`.",
            min=0,
            max=MAX_LOCAL_PROCESSES,
        ),
    ] = None,
    full_sync: Annotated[
        bool,
        typer.Option(
            "--full-sync",
            help="SQLite synchronous=FULL: survive power loss too, at an fsync per commit.",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "warning",
    lease_seconds: LeaseOption = 30.0,
) -> None:
    """Run the service: the API, upkeep and local workers, in one process."""
    gc.disable()  # until settle()
    sys.setswitchinterval(SWITCH_INTERVAL)
    listening = _listening_socket(host, port)
    port = listening.getsockname()[1]
    count = os.cpu_count() or 1 if workers is None else workers
    job_types = _job_types("serve", config)
    pool = ProcessPool(count, job_types)
    pool.spawn()
    # Imported here, so that the client commands of the same program start fast, and after
    # the worker processes were spawned, so that they start while the engine loads; the web
    # stack only once the workers run, so that they work while it loads.
    from jobdeck.engine.maintenance import Maintenance
    from jobdeck.service import ensure_admin_token
    from jobdeck.worker.dispatcher import Dispatcher

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    options = store_options(data_dir, db, config, full_sync=full_sync)
    try:
        engine = _open_store("serve", options, lease_seconds=lease_seconds, job_types=job_types)
    except BaseException:
        pool.close(0)
        listening.close()
        raise
    engine.start()
    token, created = ensure_admin_token(engine, data_dir)
    maintenance = Maintenance(engine)
    maintenance.start()
    dispatcher = Dispatcher(engine, pool)
    gc.freeze()
    dispatcher.start()
    store = "PostgreSQL" if db else f"SQLite in {data_dir.resolve()}"
    # Plain click styles: Rich's console would cost a service's start tens of milliseconds.
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    url = typer.style(f"{base}/api/v1", bold=True)
    say(f"jobdeck serving on {url} ({store}, {count} workers)")
    say(f"API documentation: {base}/docs")
    if created:
        say(f"admin token (kept in {data_dir / 'admin-token'}): {typer.style(token, bold=True)}")
    else:
        say(f"admin token: in {data_dir / 'admin-token'}")
    try:
        # uvicorn stops gracefully on SIGTERM, puts back the handler it found and raises the
        # signal again: with the default one the process died there, before its workers were
        # stopped (a long task ran on, orphaned; tasks that had ended were never recorded and
        # ran again after their leases). This one ends the run as Ctrl-C does, through here.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        import uvicorn

        from jobdeck.doors.native.app import create_asgi

        app = create_asgi(engine, dispatcher=dispatcher)
        settle()
        # No WebSocket routes: ws="none" spares loading a WebSocket implementation.
        settings = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="none")
        server = uvicorn.Server(settings)
        server.run(sockets=[listening])
        if not server.started:  # as uvicorn.run ends: its start failed, and it said why
            raise typer.Exit(3)
    finally:
        # The stop under way is bounded by the running tasks' grace: another SIGTERM must
        # not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        listening.close()
        dispatcher.stop()
        maintenance.stop()
        engine.close()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _failed(command: str, message: str) -> typer.Exit:
    """Say why ``jobdeck COMMAND`` cannot go on, in one line; the exit to raise."""
    say(f"jobdeck {command}: {message}")
    return typer.Exit(1)


def _job_types(command: str, config: Path | None) -> dict[str, JobType]:
    """The job types of ``config``; a file that is not right ends the command with one line
    (it showed a traceback)."""
    try:
        return load_job_types(config)
    except ValueError as error:
        raise _failed(command, str(error)) from None


def _open_store(command: str, options: "StoreOptions", **engine_options: Any) -> "Engine":
    """The store's engine (:func:`jobdeck.service.open_engine`). What an operator can put
    right (a URL of another database, a server that does not answer, a data directory that
    cannot be made) ends the command with one line saying so, not a traceback."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from jobdeck.service import open_engine

    try:
        return open_engine(options, **engine_options)
    except DBAPIError as error:
        reason = str(error.orig if error.orig is not None else error).strip()
        raise _failed(command, f"cannot open the store: {reason.splitlines()[0]}") from None
    except OSError as error:
        raise _failed(command, f"cannot use {error.filename}: {error.strerror}") from None
    except (ValueError, ArgumentError, CommandError) as error:
        raise _failed(command, str(error)) from None


def _listening_socket(host: str, port: int) -> socket.socket:
    """The service's socket, bound before anything else starts: an address that cannot be
    had (a port in use) ends ``serve`` at once with one line saying so, where uvicorn's own
    bind came after the worker processes, the store and "serving on" had started (and then
    ended the service with status 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds: a restart can take the port while the last run's connections close.
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        reason = error.strerror or error
        raise _failed("serve", f"cannot listen on {host} port {port}: {reason}") from None
    # Listening from now on: a client that connects while the service starts waits for its
    # answer, instead of being refused after "serving on" was printed.
    listening.listen(BACKLOG)
    return listening


def worker(
    db: Annotated[
        str,
        typer.Option("--db", envvar="JOBDECK_DB", help="The shared PostgreSQL URL."),
    ],
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    config: ConfigOption = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: CPU count).", min=1, max=MAX_LOCAL_PROCESSES),
    ] = None,
    lease_seconds: LeaseOption = 30.0,
) -> None:
    """Run worker processes against a shared PostgreSQL, beside `jobdeck serve` elsewhere.

    Results are written under the data directory's results/; share it with the API nodes.
    """
    gc.disable()  # until settle()
    if not db.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise typer.BadParameter("jobdeck worker needs a PostgreSQL URL", param_hint="--db")
    sys.setswitchinterval(SWITCH_INTERVAL)
    job_types = _job_types("worker", config)
    pool = ProcessPool(workers or os.cpu_count() or 1, job_types)
    pool.spawn()  # the processes start up while the engine loads
    from jobdeck.engine.maintenance import Maintenance
    from jobdeck.worker.dispatcher import Dispatcher

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(message)s")
    options = store_options(data_dir, db, config)
    try:
        engine = _open_store("worker", options, lease_seconds=lease_seconds, job_types=job_types)
    except BaseException:
        pool.close(0)
        raise
    engine.start()
    maintenance = Maintenance(engine)
    maintenance.start()
    dispatcher = Dispatcher(engine, pool)
    settle()
    dispatcher.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    say(f"jobdeck worker {dispatcher.worker_id} running")
    stop.wait()
    say("stopping: finishing running tasks")
    dispatcher.stop()
    maintenance.stop()
    engine.close()


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOption = DEFAULT_DATA_DIR, db: DbOption = None) -> None:
    """Apply the database migrations."""
    _open_store("db upgrade", store_options(data_dir, db)).db.dispose()
    say("database is up to date")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="The user the token acts for.")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin sees every job.")] = False,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    db: DbOption = None,
) -> None:
    """Create a bearer token for USER and print it (it is shown once)."""
    engine = _open_store("token create", store_options(data_dir, db))
    engine.start()
    try:
        print(engine.create_token(user, admin=admin))
    finally:
        engine.close()
