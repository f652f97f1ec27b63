"""The one request-building and response-parsing layer under both clients.

Every API operation is a :class:`Call`: what to send and how to read the answer. Operations
that take several requests — waiting, following a log, paging through a listing, downloading
results — are *plans*: generators that yield steps (:class:`Call`, :class:`Emit`,
:class:`Download`) and are sent back each step's outcome. :class:`~jobdeck.client.Client` and
:class:`~jobdeck.client.AsyncClient` only carry the steps out, one with blocking I/O and one
with ``await``; no rule of the protocol is written twice.
"""

import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from jobdeck.client.errors import (
    ClientError,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
    WaitTimeout,
    error_class,
)
from jobdeck.domain.phases import ACTIVE_PHASES, Phase, Status
from jobdeck.domain.records import (
    CompleteRequest,
    ErrorBody,
    FailRequest,
    JobCreate,
    JobError,
    JobList,
    JobRecord,
    JobSummary,
    LocalWorkers,
    LocalWorkersChange,
    LogEntry,
    LogPage,
    MessageCreate,
    ParameterInput,
    ResultRef,
    StartRequest,
    Stats,
    TokenCreate,
    TokenCreated,
)

T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

QueryParams = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and how to read its answer into a ``T``."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: QueryParams | None = None
    body: BaseModel | None = None
    headers: Mapping[str, str] | None = None
    extra_timeout: float = 0.0
    """Seconds to add to the read timeout: the server may hold the request that long."""

    def content(self) -> bytes | None:
        """The JSON body (fields left at their default are not sent)."""
        if self.body is None:
            return None
        return self.body.model_dump_json(exclude_defaults=True).encode()

    def request_headers(self) -> dict[str, str]:
        """Headers of this request, besides the client's own."""
        headers = dict(self.headers or {})
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        return headers


@dataclass(frozen=True)
class Emit(Generic[E]):
    """A plan hands ``item`` to the caller (a job of a listing, a log line, a record)."""

    item: E


@dataclass(frozen=True)
class Download:
    """Fetch the bytes at ``path`` (following a redirect) into the file ``target``."""

    path: str
    target: Path


Step = Call[Any] | Emit[E] | Download
Plan = Generator[Step[E], Any, R]
"""A multi-request operation: yields steps, is sent each step's outcome, returns ``R``."""


# ---------------------------------------------------------------------- answers


def raise_for_error(response: httpx.Response) -> None:
    """Raise the client error that fits an error answer (its body must have been read)."""
    if response.is_success:
        return
    status = response.status_code
    try:
        body = ErrorBody.model_validate_json(response.content)
        code, message, detail = body.code, body.message, body.detail
    except PydanticValidationError:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        code = "http_error"
        message = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
        detail = None
    raise error_class(status)(message, code=code, detail=detail, status=status)


def unreachable(base_url: str, error: httpx.TransportError) -> ServiceUnavailable:
    """The error for a server that did not answer."""
    reason = str(error) or type(error).__name__
    return ServiceUnavailable(f"cannot reach jobdeck at {base_url}: {reason}", code="unreachable")


def model_parser(model: type[M]) -> Callable[[httpx.Response], M]:
    """Read an answer as ``model`` (raising the fitting error for an error answer)."""

    def parse(response: httpx.Response) -> M:
        raise_for_error(response)
        return model.model_validate_json(response.content)

    return parse


