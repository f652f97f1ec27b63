"""Bulk inserts for the hot paths: a Core INSERT compiled once, run by the driver's executemany.

SQLAlchemy's executemany processes every parameter of every row in Python, which cost more
than the database's own work for a batch of submissions (about 12k rows/s against 75k/s on
SQLite). Here the statement is compiled once per dialect and values are converted by one small
function per column: JSON is serialised, times take the column type's own conversion.
"""

import json
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Literal

from sqlalchemy import JSON, Connection, String, Table, insert
from sqlalchemy.engine import Dialect

from jobdeck.store.schema import UtcDateTime

Converter = Callable[[Any], Any]
Memo = Literal["value", "object"] | None


def _identity(value: Any) -> Any:
    return value


def _text(value: Any) -> Any:
    # A StrEnum is a str, but drivers differ on how they adapt an Enum: pass the plain value.
    return value.value if isinstance(value, Enum) else value


def _json(value: Any) -> Any:
    if value is None:
        return None
    # Jobs without parameters are common, and each has a dict of its own.
    return "{}" if value == {} else json.dumps(value)


class BulkInsert:
    """An INSERT of the given columns of ``table``, executed in bulk."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self._compiled: dict[str, tuple[str, list[tuple[str, Converter, Memo]], bool]] = {}

    def _prepare(self, dialect: Dialect) -> tuple[str, list[tuple[str, Converter, Memo]], bool]:
        prepared = self._compiled.get(dialect.name)
        if prepared is None:
            compiled = insert(self.table).compile(
                dialect=dialect, column_keys=list(self.columns), for_executemany=True
            )
            # A positional style (SQLite's qmark) takes tuples in the compiler's order.
            order = list(compiled.positiontup or ()) if dialect.positional else list(self.columns)
            converters = [(name, *self._converter(name, dialect)) for name in order]
            prepared = (str(compiled), converters, dialect.positional)
            self._compiled[dialect.name] = prepared
        return prepared

    def _converter(self, name: str, dialect: Dialect) -> tuple[Converter, Memo]:
        """How a column's values are converted, and how a conversion is remembered: times by
        their value, JSON documents by the object (see :meth:`execute`)."""
        column_type = self.table.c[name].type
        if isinstance(column_type, UtcDateTime):
            return (lambda value: column_type.process_bind_param(value, dialect)), "value"
        if isinstance(column_type, JSON) or isinstance(getattr(column_type, "impl", None), JSON):
            return _json, "object"
        if isinstance(column_type, String):
            return _text, None
        return _identity, None

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (dicts with every one of the columns)."""
        if not rows:
            return
        sql, converters, positional = self._prepare(conn.dialect)
        # Column by column: a loop per column with the conversion inlined, and the rows put
        # together by zip, cost a fraction of a function call per value.
        columns = [_column(rows, name, convert, memo) for name, convert, memo in converters]
        params: list[Any]
        if positional:
            params = list(zip(*columns, strict=True))
        else:
            names = [name for name, _convert, _memo in converters]
            params = [
                dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
            ]
        conn.exec_driver_sql(sql, params)


def _column(rows: Sequence[dict[str, Any]], name: str, convert: Converter, memo: Memo) -> list[Any]:
    """One column's values, converted. The rows of a batch share values (the batch's time, its
    timeline): a costly conversion is done once per value, or for a JSON document once per
    object (known by its id, which stays unique while ``rows`` holds the objects)."""
    values = [row[name] for row in rows]
    if convert is _identity:
        return values
    if convert is _text:
        return [value.value if isinstance(value, Enum) else value for value in values]
    if memo is None:
        return [convert(value) for value in values]
    by_value = memo == "value"
    done: dict[Any, Any] = {}
    converted = []
    for value in values:
        key = value if by_value else id(value)
        found = done.get(key, done)
        if found is done:
            found = done[key] = convert(value)
        converted.append(found)
    return converted
