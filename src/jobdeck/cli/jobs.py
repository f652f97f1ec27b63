"""The client commands of ``jobdeck``: submit, list, show, wait, logs, results, abort, rm.

They talk to a running service through :class:`jobdeck.client.Client`. The service is
``--url`` (or ``$JOBDECK_URL``, else ``http://127.0.0.1:8000``); the token is ``--token`` (or
``$JOBDECK_TOKEN``), else the admin token a local ``jobdeck serve`` keeps in its data directory
(``--data-dir``, default ``./.jobdeck``), so that on the machine that runs the service it just
works. Read commands take ``--json`` for scripts.

Exit codes: 0 success; 1 an error (bad token, unknown job, service down, refused request);
2 bad input on the command line; 3 a job waited for ended in ERROR, ABORTED or UNKNOWN.
Errors are one line on stderr, never a traceback.
"""

import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn
from rich.progress import Task as ProgressTask
from rich.table import Table
from rich.text import Text

from jobdeck.client.config import read_admin_token, resolve_token
from jobdeck.client.errors import ClientError, ServiceUnavailable, Unauthorized
from jobdeck.domain.phases import ACTIVE_PHASES, Phase
from jobdeck.domain.records import JobRecord, JobSummary, ParameterInput, ResultRef

if TYPE_CHECKING:
    from jobdeck.client import AsyncClient, Client

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3
FAILED_PHASES = frozenset({Phase.ERROR, Phase.ABORTED, Phase.UNKNOWN})
PHASE_STYLE = {
    Phase.PENDING: "dim",
    Phase.QUEUED: "cyan",
    Phase.HELD: "cyan",
    Phase.EXECUTING: "yellow",
    Phase.SUSPENDED: "yellow",
    Phase.COMPLETED: "green",
    Phase.ERROR: "red",
    Phase.ABORTED: "red",
    Phase.UNKNOWN: "red",
    Phase.ARCHIVED: "dim",
}

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="JOBDECK_URL",
        help="The service, e.g. http://127.0.0.1:8000 [default: http://127.0.0.1:8000].",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="JOBDECK_TOKEN",
        help="Bearer token [default: the admin token in --data-dir, if readable].",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="JOBDECK_DATA_DIR",
        help="Data directory of a local `jobdeck serve`: its admin-token is used when no "
        "token is given.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
JobIdArgument = Annotated[str, typer.Argument(help="The job id.", show_default=False)]
JobIdsArgument = Annotated[list[str], typer.Argument(help="Job ids.", show_default=False)]
TimeoutOption = Annotated[
    float | None,
    typer.Option(help="Give up after this many seconds (exit 1).", min=0, show_default=False),
]
DEFAULT_DATA_DIR = Path(".jobdeck")


# ---------------------------------------------------------------------- plumbing


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def reporting(*, token_given: bool = True) -> Iterator[None]:
    """Turn client errors into one line on stderr and a non-zero exit."""
    try:
        yield
    except Unauthorized as error:
        hint = (
            ""
            if token_given
            else " (no token: give --token, set JOBDECK_TOKEN, or run where the service's "
            ".jobdeck/admin-token is, or point --data-dir at its data directory)"
        )
        fail(f"{error.message}{hint}")
    except ServiceUnavailable as error:
        fail(f"{error.message} (is `jobdeck serve` running?)")
    except ClientError as error:
        fail(error.message)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


class Connection:
    """Where and as whom the commands connect."""

    def __init__(self, url: str | None, token: str | None, data_dir: Path) -> None:
        self.url = url
        self.token = resolve_token(token) or read_admin_token(data_dir)

    def client(self) -> "Client":
        """A blocking client."""
        from jobdeck.client import Client  # here: httpx is not needed by `jobdeck serve`

        return Client(self.url, self.token)

    def async_client(self) -> "AsyncClient":
        """An asyncio client."""
        from jobdeck.client import AsyncClient

        return AsyncClient(self.url, self.token)

    def reporting(self) -> AbstractContextManager[None]:
        """:func:`reporting`, with a hint when no token was found."""
        return reporting(token_given=self.token is not None)


