"""Errors the engine raises; each front door turns them into its protocol's error format."""

from typing import Any


class JobdeckError(Exception):
    """Base of the errors a client can cause. ``code`` is stable and machine-readable."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(JobdeckError):
    """The job (or result, or token) does not exist, or the caller may not see it."""

    code = "not_found"
    http_status = 404


class InvalidTransition(JobdeckError):
    """The job's phase does not allow the requested change."""

    code = "invalid_phase"
    http_status = 409


class Conflict(JobdeckError):
    """The request conflicts with the job's current state."""

    code = "conflict"
    http_status = 409


class ValidationFailed(JobdeckError):
    """The request is well-formed but its content is not acceptable."""

    code = "validation_failed"
    http_status = 422


class Unauthorized(JobdeckError):
    """No credentials, or credentials that are not valid."""

    code = "unauthorized"
    http_status = 401


class Forbidden(JobdeckError):
    """Valid credentials that do not allow this request."""

    code = "forbidden"
    http_status = 403
