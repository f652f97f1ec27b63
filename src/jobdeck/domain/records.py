"""The job record and the request bodies of the native API (pydantic v2).

One record answers for every protocol: the native API returns it as it is, the other front
doors are views made from it. Field names follow IQM's ``JobData`` (which ignores what it does
not know), Safir's Wobbly ``SerializedJob`` and UWS 1.1, so that each maps without renaming.
"""

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from jobdeck.domain.limits import (
    ERROR_CODE_MAX_LENGTH,
    INT32_MAX,
    MAX_LOCAL_PROCESSES,
    MIME_TYPE_MAX_LENGTH,
    RESULT_ID_MAX_LENGTH,
    SOURCE_MAX_LENGTH,
)
from jobdeck.domain.parameters import ParamType
from jobdeck.domain.phases import Phase, Status


def format_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (pyvo and others fail on ``+00:00``)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


UtcDateTime = Annotated[datetime, PlainSerializer(format_utc, return_type=str)]
StrictScalar = StrictInt | StrictFloat | StrictStr
"""A JSON number or string; ``true`` is not silently taken for 1."""


class TypedParameter(BaseModel):
    """A parameter value with its type."""

    type: Annotated[ParamType, Field(title="Type", description="int, float, string or path.")]
    value: Annotated[StrictScalar, Field(title="Value", description="The value, of that type.")]


class TimelineEntry(BaseModel):
    """One phase the job reached: when, and who caused it."""

    status: Annotated[str, Field(title="Status", description="The phase reached.")]
    source: Annotated[
        str,
        Field(
            title="Source",
            description="Who caused it: api, scheduler, worker:<id>, sweeper, ...",
            examples=["api", "worker:host-1234"],
        ),
    ]
    timestamp: Annotated[UtcDateTime, Field(title="Timestamp", description="When, in UTC.")]


class Message(BaseModel):
    """A message about the job, for people."""

    source: Annotated[str, Field(title="Source", description="Who wrote it.")]
    message: Annotated[str, Field(title="Message", description="The text.")]
    level: Annotated[str, Field(title="Level", description="debug, info, warning or error.")] = (
        "info"
    )
    timestamp: Annotated[UtcDateTime, Field(title="Timestamp", description="When, in UTC.")]


ErrorType = Literal["transient", "fatal"]


class JobError(BaseModel):
    """An error the job met."""

    source: Annotated[str, Field(title="Source", description="Who reported it.")] = "api"
    message: Annotated[str, Field(title="Message", description="What went wrong.")]
    error_code: Annotated[
        str | None,
        Field(
            title="Error code",
            description="Machine-readable code: aborted, timeout, exit_code, worker_lost, ...",
        ),
    ] = None
    type: Annotated[
        ErrorType,
        Field(title="Type", description="transient (a retry may succeed) or fatal."),
    ] = "fatal"
    detail: Annotated[
        str | None, Field(title="Detail", description="Longer detail, e.g. a traceback.")
    ] = None


class ResultRef(BaseModel):
    """One result of a job."""

    id: Annotated[str, Field(title="Result id", description="Unique within the job.")]
    url: Annotated[
        str | None,
        Field(title="URL", description="Where to fetch it; null for files served by jobdeck."),
    ] = None
    size: Annotated[int | None, Field(title="Size", description="Size in bytes.")] = None
    mime_type: Annotated[str | None, Field(title="MIME type", description="Content type.")] = None


class ProgressValue(BaseModel):
    """Progress of one labelled counter."""

    value: Annotated[int, Field(title="Value", description="Done so far.")]
    max_value: Annotated[int, Field(title="Maximum", description="Done when value reaches it.")]


class Execution(BaseModel):
    """Execution details; ``progress`` has at least ``tasks``: tasks finished of total."""

    progress: Annotated[
        dict[str, ProgressValue],
        Field(title="Progress", description="Counters by label, e.g. tasks: 3 of 10."),
    ]


