"""Typed job parameters (int, float, string, path) and task parameter spaces.

A value arrives as plain JSON (the type is then inferred, or taken from the job type's
declaration) or as an explicit ``{"type": ..., "value": ...}`` pair.
"""

import re
from typing import Any, Literal

from jobdeck.domain.errors import ValidationFailed

ParamType = Literal["int", "float", "string", "path"]
PARAM_TYPES: tuple[ParamType, ...] = ("int", "float", "string", "path")
Scalar = int | float | str

MAX_TASKS_PER_JOB = 100_000
_RANGE_PART = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?::\s*(\d+)\s*)?)?$")


def coerce(name: str, value: Any, type_: ParamType) -> Scalar:
    """Return ``value`` as a ``type_`` value, or raise :class:`ValidationFailed` naming ``name``."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise ValidationFailed(
            f"parameter {name!r} must be a {type_}, not {type(value).__name__}", parameter=name
        )
    try:
        if type_ == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if type_ == "float":
            result = float(value)
            if result != result or result in (float("inf"), float("-inf")):
                raise ValueError
            return result
    except ValueError:
        raise ValidationFailed(
            f"parameter {name!r} must be a {type_}, got {value!r}", parameter=name
        ) from None
    text = str(value)
    if "\x00" in text:
        raise ValidationFailed(f"parameter {name!r} contains a NUL character", parameter=name)
    return text


def infer_type(value: Any) -> ParamType:
    """The parameter type of a plain JSON scalar."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationFailed(
            f"a parameter value must be a number, a string or {{type, value}}, got {value!r}"
        )
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def typed(name: str, raw: Any, declared: ParamType | None) -> dict[str, Any]:
    """Normalise one incoming parameter to ``{"type": ..., "value": ...}``."""
    if isinstance(raw, dict):
        if set(raw) != {"type", "value"}:
            raise ValidationFailed(
                f"parameter {name!r} must be a scalar or an object with 'type' and 'value'",
                parameter=name,
            )
        given = raw["type"]
        if given not in PARAM_TYPES:
            raise ValidationFailed(
                f"parameter {name!r} has unknown type {given!r}; known: {', '.join(PARAM_TYPES)}",
                parameter=name,
            )
        if declared is not None and given != declared:
            raise ValidationFailed(
                f"parameter {name!r} is declared as {declared}, not {given}", parameter=name
            )
        type_: ParamType = given
        raw = raw["value"]
    else:
        type_ = declared or infer_type(raw)
    return {"type": type_, "value": coerce(name, raw, type_)}


def expand_range(expression: str) -> list[int]:
    """Expand an integer range expression such as ``"1-100"``, ``"1-9:2"`` or ``"1,3,5-7"``."""
    values: list[int] = []
    for part in expression.split(","):
        match = _RANGE_PART.match(part)
        if not match:
            raise ValidationFailed(f"not an integer range expression: {expression!r}")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3) or 1)
        if step < 1 or end < start:
            raise ValidationFailed(f"not an increasing range: {part.strip()!r}")
        if (end - start) // step + 1 + len(values) > MAX_TASKS_PER_JOB:
            raise ValidationFailed(f"a job may have at most {MAX_TASKS_PER_JOB} tasks")
        values.extend(range(start, end + 1, step))
    return values


def substitute(template: str, values: dict[str, Scalar]) -> str:
    """Replace each ``{name}`` in ``template`` with its value; an unknown name is an error."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ValidationFailed(f"template {template!r} names unknown parameter {key!r}")
        return str(values[key])

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", replace, template)
