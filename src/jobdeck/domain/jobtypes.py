"""Job types: what a job runs, which parameters it takes, and how it splits into tasks."""

from dataclasses import dataclass, field
from typing import Any, Literal

from jobdeck.domain.errors import ValidationFailed
from jobdeck.domain.limits import TASK_LOG_MAX_BYTES
from jobdeck.domain.parameters import (
    MAX_TASKS_PER_JOB,
    ParamType,
    Scalar,
    expand_range,
    substitute,
    typed,
)

JobKind = Literal["python", "command", "builtin"]


@dataclass(frozen=True)
class ParameterSpec:
    """A declared parameter of a job type."""

    type: ParamType
    default: Scalar | None = None
    description: str = ""

    @property
    def required(self) -> bool:
        """A parameter without a default must be given."""
        return self.default is None


@dataclass(frozen=True)
class JobType:
    """A named kind of job and how to run it.

    ``target`` is ``module:function`` for a python type, the built-in's name for a builtin; a
    command type runs ``command`` (an argv template, no shell). ``task_parameters`` maps a task
    parameter to an integer range expression (which may name job parameters, ``"{frames}"``):
    the job then has one task per value, the Open Job Description way.
    """

    name: str
    kind: JobKind
    target: str = ""
    command: tuple[str, ...] = ()
    parameters: dict[str, ParameterSpec] = field(default_factory=dict)
    task_parameters: dict[str, str] = field(default_factory=dict)
    execution_duration: int = 0
    description: str = ""
    max_log_bytes: int = TASK_LOG_MAX_BYTES
    """Bytes of log each task keeps (UTF-8, a newline per line); lines beyond are left out."""

    def validate(self, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Check ``raw`` against the declared parameters; fill in defaults."""
        unknown = set(raw) - set(self.parameters)
        if unknown:
            known = ", ".join(sorted(self.parameters)) or "none"
            raise ValidationFailed(
                f"job type {self.name!r} takes no parameter {sorted(unknown)[0]!r}; known: {known}"
            )
        result: dict[str, dict[str, Any]] = {}
        for name, spec in self.parameters.items():
            if name in raw:
                result[name] = typed(name, raw[name], spec.type)
            elif spec.default is not None:
                result[name] = typed(name, spec.default, spec.type)
            else:
                raise ValidationFailed(
                    f"job type {self.name!r} needs parameter {name!r}", parameter=name
                )
        return result

    def expand_tasks(self, parameters: dict[str, dict[str, Any]]) -> list[dict[str, int]]:
        """The task parameters of each task: one empty dict for a single-task job."""
        if not self.task_parameters:
            return [{}]
        values = {name: p["value"] for name, p in parameters.items()}
        spaces = {
            name: expand_range(substitute(expr, values))
            for name, expr in self.task_parameters.items()
        }
        # Several task parameters combine as a product, the Open Job Description default.
        tasks: list[dict[str, int]] = [{}]
        for name, space in spaces.items():
            tasks = [{**task, name: value} for task in tasks for value in space]
            if len(tasks) > MAX_TASKS_PER_JOB:
                raise ValidationFailed(f"a job may have at most {MAX_TASKS_PER_JOB} tasks")
        return tasks


BUILTIN_TYPES: dict[str, JobType] = {
    "noop": JobType(name="noop", kind="builtin", target="noop", description="Does nothing."),
    "sleep": JobType(
        name="sleep",
        kind="builtin",
        target="sleep",
        parameters={"seconds": ParameterSpec("float", 1.0, "How long to sleep.")},
        description="Sleeps for a number of seconds.",
    ),
    "echo": JobType(
        name="echo",
        kind="builtin",
        target="echo",
        parameters={"message": ParameterSpec("string", "", "What to print and return.")},
        description="Prints its message to the log and returns it as result echo.txt.",
    ),
    "fail": JobType(
        name="fail",
        kind="builtin",
        target="fail",
        parameters={
            "code": ParameterSpec("string", "failed", "The error code."),
            "message": ParameterSpec("string", "failed on purpose", "The error message."),
            "transient": ParameterSpec("int", 0, "1 for a transient (retryable) error."),
        },
        description="Fails with the given error.",
    ),
}
