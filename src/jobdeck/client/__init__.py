"""The jobdeck client: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), over httpx.

Both speak the native API (``/api/v1``) and return the server's own pydantic models
(:class:`~jobdeck.domain.records.JobRecord`, ...). Errors are :class:`ClientError` subclasses
carrying the server's ``code``, ``message`` and ``detail``.
"""

from typing import TYPE_CHECKING, Any

from jobdeck.client.errors import (
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
)
from jobdeck.domain.records import (
    JobError,
    JobRecord,
    JobSummary,
    LogEntry,
    ResultRef,
    TokenCreated,
)

if TYPE_CHECKING:
    from jobdeck.client.asynchronous import AsyncClient
    from jobdeck.client.sync import Client


def __getattr__(name: str) -> Any:
    # The clients load httpx, so they are imported on first use: `jobdeck serve` shares its
    # program with the client commands and needs neither.
    if name == "Client":
        from jobdeck.client.sync import Client

        return Client
    if name == "AsyncClient":
        from jobdeck.client.asynchronous import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ConnectionFailed = ServiceUnavailable
"""Another name for :class:`ServiceUnavailable`: the server could not be reached."""

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "JobError",
    "JobRecord",
    "JobSummary",
    "LogEntry",
    "NotFound",
    "PayloadTooLarge",
    "ResultRef",
    "ServerError",
    "ServiceUnavailable",
    "TokenCreated",
    "Unauthorized",
    "ValidationFailed",
    "WaitTimeout",
]