class JobRecord(BaseModel):
    """The full record of a job, as every protocol sees it."""

    id: Annotated[str, Field(title="Job id", description="A UUID string.")]
    name: Annotated[str, Field(title="Name", description="A human-readable name.")]
    description: Annotated[str, Field(title="Description", description="Free text.")]
    job_type: Annotated[
        str | None,
        Field(
            title="Job type",
            description="What runs it; null for a job driven by its owner through the API.",
        ),
    ]
    owner: Annotated[str, Field(title="Owner", description="The user the job belongs to.")]
    created_by: Annotated[str, Field(title="Created by", description="Who created it.")]
    updated_by: Annotated[str, Field(title="Updated by", description="Who changed it last.")]
    run_id: Annotated[
        str | None, Field(title="Run id", description="A client-provided identifier.")
    ]
    source_job_id: Annotated[
        str | None, Field(title="Source job", description="The job this one was copied from.")
    ]
    message_id: Annotated[
        str | None,
        Field(title="Message id", description="The queue message id an external runner gave."),
    ]
    phase: Annotated[Phase, Field(title="Phase", description="UWS 1.1 execution phase.")]
    status: Annotated[
        Status, Field(title="Status", description="Coarse summary of the phase (IQM vocabulary).")
    ]
    priority: Annotated[int, Field(title="Priority", description="0-100; higher runs first.")]
    queue_position: Annotated[
        int | None,
        Field(
            title="Queue position",
            description="Jobs ahead of this one while QUEUED, counted up to 1,000 "
            "(a deeper queue reads 1000).",
        ),
    ]
    quote: Annotated[
        UtcDateTime | None,
        Field(title="Quote", description="Expected completion time, when it can be estimated."),
    ]
    creation_time: Annotated[UtcDateTime, Field(title="Created", description="UTC.")]
    updated_time: Annotated[UtcDateTime, Field(title="Updated", description="UTC.")]
    start_time: Annotated[
        UtcDateTime | None, Field(title="Started", description="When it began executing.")
    ]
    end_time: Annotated[
        UtcDateTime | None, Field(title="Ended", description="When it reached a final phase.")
    ]
    destruction_time: Annotated[
        UtcDateTime | None,
        Field(title="Destruction time", description="When results are deleted and it archives."),
    ]
    execution_duration: Annotated[
        int,
        Field(title="Execution duration", description="Limit in seconds; 0 means unlimited."),
    ]
    parameters: Annotated[
        dict[str, TypedParameter],
        Field(title="Parameters", description="Typed parameter values."),
    ]
    json_parameters: Annotated[
        Any, Field(title="JSON parameters", description="Opaque JSON the job type interprets.")
    ]
    timeline: Annotated[
        list[TimelineEntry],
        Field(title="Timeline", description="Every phase reached, oldest first."),
    ]
    messages: Annotated[list[Message], Field(title="Messages", description="Oldest first.")]
    errors: Annotated[list[JobError], Field(title="Errors", description="Oldest first.")]
    results: Annotated[list[ResultRef], Field(title="Results", description="The job's results.")]
    execution: Annotated[Execution, Field(title="Execution", description="Progress counters.")]
    max_retries_per_task: Annotated[
        int, Field(title="Retries per task", description="How often a failed task is retried.")
    ]
    max_failed_tasks: Annotated[
        int,
        Field(title="Failure budget", description="The job fails once more tasks than this fail."),
    ]
    task_status_counts: Annotated[
        dict[str, int], Field(title="Task counts", description="Tasks by state.")
    ]


class JobSummary(BaseModel):
    """A job in a listing: the record without its history and outcome."""

    id: str
    name: str
    job_type: str | None
    owner: str
    run_id: str | None
    phase: Phase
    status: Status
    priority: int
    creation_time: UtcDateTime
    updated_time: UtcDateTime
    start_time: UtcDateTime | None
    end_time: UtcDateTime | None


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: Annotated[list[JobSummary], Field(title="Jobs", description="This page.")]
    next_cursor: Annotated[
        str | None,
        Field(title="Next cursor", description="Pass as ?cursor= for the next page; null at end."),
    ]