def output_console() -> Console:
    """The console for tables on stdout: as wide as the terminal, or wide when piped."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


def status_console(quiet: bool) -> Console:
    """The console for live displays: stderr, silent with ``quiet`` (``--json``)."""
    return Console(stderr=True, quiet=quiet)


def print_json(data: Any) -> None:
    """Print JSON on stdout."""
    typer.echo(json.dumps(data, indent=2))


def dump(model: Any) -> Any:
    """A pydantic model (or list of them) as JSON-ready data, as the server sends it."""
    if isinstance(model, list):
        return [item.model_dump(mode="json") for item in model]
    return model.model_dump(mode="json")


def format_time(value: datetime | None) -> str:
    """A UTC time, to the second."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_seconds(seconds: float) -> str:
    """``1:02:03``, ``2:03``, ``4.2s`` or ``35ms``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def elapsed(record: JobRecord) -> float | None:
    """Seconds the job has been (or was) executing, or None before it started."""
    if record.start_time is None:
        return None
    end = record.end_time or datetime.now(UTC)
    return max(0.0, (end - record.start_time).total_seconds())


def phase_text(phase: Phase) -> Text:
    """A phase, coloured."""
    return Text(phase.value, style=PHASE_STYLE.get(phase, ""))


def parse_parameter(text: str) -> tuple[str, ParameterInput]:
    """``key=value``: the value is an int, else a float, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        fail(f"a parameter is key=value, not {text!r}", EXIT_USAGE)
    value: ParameterInput
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            value = raw
    return key.strip(), value


# ---------------------------------------------------------------------- waiting, shown live


class ElapsedColumn(ProgressColumn):
    """How long the job has been executing, ticking while it runs."""

    def render(self, task: ProgressTask) -> Text:
        """The elapsed time of the job shown in ``task``."""
        record: JobRecord | None = task.fields.get("record")
        seconds = None if record is None else elapsed(record)
        return Text("-" if seconds is None else format_seconds(seconds), style="progress.elapsed")


class PhaseColumn(ProgressColumn):
    """The job's phase, coloured."""

    def render(self, task: ProgressTask) -> Text:
        """The phase of the job shown in ``task``."""
        record: JobRecord | None = task.fields.get("record")
        return Text("…") if record is None else phase_text(record.phase)


class TasksColumn(ProgressColumn):
    """Tasks finished of total."""

    def render(self, task: ProgressTask) -> Text:
        """The task count of the job shown in ``task``."""
        record: JobRecord | None = task.fields.get("record")
        tasks = None if record is None else record.execution.progress.get("tasks")
        if tasks is None or tasks.max_value == 0:
            return Text("")
        return Text(f"{tasks.value}/{tasks.max_value} tasks")


def show_progress(progress: Progress, row: TaskID, record: JobRecord) -> None:
    """Update a job's row: phase, tasks done of total, elapsed time."""
    tasks = record.execution.progress.get("tasks")
    if tasks is not None and tasks.max_value > 0:
        total, done = float(tasks.max_value), float(tasks.value)
    else:  # a job without tasks: the bar is full once it has finished
        total, done = 1.0, 0.0 if record.phase in ACTIVE_PHASES else 1.0
    progress.update(row, total=total, completed=done, record=record)


async def wait_live(
    connection: Connection,
    job_ids: Sequence[str],
    *,
    timeout: float | None,
    console: Console | None = None,
) -> list[JobRecord]:
    """Wait for every job at once; on a terminal ``console``, show their progress live."""
    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        PhaseColumn(),
        BarColumn(),
        TasksColumn(),
        ElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    finals: dict[str, JobRecord] = {}
    async with connection.async_client() as client:

        async def follow(job_id: str) -> None:
            row = progress.add_task(job_id, total=None, record=None)
            async for record in client.watch(job_id, timeout=timeout, poll=2.0):
                label = f"{record.name} ({job_id[:8]})" if record.name else job_id
                progress.update(row, description=label)
                show_progress(progress, row, record)
                finals[job_id] = record

        with progress:
            try:
                async with asyncio.TaskGroup() as group:
                    for job_id in job_ids:
                        group.create_task(follow(job_id))
            except* ClientError as errors:
                raise errors.exceptions[0] from None
    return [finals[job_id] for job_id in job_ids]


def report_finished(records: Sequence[JobRecord], *, as_json: bool) -> None:
    """Print the final records; exit 3 if any ended in ERROR, ABORTED or UNKNOWN."""
    if as_json:
        print_json(dump(list(records)))
    else:
        for record in records:
            line = f"{record.id} {record.phase.value}"
            if record.phase in FAILED_PHASES and record.errors:
                line += f": {record.errors[-1].message}"
            typer.echo(line)
    if any(record.phase in FAILED_PHASES for record in records):
        raise typer.Exit(EXIT_JOB_FAILED)


