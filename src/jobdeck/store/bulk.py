"""Bulk inserts for the hot paths: an INSERT built once per dialect, values converted column by
column.

SQLAlchemy's executemany processes every parameter of every row in Python, which cost more
than the database's own work for a batch of submissions (about 12k rows/s against 75k/s on
SQLite). Here values are converted by one small function per column: JSON is serialised,
times take the column type's own conversion. On SQLite the driver's executemany runs the
statement once per row (in C). On PostgreSQL the rows travel as one JSON document and a
single ``INSERT … SELECT … FROM json_to_recordset(…)`` inserts them all, and can return
the new keys (``returning``): psycopg's executemany sends a statement per row, and adapting
every value (or every column as an array) in Python cost more than encoding one document.

Values every row of a batch shares (its owner, its time) are given once, as ``constants``:
converted once, and on PostgreSQL bound once beside the document instead of in every row.
"""

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from sqlalchemy import JSON, Connection, String, Table, insert
from sqlalchemy.engine import Dialect

from jobdeck.store.driver import run, run_many
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


Style = Literal["positional", "document"]


class BulkInsert:
    """An INSERT of the given columns of ``table``, executed in bulk. ``returning``: columns
    of the new rows that :meth:`execute` returns, where the database can (PostgreSQL)."""

    def __init__(
        self, table: Table, columns: Sequence[str], *, returning: Sequence[str] = ()
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.returning = tuple(returning)
        self._compiled: dict[
            tuple[str, frozenset[str]], tuple[str, list[tuple[str, Converter, Memo]], Style]
        ] = {}

    def _prepare(
        self, dialect: Dialect, constants: frozenset[str]
    ) -> tuple[str, list[tuple[str, Converter, Memo]], Style]:
        """The statement, a converter per column in the statement's order, and its style. On
        PostgreSQL the ``constants`` are parameters of their own (``c_`` and the name)."""
        prepared = self._compiled.get((dialect.name, constants))
        if prepared is not None:
            return prepared
        sql: str
        order: list[str]
        style: Style
        if dialect.name == "postgresql":
            sql = self._recordset_sql(dialect, constants)
            order, style = list(self.columns), "document"
        else:
            compiled = insert(self.table).compile(
                dialect=dialect, column_keys=list(self.columns), for_executemany=True
            )
            if not dialect.positional:  # jobdeck's stores are SQLite (qmark) and PostgreSQL
                raise NotImplementedError(f"bulk inserts on {dialect.name}")
            # Tuples in the compiler's order.
            sql, order, style = str(compiled), list(compiled.positiontup or ()), "positional"
        converters = [(name, *self._converter(name, dialect)) for name in order]
        self._compiled[(dialect.name, constants)] = prepared = (sql, converters, style)
        return prepared

    def _recordset_sql(self, dialect: Dialect, constants: frozenset[str]) -> str:
        # JSON columns travel as text (inside the document, or as a constant's parameter) and
        # are cast here: a nested value would be re-encoded by the server, which refuses some
        # that a json column keeps.
        quote = dialect.identifier_preparer.quote
        definitions, selected = [], []
        for name in self.columns:
            sql_type = self.table.c[name].type.compile(dialect=dialect)
            if name in constants:
                selected.append(f"CAST(%(c_{name})s AS {sql_type})")
            elif _is_json(self.table.c[name].type):
                definitions.append(f"{quote(name)} text")
                selected.append(f"CAST(r.{quote(name)} AS {sql_type})")
            else:
                definitions.append(f"{quote(name)} {sql_type}")
                selected.append(f"r.{quote(name)}")
        sql = (
            f"INSERT INTO {quote(self.table.name)} ({', '.join(map(quote, self.columns))}) "
            f"SELECT {', '.join(selected)} "
            f"FROM json_to_recordset(%(rows)s) AS r({', '.join(definitions)})"
        )
        if self.returning:
            sql += f" RETURNING {', '.join(map(quote, self.returning))}"
        return sql

    def _converter(self, name: str, dialect: Dialect) -> tuple[Converter, Memo]:
        """How a column's values are converted, and how a conversion is remembered: times by
        their value, JSON documents by the object (see :meth:`execute`)."""
        column_type = self.table.c[name].type
        if isinstance(column_type, UtcDateTime):
            if dialect.name == "postgresql":  # in a JSON document: ISO 8601 text
                return (lambda value: _iso(column_type.process_bind_param(value, dialect))), "value"
            return (lambda value: column_type.process_bind_param(value, dialect)), "value"
        if _is_json(column_type):
            return _json, "object"
        if isinstance(column_type, String):
            return _text, None
        return _identity, None

    def execute(
        self,
        conn: Connection,
        rows: Sequence[dict[str, Any]],
        constants: dict[str, Any] | None = None,
    ) -> list[Any] | None:
        """Insert ``rows``: dicts with every one of the columns but those in ``constants``,
        the values all rows share. Returns the ``returning`` columns of the new rows (in no
        particular order) on PostgreSQL, None elsewhere."""
        constants = constants or {}
        sql, converters, style = self._prepare(conn.dialect, frozenset(constants))
        if not rows:
            return [] if style == "document" and self.returning else None
        if style == "document":
            varying = [c for c in converters if c[0] not in constants]
            names = [name for name, _convert, _memo in varying]
            columns = [_column(rows, name, convert, memo) for name, convert, memo in varying]
            document = [
                dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
            ]
            params = {
                f"c_{name}": convert(constants[name])
                for name, convert, _memo in converters
                if name in constants
            }
            result = run(conn, sql, {"rows": json.dumps(document), **params})
            return result if self.returning else None
        # Column by column: a loop per column with the conversion inlined, and the rows put
        # together by zip, cost a fraction of a function call per value.
        count = len(rows)
        columns = [
            [convert(constants[name])] * count
            if name in constants
            else _column(rows, name, convert, memo)
            for name, convert, memo in converters
        ]
        run_many(conn, sql, list(zip(*columns, strict=True)))
        return None


def _is_json(column_type: Any) -> bool:
    return isinstance(column_type, JSON) or isinstance(getattr(column_type, "impl", None), JSON)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


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