ParameterInput = StrictScalar | TypedParameter


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _plain_text(value: str | None) -> str | None:
    # PostgreSQL refuses a NUL character in text, and SQLite's JSON functions (which read a
    # batch of jobs) end a text at one: refused here, the same on every store.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _json_documents(value: Any) -> Any:
    # JSON's escapes can spell a lone surrogate ("\udce9"), which no UTF-8 text can hold:
    # pydantic refuses one in a text field, but in a JSON document or a parameter's name it
    # was stored, and every answer holding the job failed (a 500, its creation's first).
    # NaN and Infinity, which Python's JSON reads, are no JSON numbers: PostgreSQL refused
    # them, SQLite kept them.
    if value:
        try:
            json.dumps(value, ensure_ascii=False, allow_nan=False, default=repr).encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode: it holds a lone surrogate") from None
        except ValueError as error:  # NaN, Infinity; a document holding itself
            raise ValueError(f"must be valid JSON: {error}") from None
    return value


class JobCreate(BaseModel):
    """A request to create a job."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(title="Name", max_length=256)] = ""
    description: Annotated[str, Field(title="Description", max_length=10_000)] = ""
    job_type: Annotated[
        str | None,
        Field(
            title="Job type",
            description="A configured job type; omit for a job you drive yourself.",
            max_length=128,
        ),
    ] = None
    parameters: Annotated[
        dict[str, ParameterInput],
        Field(
            title="Parameters",
            description="Values by name: plain JSON scalars or {type, value}.",
            max_length=1000,
        ),
        # A factory, not ``= {}``: pydantic deep-copies a mutable default for every model.
    ] = Field(default_factory=dict)
    json_parameters: Annotated[Any, Field(title="JSON parameters", description="Opaque JSON.")] = (
        None
    )
    run_id: Annotated[str | None, Field(title="Run id", max_length=256)] = None
    priority: Annotated[int, Field(title="Priority", ge=0, le=100)] = 50
    execution_duration: Annotated[
        int | None,
        Field(
            title="Execution duration", description="Seconds; 0 = unlimited.", ge=0, le=INT32_MAX
        ),
    ] = None
    destruction_time: Annotated[
        datetime | None, Field(title="Destruction time", description="Clamped to the maximum.")
    ] = None
    max_retries_per_task: Annotated[int, Field(title="Retries per task", ge=0, le=100)] = 0
    max_failed_tasks: Annotated[int, Field(title="Failure budget", ge=0, le=INT32_MAX)] = 0
    start: Annotated[
        bool, Field(title="Start", description="Queue it at once (PENDING → QUEUED).")
    ] = False

    _utc_destruction = field_validator("destruction_time")(_utc)
    _plain_texts = field_validator("name", "description", "run_id")(_plain_text)
    _json = field_validator("parameters", "json_parameters", mode="before")(_json_documents)


class JobBatchCreate(BaseModel):
    """Many jobs in one request and one transaction."""

    model_config = ConfigDict(extra="forbid")

    jobs: Annotated[list[JobCreate], Field(title="Jobs", min_length=1, max_length=10_000)]


class JobRef(BaseModel):
    """A job's id and phase."""

    id: str
    phase: Phase


class JobBatchCreated(BaseModel):
    """The jobs a batch created, in request order."""

    jobs: list[JobRef]