# ---------------------------------------------------------------------- commands


def submit(
    job_type: Annotated[str, typer.Argument(help="The job type (see GET /api/v1/job-types).")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="A parameter, key=value (repeat). Numbers are sent as numbers."
        ),
    ] = None,
    json_parameters: Annotated[
        str | None,
        typer.Option("--json-parameters", help="Opaque JSON for the job type.", show_default=False),
    ] = None,
    name: Annotated[str, typer.Option(help="A name for people.")] = "",
    priority: Annotated[int, typer.Option(help="0-100; higher runs first.")] = 50,
    start: Annotated[
        bool, typer.Option("--start/--no-start", help="Queue it at once, or leave it PENDING.")
    ] = True,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it has finished.")] = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Submit a job of type TYPE and print its id (with --wait: wait for it, like `wait`)."""
    if wait and not start:
        fail("--wait needs --start: a PENDING job does not run", EXIT_USAGE)
    parameters = dict(parse_parameter(p) for p in param or [])
    document: Any = None
    if json_parameters is not None:
        try:
            document = json.loads(json_parameters)
        except json.JSONDecodeError as error:
            fail(f"--json-parameters is not JSON: {error}", EXIT_USAGE)
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        record = client.create(
            job_type,
            parameters=parameters,
            json_parameters=document,
            name=name,
            priority=priority,
            start=start,
        )
    if not wait:
        if as_json:
            print_json(dump(record))
        else:
            typer.echo(record.id)
        return
    with connection.reporting():
        finals = asyncio.run(
            wait_live(connection, [record.id], timeout=timeout, console=status_console(as_json))
        )
    report_finished(finals, as_json=as_json)


