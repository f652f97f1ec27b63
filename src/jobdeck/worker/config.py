"""Job types from a TOML file.

The file has one table per job type under ``types``; the built-in types (noop, sleep, echo,
fail) are always there and cannot be redefined::

    [types.thumbnail]
    kind = "python"                      # a function run inside a worker process
    target = "myjobs.images:thumbnail"   # module:function, called as function(params, ctx)
    description = "Makes a thumbnail."
    execution_duration = 60              # seconds; 0 (the default) means unlimited
    parameters = { path = "path", width = { type = "int", default = 128 } }

    [types.render]
    kind = "command"                     # a program, run without a shell, in the results dir
    command = ["blender", "-b", "{scene}", "-f", "{frame}"]
    parameters = { scene = "path", frames = { type = "string", default = "1-100" } }
    task_parameters = { frame = "{frames}" }   # one task per frame

Keys of a type:

- ``kind``: ``"python"`` or ``"command"`` (required).
- ``target``: ``"module:function"`` of a python type (required for it; the module is imported
  in the worker processes, from ``PYTHONPATH`` or the current directory).
- ``command``: the argv of a command type (required for it), a non-empty list of strings.
  ``{name}`` in an element is replaced by the value of the parameter ``name``; each name must
  be a declared parameter or task parameter.
- ``parameters``: name to type, ``"int"``, ``"float"``, ``"string"`` or ``"path"``, or to a
  table ``{ type = ..., default = ..., description = ... }``. A parameter without a default
  is required.
- ``task_parameters``: name to an integer range expression such as ``"1-100"``,
  ``"1-99:2"``, ``"1,5,7-9"``, which may name job parameters (``"{frames}"``). The job gets
  one task per value (per combination, when there are several); a task parameter is an int.
- ``execution_duration``: default limit in seconds of a job of this type (0: unlimited).
- ``max_log_bytes``: how much log each task keeps (default 16 MiB); the lines beyond are left
  out, and a warning in the log says how many.
- ``description``: free text.

Anything else, or a value of the wrong kind, is an error that names the file and the type.
"""

import re
import tomllib
from pathlib import Path
from typing import Any

from jobdeck.domain.errors import ValidationFailed
from jobdeck.domain.jobtypes import BUILTIN_TYPES, JobType, ParameterSpec
from jobdeck.domain.limits import INT32_MAX, TASK_LOG_MAX_BYTES
from jobdeck.domain.parameters import PARAM_TYPES, ParamType, coerce, expand_range

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_PARAMETER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_REFERENCE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TYPE_KEYS = {
    "kind",
    "target",
    "command",
    "parameters",
    "task_parameters",
    "execution_duration",
    "max_log_bytes",
    "description",
}
_PARAMETER_KEYS = {"type", "default", "description"}


