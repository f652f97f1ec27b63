"""The asyncio client: :class:`AsyncClient`, the same API as :class:`~jobdeck.client.Client`."""

import builtins
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from jobdeck.client import calls
from jobdeck.client.calls import Call, Download, Emit, Plan, raise_for_error, unreachable
from jobdeck.client.config import client_headers, resolve_token, resolve_url
from jobdeck.domain.phases import Phase, Status
from jobdeck.domain.records import (
    JobError,
    JobRecord,
    JobSummary,
    LocalWorkers,
    LogEntry,
    ParameterInput,
    ResultRef,
    Stats,
    TokenCreated,
)

T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R")


class AsyncClient:
    """An asyncio client of the jobdeck native API: :class:`~jobdeck.client.Client`'s methods,
    awaited (``list``, ``watch`` and ``logs`` are async iterators).

    Use it as an async context manager, or await :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=client_headers(resolve_token(token)),
            timeout=timeout,
            transport=transport,
        )

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ carrying out steps

    async def _send(self, call: Call[T]) -> T:
        timeout = httpx.Timeout(self.timeout, read=self.timeout + call.extra_timeout)
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                content=call.content(),
                headers=call.request_headers(),
                timeout=timeout,
            )
        except httpx.TransportError as error:
            raise unreachable(self.url, error) from None
        return call.parse(response)

    async def _download(self, step: Download) -> None:
        step.target.parent.mkdir(parents=True, exist_ok=True)
        partial = calls.partial_path(step.target)
        try:
            async with self._http.stream("GET", step.path, follow_redirects=True) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_error(response)
                async with await anyio.open_file(partial, "wb") as handle:
                    async for chunk in response.aiter_bytes():
                        await handle.write(chunk)
        except httpx.TransportError as error:
            raise unreachable(self.url, error) from None
        partial.replace(step.target)

    async def _step(self, step: Call[Any] | Download) -> Any:
        if isinstance(step, Download):
            return await self._download(step)
        return await self._send(step)

    async def _stream(self, plan: Plan[E, Any]) -> AsyncIterator[E]:
        """Carry out a plan, handing over what it emits."""
        outcome: Any = None
        while True:
            try:
                step = plan.send(outcome)
            except StopIteration:
                return
            outcome = None
            if isinstance(step, Emit):
                yield step.item
            else:
                outcome = await self._step(step)

    async def _finish(self, plan: Plan[Any, R]) -> R:
        """Carry out a plan for its return value."""
        outcome: Any = None
        while True:
            try:
                step = plan.send(outcome)
            except StopIteration as stop:
                result: R = stop.value
                return result
            outcome = None if isinstance(step, Emit) else await self._step(step)

    # ------------------------------------------------------------------ jobs

    async def create(
        self,
        job_type: str | None = None,
        *,
        parameters: Mapping[str, ParameterInput] | None = None,
        json_parameters: Any = None,
        name: str = "",
        description: str = "",
        priority: int = 50,
        run_id: str | None = None,
        start: bool = False,
        execution_duration: int | None = None,
        max_retries_per_task: int = 0,
        max_failed_tasks: int = 0,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> JobRecord:
        """Create a job; see :meth:`jobdeck.client.Client.create`."""
        request = calls.build_job_create(
            job_type,
            parameters=parameters,
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
        call = calls.create_job(request, idempotency_key=idempotency_key, wait=wait)
        return await self._send(call)

    async def get(self, job_id: str, *, wait: float | None = None) -> JobRecord:
        """The record of a job; see :meth:`jobdeck.client.Client.get`."""
        return await self._send(calls.get_job(job_id, wait=wait))

    def list(
        self,
        *,
        phases: Iterable[Phase | str] = (),
        status: Status | str | None = None,
        job_type: str | None = None,
        run_id: str | None = None,
        owner: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[JobSummary]:
        """The jobs the token may see, newest first, fetched page by page (``async for``)."""
        return self._stream(
            calls.list_jobs(
                phases=phases,
                status=status,
                job_type=job_type,
                run_id=run_id,
                owner=owner,
                page_size=page_size,
                limit=limit,
            )
        )

    async def run(self, job_id: str) -> JobRecord:
        """Queue a PENDING job (PENDING → QUEUED)."""
        return await self._send(calls.job_action(job_id, "run"))

    async def abort(self, job_id: str) -> JobRecord:
        """Abort a job; a job that has already finished stays as it is."""
        return await self._send(calls.job_action(job_id, "abort"))

    async def copy(self, job_id: str) -> JobRecord:
        """A new PENDING job with the same type, parameters and limits."""
        return await self._send(calls.job_action(job_id, "copy"))

    async def delete(self, job_id: str) -> None:
        """Delete a job, its record and its results (a running job is killed first)."""
        await self._send(calls.delete_job(job_id))

    def watch(
        self, job_id: str, *, timeout: float | None = None, poll: float = 30.0
    ) -> AsyncIterator[JobRecord]:
        """Each new state of a job until it has finished (``async for``)."""
        return self._stream(calls.watch_job(job_id, timeout=timeout, poll=poll))

    async def wait(
        self, job_id: str, *, timeout: float | None = None, poll: float = 30.0
    ) -> JobRecord:
        """Wait until a job leaves the active phases; see :meth:`jobdeck.client.Client.wait`."""
        return await self._finish(calls.watch_job(job_id, timeout=timeout, poll=poll))

    def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        offset: int = 0,
        level: str = "debug",
        poll: float = 1.0,
    ) -> AsyncIterator[LogEntry]:
        """The log lines of a job (``async for``); with ``follow``, until it finishes."""
        return self._stream(
            calls.follow_logs(job_id, follow=follow, offset=offset, level=level, poll=poll)
        )

    async def results(self, job_id: str) -> builtins.list[ResultRef]:
        """The results of a job."""
        return await self._send(calls.list_results(job_id))

    async def download_results(
        self, job_id: str, directory: Path | str, *, result_ids: Iterable[str] | None = None
    ) -> builtins.list[Path]:
        """Save a job's results (or those named) as files under ``directory``."""
        return await self._finish(
            calls.download_results(job_id, Path(directory), result_ids=result_ids)
        )

    # ------------------------------------------------------------------ jobs you drive

    async def start(self, job_id: str) -> JobRecord:
        """Report that a job without a type is executing (QUEUED → EXECUTING)."""
        return await self._send(calls.start_job(job_id))

    async def complete(self, job_id: str, results: Sequence[ResultRef] = ()) -> JobRecord:
        """Report that a job without a type is done (EXECUTING → COMPLETED), with results."""
        return await self._send(calls.complete_job(job_id, results))

    async def fail(self, job_id: str, errors: Sequence[JobError | str]) -> JobRecord:
        """Report that a job without a type failed (→ ERROR), with its errors."""
        return await self._send(calls.fail_job(job_id, errors))

    async def add_message(self, job_id: str, message: str, *, level: str = "info") -> JobRecord:
        """Add a message to a job's record."""
        return await self._send(calls.add_message(job_id, message, level))

    # ------------------------------------------------------------------ service

    async def create_token(self, user: str, *, admin: bool = False) -> TokenCreated:
        """Create a bearer token for ``user`` (needs an admin token)."""
        return await self._send(calls.create_token(user, admin=admin))

    async def stats(self) -> Stats:
        """How many jobs the token may see, by phase."""
        return await self._send(calls.stats())

    async def workers(self) -> LocalWorkers:
        """The worker processes of the server itself (admins only)."""
        return await self._send(calls.local_workers())

    async def set_workers(self, processes: int) -> LocalWorkers:
        """Have the server run ``processes`` worker processes from now on, without a restart
        (admins only); fewer stop once they have finished the tasks they were handed."""
        return await self._send(calls.resize_local_workers(processes))

    async def health(self) -> dict[str, Any]:
        """The server's liveness answer (needs no token)."""
        answer: dict[str, Any] = await self._send(calls.health())
        return answer