class JobUpdate(BaseModel):
    """A change to a job. Parameters may change only while it is PENDING."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, Field(max_length=256)] = None
    description: Annotated[str | None, Field(max_length=10_000)] = None
    priority: Annotated[int | None, Field(ge=0, le=100)] = None
    parameters: Annotated[dict[str, ParameterInput] | None, Field(max_length=1000)] = None
    json_parameters: Any = None
    run_id: Annotated[str | None, Field(max_length=256)] = None
    execution_duration: Annotated[int | None, Field(ge=0, le=INT32_MAX)] = None
    destruction_time: datetime | None = None

    _utc_destruction = field_validator("destruction_time")(_utc)
    _plain_texts = field_validator("name", "description", "run_id")(_plain_text)
    _json = field_validator("parameters", "json_parameters", mode="before")(_json_documents)


class QueueRequest(BaseModel):
    """Queue an externally driven job."""

    model_config = ConfigDict(extra="forbid")
    message_id: Annotated[str | None, Field(max_length=256)] = None


class StartRequest(BaseModel):
    """Mark an externally driven job as executing."""

    model_config = ConfigDict(extra="forbid")
    start_time: datetime | None = None

    _utc_start = field_validator("start_time")(_utc)


_STORED_LENGTHS = {
    "id": RESULT_ID_MAX_LENGTH,
    "mime_type": MIME_TYPE_MAX_LENGTH,
    "error_code": ERROR_CODE_MAX_LENGTH,
    "source": SOURCE_MAX_LENGTH,
}


def _stored_whole(items: list[Any]) -> list[Any]:
    # Results and errors an owner reports: a text longer than a store keeps was refused by
    # PostgreSQL and kept by SQLite. (The records read back may hold longer ones that SQLite
    # kept: the limits are checked on the way in.)
    for item in items:
        for name, most in _STORED_LENGTHS.items():
            value = getattr(item, name, None)
            if isinstance(value, str) and len(value) > most:
                raise ValueError(f"{name} has at most {most} characters")
    return items


class CompleteRequest(BaseModel):
    """Complete an externally driven job with its results."""

    model_config = ConfigDict(extra="forbid")
    results: Annotated[list[ResultRef], Field(max_length=10_000)] = Field(default_factory=list)

    _lengths = field_validator("results")(_stored_whole)


class FailRequest(BaseModel):
    """Fail an externally driven job with its errors."""

    model_config = ConfigDict(extra="forbid")
    errors: Annotated[list[JobError], Field(min_length=1, max_length=1000)]

    _lengths = field_validator("errors")(_stored_whole)


class MessageCreate(BaseModel):
    """Add a message to a job."""

    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(max_length=10_000)]
    level: Literal["debug", "info", "warning", "error"] = "info"


class LogEntry(BaseModel):
    """One line of a job's log."""

    offset: Annotated[int, Field(title="Offset", description="Pass offset+1 to read on.")]
    task: Annotated[int | None, Field(title="Task", description="Task index, if from a task.")]
    level: str
    timestamp: UtcDateTime
    message: str


class LogPage(BaseModel):
    """Log lines in order, and where to continue."""

    logs: list[LogEntry]
    next_offset: Annotated[int, Field(description="Offset to ask for next time.")]


class TokenCreate(BaseModel):
    """Create a bearer token for a user (admins only)."""

    model_config = ConfigDict(extra="forbid")
    user: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")]
    admin: bool = False


class TokenCreated(BaseModel):
    """A new token. It is shown once: only its hash is kept."""

    user: str
    admin: bool
    token: str


class Stats(BaseModel):
    """Counts of the jobs the caller can see, by phase."""

    phases: dict[str, int]


class LocalWorkers(BaseModel):
    """The worker processes that run tasks inside this server (``jobdeck serve``)."""

    worker_id: Annotated[
        str, Field(title="Worker id", description="As the timelines of its tasks name it.")
    ]
    processes: Annotated[int, Field(title="Processes", description="Worker processes now.")]
    held_tasks: Annotated[
        int,
        Field(title="Held tasks", description="Tasks it runs, or holds for a process to run."),
    ]


class LocalWorkersChange(BaseModel):
    """How many worker processes this server should run from now on."""

    model_config = ConfigDict(extra="forbid")

    processes: Annotated[
        int,
        Field(
            title="Processes",
            description="0 stops taking tasks. Fewer than now: a process taken out finishes "
            "the tasks it was handed first; tasks that waited for a process go back to the "
            "queue.",
            ge=0,
            le=MAX_LOCAL_PROCESSES,
        ),
    ]


class ErrorBody(BaseModel):
    """The error format of the native API."""

    code: Annotated[str, Field(description="Stable, machine-readable code.")]
    message: Annotated[str, Field(description="What went wrong, for people.")]
    detail: Annotated[Any, Field(description="More about it, e.g. which field.")] = None