def list_jobs(
    phase: Annotated[
        list[Phase] | None,
        typer.Option(
            "--phase", help="Only jobs in this phase (repeat for several).", case_sensitive=False
        ),
    ] = None,
    job_type: Annotated[
        str | None, typer.Option("--type", help="Only jobs of this type.", show_default=False)
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Admins: only this owner's jobs.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.", min=1)] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """List jobs, newest first."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        found = list(
            client.list(
                phases=phase or (),
                job_type=job_type,
                owner=owner,
                page_size=min(limit, 1000),
                limit=limit,
            )
        )
    if as_json:
        print_json(dump(found))
        return
    output_console().print(jobs_table(found))


def jobs_table(found: Sequence[JobSummary]) -> Table:
    """A table of jobs."""
    table = Table(box=None, header_style="bold")
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("NAME")
    table.add_column("TYPE")
    table.add_column("OWNER")
    table.add_column("PHASE", no_wrap=True)
    table.add_column("PRI", justify="right")
    table.add_column("CREATED", no_wrap=True)
    for job in found:
        table.add_row(
            job.id,
            job.name,
            job.job_type or "-",
            job.owner,
            phase_text(job.phase),
            str(job.priority),
            format_time(job.creation_time),
        )
    return table


def show(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Show a job's record and timeline."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        record = client.get(job_id)
    if as_json:
        print_json(dump(record))
        return
    console = output_console()
    for renderable in record_view(record):
        console.print(renderable)


def record_view(record: JobRecord) -> list[Any]:
    """What `show` prints: the fields, the timeline, errors, messages and results."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    tasks = record.execution.progress.get("tasks")
    seconds = elapsed(record)
    rows: list[tuple[str, str | Text]] = [
        ("id", record.id),
        ("name", record.name or "-"),
        ("type", record.job_type or "- (driven through the API)"),
        ("owner", record.owner),
        ("phase", phase_text(record.phase)),
        ("status", record.status.value),
        ("priority", str(record.priority)),
        ("tasks", f"{tasks.value}/{tasks.max_value}" if tasks else "-"),
        ("created", format_time(record.creation_time)),
        ("started", format_time(record.start_time)),
        ("ended", format_time(record.end_time)),
        ("elapsed", "-" if seconds is None else format_seconds(seconds)),
        ("destruction", format_time(record.destruction_time)),
    ]
    if record.queue_position is not None:
        rows.append(("queue position", str(record.queue_position)))
    for key, parameter in record.parameters.items():
        rows.append((f"parameter {key}", f"{parameter.value!r} ({parameter.type})"))
    if record.json_parameters is not None:
        rows.append(("json parameters", json.dumps(record.json_parameters)))
    for key, value in rows:
        fields.add_row(key, value)
    parts: list[Any] = [fields, ""]
    timeline = Table(title="timeline", title_justify="left", box=None, header_style="bold")
    timeline.add_column("PHASE")
    timeline.add_column("SOURCE")
    timeline.add_column("TIME", no_wrap=True)
    for entry in record.timeline:
        timeline.add_row(
            phase_text(Phase(entry.status)), entry.source, format_time(entry.timestamp)
        )
    parts.append(timeline)
    for error in record.errors:
        code = f" [{error.error_code}]" if error.error_code else ""
        parts.append(Text(f"error{code} from {error.source}: {error.message}", style="red"))
    for message in record.messages:
        parts.append(Text(f"{message.level} from {message.source}: {message.message}"))
    for result in record.results:
        where = result.url or f"{result.size if result.size is not None else '?'} bytes"
        parts.append(Text(f"result {result.id}: {where}"))
    return parts


def wait(
    job_ids: JobIdsArgument,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Wait for jobs to finish, showing their phase, progress and elapsed time.

    Exits 3 if a job ended in ERROR, ABORTED or UNKNOWN.
    """
    connection = Connection(url, token, data_dir)
    with connection.reporting():
        finals = asyncio.run(
            wait_live(connection, job_ids, timeout=timeout, console=status_console(as_json))
        )
    report_finished(finals, as_json=as_json)


def logs(
    job_id: JobIdArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print new lines until the job finishes.")
    ] = False,
    level: Annotated[str, typer.Option(help="debug, info, warning or error and above.")] = "debug",
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Print a job's log (with --json: one JSON object a line)."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        for entry in client.logs(job_id, follow=follow, level=level):
            if as_json:
                typer.echo(entry.model_dump_json())
            else:
                task = "" if entry.task is None else f" task {entry.task}"
                stamp = format_time(entry.timestamp)
                typer.echo(f"{stamp} {entry.level.upper()}{task}: {entry.message}")
            sys.stdout.flush()


_RESULT_LIST = TypeAdapter(list[ResultRef])


def results(
    job_id: JobIdArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Directory to save into [default: ./JOB_ID].", show_default=False
        ),
    ] = None,
    only_list: Annotated[
        bool, typer.Option("--list", help="List the results; download nothing.")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Download a job's results into a directory (or --list them)."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        if only_list:
            refs = client.results(job_id)
            if as_json:
                print_json(dump(refs))
            else:
                for ref in refs:
                    typer.echo(
                        f"{ref.id}\t{ref.size if ref.size is not None else '-'}\t{ref.url or ''}"
                    )
            return
        saved = client.download_results(job_id, output or Path(job_id))
    if as_json:
        print_json([str(path) for path in saved])
    elif not saved:
        typer.echo(f"job {job_id} has no results", err=True)
    else:
        for path in saved:
            typer.echo(str(path))


def abort(
    job_ids: JobIdsArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Abort jobs; their running tasks are killed. A finished job stays as it is."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        for job_id in job_ids:
            typer.echo(f"{job_id} {client.abort(job_id).phase.value}")


def rm(
    job_ids: JobIdsArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Delete jobs with their records and results (a running job is killed first)."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        for job_id in job_ids:
            client.delete(job_id)
            typer.echo(f"deleted {job_id}")


def workers(
    processes: Annotated[
        int | None,
        typer.Option(
            "--set",
            help="Run this many worker processes from now on (0: none). Fewer: a process "
            "taken out finishes the tasks it was handed first.",
            min=0,
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Show, or --set, how many worker processes the server runs (admins only)."""
    connection = Connection(url, token, data_dir)
    with connection.reporting(), connection.client() as client:
        local = client.workers() if processes is None else client.set_workers(processes)
    if as_json:
        print_json(dump(local))
    else:
        plural = "" if local.processes == 1 else "es"
        typer.echo(f"{local.processes} worker process{plural}, {local.held_tasks} tasks held")


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``jobdeck`` app."""
    app.command()(submit)
    app.command("list")(list_jobs)
    app.command()(show)
    app.command()(wait)
    app.command()(logs)
    app.command()(results)
    app.command()(abort)
    app.command()(rm)
    app.command()(workers)
