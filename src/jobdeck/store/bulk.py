"""Bulk inserts for the hot paths: one INSERT … SELECT of a JSON document, with the values
every row shares bound once.

SQLAlchemy's executemany processes every parameter of every row in Python, and the drivers
then run (SQLite) or send (psycopg) the statement once per row: for a batch of submissions
that cost more than the database's own work. Here the values are converted by one small
function per column (JSON is serialised, times take the column type's own conversion), the
columns whose values differ between rows travel as one JSON document, and a single
statement reads the rows out of it in the database: ``json_to_recordset`` on PostgreSQL
(which can also return the new keys, ``returning``), ``json_each`` on SQLite.

A column whose value is the same in every row of a batch (its owner, its time, a no-op
job's empty parameters, …) is bound once instead of travelling in every row; a caller can
also give such values as ``constants`` instead of putting them in each row. A batch of
no-op jobs then sends its ids and little else: on SQLite, 1,000 jobs are inserted in a
third of the time an executemany took.

SQLite's JSON functions end a text at a NUL character: a text value in the document must not
hold one. A job's text with one is refused by its request model (``domain.records``), and the
dispatcher replaces it in what tasks log; inside a JSON column's value it is an escape, kept.
"""

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from itertools import repeat
from operator import is_
from typing import Any, Literal

from sqlalchemy import JSON, Connection, String, Table
from sqlalchemy.engine import Dialect

from jobdeck.store.driver import run
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
    """An INSERT of the given columns of ``table``, executed in bulk. ``returning``: columns
    of the new rows that :meth:`execute` returns, where the database can (PostgreSQL)."""

    def __init__(
        self, table: Table, columns: Sequence[str], *, returning: Sequence[str] = ()
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.returning = tuple(returning)
        self._converters: dict[str, dict[str, tuple[Converter, Memo]]] = {}
        self._statements: dict[tuple[str, tuple[str, ...]], str] = {}

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
        dialect = conn.dialect
        postgres = dialect.name == "postgresql"
        if not rows:
            return [] if postgres and self.returning else None
        converters = self._converters_of(dialect)
        shared = {name: converters[name][0](value) for name, value in constants.items()}
        varying: dict[str, list[Any]] = {}
        for name in self.columns:
            if name in constants:
                continue
            convert, memo = converters[name]
            values = [row[name] for row in rows]
            # The document needs a column to have a row per row: the first always travels.
            if varying and _all_alike(values, memo):
                shared[name] = convert(values[0])
                continue
            values = _converted(values, convert, memo)
            # Equal documents that are distinct objects (each job's own {}) convert alike;
            # other values that differ before converting differ after.
            if varying and memo == "object" and values.count(values[0]) == len(values):
                shared[name] = values[0]
            else:
                varying[name] = values
        if not varying:
            raise ValueError("a bulk insert needs at least one column given in the rows")
        sql = self._statement(dialect, tuple(varying))
        names, columns = list(varying), list(varying.values())
        document: list[Any]
        if postgres:
            document = [
                dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
            ]
        elif len(columns) == 1:
            document = columns[0]
        else:
            document = list(zip(*columns, strict=True))
        params = {f"c_{name}": value for name, value in shared.items()}
        # Prepared on PostgreSQL: the plan of an INSERT … SELECT from a document scans no
        # table, whatever the rows (where a generic plan for a statement that does went
        # wrong as the tables grew: engine.writer); parsing and planning it cost more than
        # running it for one job.
        result = run(conn, sql, {"rows": json.dumps(document), **params}, prepare=True)
        return result if postgres and self.returning else None

    def _converters_of(self, dialect: Dialect) -> dict[str, tuple[Converter, Memo]]:
        converters = self._converters.get(dialect.name)
        if converters is None:
            converters = {name: self._converter(name, dialect) for name in self.columns}
            self._converters[dialect.name] = converters
        return converters

    def _converter(self, name: str, dialect: Dialect) -> tuple[Converter, Memo]:
        """How a column's values are converted to what the document or a parameter holds,
        and how a conversion is remembered: times by their value, JSON documents by the
        object (see :func:`_column`)."""
        column_type = self.table.c[name].type
        if isinstance(column_type, UtcDateTime):
            if dialect.name == "postgresql":  # ISO 8601 text, cast by the statement
                return (lambda value: _iso(column_type.process_bind_param(value, dialect))), "value"
            return (lambda value: column_type.process_bind_param(value, dialect)), "value"
        if _is_json(column_type):
            return _json, "object"
        if isinstance(column_type, String):
            return _text, None
        return _identity, None

    def _statement(self, dialect: Dialect, varying: tuple[str, ...]) -> str:
        """The INSERT for a batch whose ``varying`` columns come from the document (in this
        order) and whose other columns are parameters of their own (``c_`` and the name)."""
        sql = self._statements.get((dialect.name, varying))
        if sql is None:
            if dialect.name == "postgresql":
                sql = self._recordset_sql(dialect, varying)
            elif dialect.name == "sqlite":
                sql = self._json_each_sql(dialect, varying)
            else:  # jobdeck's stores are SQLite and PostgreSQL
                raise NotImplementedError(f"bulk inserts on {dialect.name}")
            self._statements[(dialect.name, varying)] = sql
        return sql

    def _recordset_sql(self, dialect: Dialect, varying: tuple[str, ...]) -> str:
        # JSON columns travel as text (inside the document, or as a parameter) and are cast
        # here: a nested value would be re-encoded by the server, which refuses some that a
        # json column keeps.
        quote = dialect.identifier_preparer.quote
        definitions, selected = [], []
        for name in self.columns:
            sql_type = self.table.c[name].type.compile(dialect=dialect)
            if name not in varying:
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

    def _json_each_sql(self, dialect: Dialect, varying: tuple[str, ...]) -> str:
        # The document is an array of values (one varying column) or of arrays. Rows are
        # inserted in the document's order (ORDER BY key): the keys SQLite gives them then
        # follow that order (HotStatements.new_seqs).
        quote = dialect.identifier_preparer.quote
        selected = []
        for name in self.columns:
            if name not in varying:
                selected.append(f":c_{name}")
            elif len(varying) == 1:
                selected.append("value")
            else:
                selected.append(f"json_extract(value, '$[{varying.index(name)}]')")
        return (
            f"INSERT INTO {quote(self.table.name)} ({', '.join(map(quote, self.columns))}) "
            f"SELECT {', '.join(selected)} FROM json_each(:rows) ORDER BY key"
        )


def _is_json(column_type: Any) -> bool:
    return isinstance(column_type, JSON) or isinstance(getattr(column_type, "impl", None), JSON)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _all_alike(values: list[Any], memo: Memo) -> bool:
    """Whether every value converts as the first does, seen before converting any: a
    column that is the same in every row of a batch is then converted once, not per row.
    A JSON document by the object (equal documents may differ in their text: ``1`` and
    ``1.0``, ``true`` and ``1``, the order of keys); any other value by equality (equal
    times are one instant, stored in UTC)."""
    first = values[0]
    if memo == "object":
        return all(map(is_, values, repeat(first)))
    return values.count(first) == len(values)


def _converted(values: list[Any], convert: Converter, memo: Memo) -> list[Any]:
    """One column's values, converted. The rows of a batch share values (the batch's time, its
    timeline): a costly conversion is done once per value, or for a JSON document once per
    object (known by its id, which stays unique while the batch holds the objects)."""
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