def load_job_types(path: Path | None) -> dict[str, JobType]:
    """The built-in job types and those of the TOML file at ``path`` (if given).

    Raises :class:`ValueError`, naming the file and the type, for a file that cannot be
    read or a definition that is not valid.
    """
    types = dict(BUILTIN_TYPES)
    if path is None:
        return types
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read job types from {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(document) - {"types"}
    if unknown:
        raise ValueError(
            f"{path}: unknown section {sorted(unknown)[0]!r}; job types go under [types.NAME]"
        )
    tables = document.get("types", {})
    if not isinstance(tables, dict):
        raise ValueError(f"{path}: 'types' must be a table of [types.NAME] tables")
    for name, table in tables.items():
        if name in BUILTIN_TYPES:
            raise ValueError(f"{path}: type {name!r} is built in and cannot be redefined")
        try:
            types[name] = _job_type(name, table)
        except ValueError as exc:
            raise ValueError(f"{path}: type {name!r}: {exc}") from None
    return types


def _job_type(name: str, table: Any) -> JobType:
    if not _NAME.match(name):
        raise ValueError("a type name is letters, digits, '_', '.' and '-'")
    if not isinstance(table, dict):
        raise ValueError("must be a table")
    unknown = set(table) - _TYPE_KEYS
    if unknown:
        raise ValueError(
            f"unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(_TYPE_KEYS))}"
        )
    kind = table.get("kind")
    target = table.get("target", "")
    command = table.get("command")
    if kind == "python":
        if not isinstance(target, str) or not _TARGET.match(target):
            raise ValueError('a python type needs target = "module:function"')
        if command is not None:
            raise ValueError("a python type takes no 'command'")
    elif kind == "command":
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(part, str) for part in command)
        ):
            raise ValueError('a command type needs command = ["program", "arg", ...]')
        if "target" in table:
            raise ValueError("a command type takes no 'target'")
    else:
        raise ValueError(f'kind must be "python" or "command", not {kind!r}')
    parameters = _parameters(table.get("parameters", {}))
    task_parameters = _task_parameters(table.get("task_parameters", {}), parameters)
    if kind == "command":
        known = set(parameters) | set(task_parameters)
        for part in command or ():
            for reference in _REFERENCE.findall(part):
                if reference not in known:
                    raise ValueError(
                        f"command element {part!r} names undeclared parameter {reference!r}"
                    )
    # A job keeps its duration in a 32-bit integer.
    duration = _whole_number(table, "execution_duration", 0, "seconds", most=INT32_MAX)
    max_log_bytes = _whole_number(table, "max_log_bytes", TASK_LOG_MAX_BYTES, "bytes")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ValueError("description must be a string")
    return JobType(
        name=name,
        kind=kind,
        target=target if kind == "python" else "",
        command=tuple(command or ()),
        parameters=parameters,
        task_parameters=task_parameters,
        execution_duration=duration,
        description=description,
        max_log_bytes=max_log_bytes,
    )


def _whole_number(
    table: dict[str, Any], key: str, default: int, unit: str, *, most: int | None = None
) -> int:
    """``table[key]`` (``default`` when absent): a whole number from 0 (to ``most``)."""
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 0
        or (most is not None and value > most)
    ):
        bounds = "0 or more" if most is None else f"from 0 to {most}"
        raise ValueError(f"{key} must be a whole number of {unit}, {bounds}")
    return value


def _parameters(table: Any) -> dict[str, ParameterSpec]:
    if not isinstance(table, dict):
        raise ValueError("parameters must be a table: name = type or { type, default, ... }")
    specs: dict[str, ParameterSpec] = {}
    for name, value in table.items():
        if not _PARAMETER.match(name):
            raise ValueError(f"parameter name {name!r} must be letters, digits and '_'")
        spec = value if isinstance(value, dict) else {"type": value}
        unknown = set(spec) - _PARAMETER_KEYS
        if unknown:
            raise ValueError(f"parameter {name!r} has unknown key {sorted(unknown)[0]!r}")
        type_ = spec.get("type")
        if type_ not in PARAM_TYPES:
            raise ValueError(
                f"parameter {name!r} has type {type_!r}; known: {', '.join(PARAM_TYPES)}"
            )
        param_type: ParamType = type_
        default = spec.get("default")
        if default is not None:
            try:
                default = coerce(name, default, param_type)
            except ValidationFailed as exc:
                raise ValueError(f"default of {exc.message}") from None
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ValueError(f"description of parameter {name!r} must be a string")
        specs[name] = ParameterSpec(param_type, default, description)
    return specs


def _task_parameters(table: Any, parameters: dict[str, ParameterSpec]) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ValueError('task_parameters must be a table: name = "range expression"')
    result: dict[str, str] = {}
    for name, expression in table.items():
        if not _PARAMETER.match(name):
            raise ValueError(f"task parameter name {name!r} must be letters, digits and '_'")
        if name in parameters:
            raise ValueError(f"{name!r} is both a parameter and a task parameter")
        if isinstance(expression, bool) or not isinstance(expression, str | int):
            raise ValueError(f"task parameter {name!r} must be a range expression like '1-10'")
        expression = str(expression)
        references = _REFERENCE.findall(expression)
        for reference in references:
            if reference not in parameters:
                raise ValueError(
                    f"task parameter {name!r} names undeclared parameter {reference!r}"
                )
        if not references:
            try:
                expand_range(expression)
            except ValidationFailed as exc:
                raise ValueError(f"task parameter {name!r}: {exc.message}") from None
        result[name] = expression
    return result
