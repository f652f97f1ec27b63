"""The jobdeck client: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio), over httpx.

Both speak the native API (``/api/v1``) and return the server's own pydantic models
(:class:`~jobdeck.domain.records.JobRecord`, ...). Errors are :class:`ClientError` subclasses
carrying the server's ``code``, ``message`` and ``detail``.
"""

from jobdeck.client.asynchronous import AsyncClient
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
from jobdeck.client.sync import Client
from jobdeck.domain.records import (
    JobError,
    JobRecord,
    JobSummary,
    LogEntry,
    ResultRef,
    TokenCreated,
)

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