def adapter_parser(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    """Read an answer with a type adapter (for lists of models)."""

    def parse(response: httpx.Response) -> T:
        raise_for_error(response)
        return adapter.validate_json(response.content)

    return parse


def no_content(response: httpx.Response) -> None:
    """Accept an answer without a body."""
    raise_for_error(response)


def json_parser(response: httpx.Response) -> Any:
    """Read an answer as plain JSON."""
    raise_for_error(response)
    return response.json()


_RESULTS = TypeAdapter(list[ResultRef])


# ---------------------------------------------------------------------- single requests


def job_path(job_id: str, *tail: str) -> str:
    """The API path of a job (the id is escaped: it comes from users). An empty id is no
    job's: refused before asking (``GET /jobs/`` is the list's address)."""
    if not job_id:
        raise NotFound("no job has an empty id", code="not_found", detail={"job_id": job_id})
    return "/".join([f"/jobs/{escaped(job_id)}", *tail])


def escaped(text: str, safe: str = "") -> str:
    """``text`` for a URL's path, percent-escaped; dots too: a segment "." or ".." would be
    resolved away by the URL."""
    return quote(text, safe=safe).replace(".", "%2E")


def build_job_create(
    job_type: str | None,
    *,
    parameters: Mapping[str, ParameterInput] | None,
    json_parameters: Any,
    name: str,
    description: str,
    priority: int,
    run_id: str | None,
    start: bool,
    execution_duration: int | None,
    max_retries_per_task: int,
    max_failed_tasks: int,
) -> JobCreate:
    """The request body of a new job, checked before it is sent."""
    try:
        return JobCreate(
            job_type=job_type,
            parameters=dict(parameters or {}),
            json_parameters=json_parameters,
            name=name,
            description=description,
            priority=priority,
            run_id=run_id,
            start=start,
            execution_duration=execution_duration,
            max_retries_per_task=max_retries_per_task,
            max_failed_tasks=max_failed_tasks,
        )
    except PydanticValidationError as error:
        raise _refused(error) from None


def _refused(error: PydanticValidationError) -> ValidationFailed:
    """A request body that failed its check here, as the server would refuse it."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return _invalid(f"{where}: {first['msg']}", error.errors())


def _invalid(message: str, errors: Any) -> ValidationFailed:
    return ValidationFailed(message, code="validation_failed", detail={"errors": errors})


def create_job(
    request: JobCreate, *, idempotency_key: str | None = None, wait: float | None = None
) -> Call[JobRecord]:
    """POST /jobs; with ``wait``, the answer comes once the job has run (or the wait ends)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    params: QueryParams | None = [("wait", wait)] if wait else None
    return Call(
        "POST",
        "/jobs",
        model_parser(JobRecord),
        params=params,
        body=request,
        headers=headers,
        extra_timeout=wait or 0,
    )


def get_job(job_id: str, *, wait: float | None = None) -> Call[JobRecord]:
    """GET /jobs/{id}, blocking up to ``wait`` seconds for a phase change."""
    params: QueryParams | None = [("wait", wait)] if wait else None
    return Call(
        "GET", job_path(job_id), model_parser(JobRecord), params=params, extra_timeout=wait or 0
    )


def job_action(job_id: str, action: str) -> Call[JobRecord]:
    """POST /jobs/{id}/{action} for run, abort and copy."""
    return Call("POST", job_path(job_id, action), model_parser(JobRecord))


def delete_job(job_id: str) -> Call[None]:
    """DELETE /jobs/{id}."""
    return Call("DELETE", job_path(job_id), no_content)


def start_job(job_id: str) -> Call[JobRecord]:
    """POST /jobs/{id}/start: an external job is executing (QUEUED → EXECUTING)."""
    return Call("POST", job_path(job_id, "start"), model_parser(JobRecord), body=StartRequest())


def complete_job(job_id: str, results: Sequence[ResultRef]) -> Call[JobRecord]:
    """POST /jobs/{id}/complete: an external job is done (EXECUTING → COMPLETED)."""
    body = CompleteRequest(results=list(results))
    return Call("POST", job_path(job_id, "complete"), model_parser(JobRecord), body=body)


def fail_job(job_id: str, errors: Sequence[JobError | str]) -> Call[JobRecord]:
    """POST /jobs/{id}/fail: an external job failed (→ ERROR)."""
    body = FailRequest(
        errors=[e if isinstance(e, JobError) else JobError(message=e) for e in errors]
    )
    return Call("POST", job_path(job_id, "fail"), model_parser(JobRecord), body=body)


def add_message(job_id: str, message: str, level: str) -> Call[JobRecord]:
    """POST /jobs/{id}/messages."""
    try:
        body = MessageCreate(message=message, level=level)
    except PydanticValidationError as error:
        raise _invalid(f"level: {error.errors()[0]['msg']}", error.errors()) from None
    return Call("POST", job_path(job_id, "messages"), model_parser(JobRecord), body=body)


def list_results(job_id: str) -> Call[list[ResultRef]]:
    """GET /jobs/{id}/results."""
    return Call("GET", job_path(job_id, "results"), adapter_parser(_RESULTS))


def log_page(job_id: str, *, offset: int, limit: int, level: str) -> Call[LogPage]:
    """GET /jobs/{id}/logs: lines after ``offset``."""
    params: QueryParams = [("offset", offset), ("limit", limit), ("level", level)]
    return Call("GET", job_path(job_id, "logs"), model_parser(LogPage), params=params)


def create_token(user: str, *, admin: bool) -> Call[TokenCreated]:
    """POST /tokens (admins only)."""
    return Call(
        "POST", "/tokens", model_parser(TokenCreated), body=TokenCreate(user=user, admin=admin)
    )


def stats() -> Call[Stats]:
    """GET /stats."""
    return Call("GET", "/stats", model_parser(Stats))


def local_workers() -> Call[LocalWorkers]:
    """GET /workers (admins only)."""
    return Call("GET", "/workers", model_parser(LocalWorkers))


def resize_local_workers(processes: int) -> Call[LocalWorkers]:
    """PUT /workers (admins only)."""
    try:
        body = LocalWorkersChange(processes=processes)
    except PydanticValidationError as error:
        raise _refused(error) from None
    return Call("PUT", "/workers", model_parser(LocalWorkers), body=body)


def health() -> Call[Any]:
    """GET /health (needs no token)."""
    return Call("GET", "/health", json_parser)


# ---------------------------------------------------------------------- plans


def list_jobs(
    *,
    phases: Iterable[Phase | str] = (),
    status: Status | str | None = None,
    job_type: str | None = None,
    run_id: str | None = None,
    owner: str | None = None,
    page_size: int = 100,
    limit: int | None = None,
) -> Plan[JobSummary, None]:
    """Every job that matches, newest first, page after page (at most ``limit``)."""
    params: QueryParams = [("phase", str(Phase(p))) for p in phases]
    for key, value in (("status", status), ("job_type", job_type), ("run_id", run_id)):
        if value is not None:
            params.append((key, str(value)))
    if owner is not None:
        params.append(("owner", owner))
    cursor: str | None = None
    count = 0
    while True:
        page_params = [*params, ("limit", page_size)]
        if cursor is not None:
            page_params.append(("cursor", cursor))
        page: JobList = yield Call("GET", "/jobs", model_parser(JobList), params=page_params)
        for job in page.jobs:
            if limit is not None and count >= limit:
                return
            count += 1
            yield Emit(job)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def watch_job(job_id: str, *, timeout: float | None, poll: float) -> Plan[JobRecord, JobRecord]:
    """Each new state of a job until it leaves the active phases; returns the last one.

    Every request is a blocking GET (``?wait=``) that the server answers as soon as the phase
    changes, or after ``poll`` seconds (so that progress shows) — never a busy loop. Raises
    :class:`WaitTimeout` if the job is still active after ``timeout`` seconds.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    record: JobRecord = yield get_job(job_id)
    yield Emit(record)
    while record.phase in ACTIVE_PHASES:
        wait = poll
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"job {job_id} is still {record.phase.value} after {timeout:g} s",
                    code="timeout",
                    detail={"phase": record.phase.value},
                )
            wait = min(poll, remaining)
        latest: JobRecord = yield get_job(job_id, wait=wait)
        if latest != record:
            yield Emit(latest)
        record = latest
    return record


def follow_logs(
    job_id: str, *, follow: bool, offset: int, level: str, page_size: int = 1000, poll: float = 1.0
) -> Plan[LogEntry, None]:
    """The log lines of a job after ``offset``; with ``follow``, until the job has finished.

    Between reads while following, a blocking GET of the job waits up to ``poll`` seconds, and
    returns at once when the job's phase changes.
    """
    finished = False
    while True:
        page: LogPage = yield log_page(job_id, offset=offset, limit=page_size, level=level)
        for entry in page.logs:
            yield Emit(entry)
        offset = page.next_offset
        if len(page.logs) == page_size:
            continue
        if not follow or finished:
            return
        record: JobRecord = yield get_job(job_id, wait=poll)
        finished = record.phase not in ACTIVE_PHASES  # read once more, then stop


def result_target(directory: Path, result_id: str) -> Path:
    """Where a result is saved: under ``directory``, never outside it."""
    root = directory.resolve()
    target = (root / result_id).resolve()
    if not target.is_relative_to(root) or target == root:
        raise ClientError(f"result id {result_id!r} would be saved outside {directory}")
    return target


def download_results(
    job_id: str, directory: Path, *, result_ids: Iterable[str] | None = None
) -> Plan[None, list[Path]]:
    """Save a job's results as files under ``directory``; returns their paths."""
    refs: list[ResultRef] = yield list_results(job_id)
    wanted = None if result_ids is None else set(result_ids)
    if wanted is not None:
        missing = wanted - {ref.id for ref in refs}
        if missing:
            raise NotFound(f"job {job_id} has no result {sorted(missing)[0]!r}", code="not_found")
    saved: list[Path] = []
    for ref in refs:
        if wanted is not None and ref.id not in wanted:
            continue
        target = result_target(directory, ref.id)
        yield Download(job_path(job_id, "results", escaped(ref.id, safe="/")), target)
        saved.append(target)
    return saved


def partial_path(target: Path) -> Path:
    """Where a download is written until it is complete."""
    return target.with_name(target.name + ".part")
