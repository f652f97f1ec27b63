"""The exceptions the client raises: one per kind of failure, each with the server's words.

An error the server answered carries its ``{code, message, detail}`` body and the HTTP status;
a server that cannot be reached raises :class:`ServiceUnavailable`.
"""

from typing import Any


class ClientError(Exception):
    """Base of every error the jobdeck client raises.

    ``code`` is the server's machine-readable code (``not_found``, ``invalid_phase``, ...),
    ``message`` its sentence for people, ``detail`` whatever more it said, ``status`` the HTTP
    status (None when no answer came).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        detail: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        return self.message


class BadRequest(ClientError):
    """400: the request is malformed (e.g. not JSON)."""


class Unauthorized(ClientError):
    """401: no token, or a token the server does not know."""


class Forbidden(ClientError):
    """403: a valid token that does not allow this request."""


class NotFound(ClientError):
    """404: no such job or result, or one the caller may not see."""


class Conflict(ClientError):
    """409: the job's phase does not allow the request (``invalid_phase``, ``conflict``)."""


class PayloadTooLarge(ClientError):
    """413: the request body is over the server's limit."""


class ValidationFailed(ClientError):
    """422 (or a request refused before sending): the content is not acceptable."""


class ServerError(ClientError):
    """5xx: the server failed; its log has the details."""


class ServiceUnavailable(ClientError):
    """The server could not be reached (refused, timed out, or answered 502/503/504)."""


class WaitTimeout(ClientError):
    """A wait ended before the job reached a final phase."""


ERROR_OF_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_class(status: int) -> type[ClientError]:
    """The exception class for an HTTP error status."""
    if status in ERROR_OF_STATUS:
        return ERROR_OF_STATUS[status]
    return ServerError if status >= 500 else ClientError
