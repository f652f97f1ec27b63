"""SQL run on the driver's own cursor, inside a SQLAlchemy connection and its transaction.

SQLAlchemy builds an execution context, dispatches events and wraps the result for every
statement it runs, also for ``exec_driver_sql``: about 70 µs here, where SQLite's own work
for a look-up by key is about 10 µs. A submission, a claim, a finish and a read of a job
are a few such statements each, so on the hot paths the statements go to the cursor
directly. The SQL still comes from :mod:`jobdeck.store.statements` or from a Core statement
compiled once (:class:`Prepared`); failures are raised as SQLAlchemy's exceptions, with a
refused value as :class:`ValidationFailed`, as through SQLAlchemy (``open_database``).
"""

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, DBAPIError

from jobdeck.store.database import refused_value

Params = Mapping[str, Any] | Sequence[Any]


def run(conn: Connection, sql: str, params: Params, *, prepare: bool = False) -> list[Any]:
    """Execute ``sql`` (in the driver's parameter style) on ``conn``'s connection; the rows
    it returns, as the driver returns them (none for a statement without rows). ``prepare``:
    on PostgreSQL, prepared on the server whatever the connection's threshold (SQLite's
    driver keeps its statements compiled anyway)."""
    _autobegin(conn)
    cursor: Any = conn.connection.cursor()
    try:
        if prepare and conn.dialect.name == "postgresql":
            cursor.execute(sql, params, prepare=True)
        else:
            cursor.execute(sql, params)
        return list(cursor.fetchall()) if _has_rows(cursor) else []
    except conn.dialect.loaded_dbapi.Error as error:
        raise _translated(conn, sql, params, error, cursor) from error
    finally:
        cursor.close()


def _has_rows(cursor: Any) -> bool:
    """Whether the statement just run returned rows (none, but a result: a SELECT or a
    RETURNING). psycopg builds a column object for each column at every read of a cursor's
    ``description``, 0.12 ms for a job's 47 here; its ``rownumber`` answers for nothing.
    sqlite3 has no ``rownumber``, and a ``description`` it made once."""
    number = getattr(cursor, "rownumber", _NO_ROWNUMBER)
    if number is _NO_ROWNUMBER:
        return cursor.description is not None
    return number is not None


_NO_ROWNUMBER = object()


def _autobegin(conn: Connection) -> None:
    """Begin a transaction where Core would (its autobegin): so that SQLAlchemy knows of
    it, and its rollback or commit ends it."""
    if not conn.in_transaction():
        conn.begin()


def _translated(conn: Connection, sql: str, params: Any, error: Any, cursor: Any) -> Exception:
    """The exception SQLAlchemy would raise for ``error``: a refused value is invalid input,
    a lost connection is dropped from the pool."""
    disconnected = conn.dialect.is_disconnect(error, conn.connection, cursor)
    if disconnected:
        conn.invalidate(error)
    wrapped = DBAPIError.instance(
        sql, params, error, conn.dialect.loaded_dbapi.Error, connection_invalidated=disconnected
    )
    return refused_value(wrapped) if isinstance(wrapped, DataError) else wrapped


class Prepared:
    """A Core SELECT compiled once per dialect and run on the driver's cursor; its rows come
    back as named tuples, each column processed by its type (times, JSON) as Core would.

    For statements with plain bound values only (no ``IN`` lists to expand).
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        columns = list(statement.selected_columns)
        self._row: Any = namedtuple("Row", [column.key for column in columns])  # type: ignore[misc]
        self._compiled: dict[str, tuple[str, Callable[[Mapping[str, Any]], Params], Any]] = {}

    def _prepare(self, dialect: Dialect) -> tuple[str, Callable[[Mapping[str, Any]], Params], Any]:
        prepared = self._compiled.get(dialect.name)
        if prepared is not None:
            return prepared
        compiled = self.statement.compile(dialect=dialect)
        binds = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }

        # Values the statement carries itself (SQLite's OFFSET 0 after a bound LIMIT).
        fixed = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }

        def value(params: Mapping[str, Any], name: str) -> Any:
            given = params[name] if name in params else fixed[name]
            processor = binds[name]
            return given if processor is None else processor(given)

        order = list(compiled.positiontup or ()) if compiled.positional else None

        def arguments(params: Mapping[str, Any]) -> Params:
            if order is not None:
                return [value(params, name) for name in order]
            return {name: value(params, name) for name in binds}

        processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in self.statement.selected_columns
        ]
        process = None
        if any(processors):

            def process(raw: Sequence[Any]) -> list[Any]:
                return [v if p is None else p(v) for p, v in zip(processors, raw, strict=True)]

        self._compiled[dialect.name] = prepared = (str(compiled), arguments, process)
        return prepared

    def rows(
        self, conn: Connection, params: Mapping[str, Any], *, prepare: bool = False
    ) -> list[Any]:
        """The rows of the statement with these bound values (``prepare``: see :func:`run`)."""
        sql, arguments, process = self._prepare(conn.dialect)
        raw = run(conn, sql, arguments(params), prepare=prepare)
        make = self._row._make
        if process is None:
            return [make(row) for row in raw]
        return [make(process(row)) for row in raw]

    def row_of(self, values: Sequence[Any]) -> Any:
        """A row of this statement made of ``values`` (its columns, in order, processed),
        read by another statement that returns them among its own."""
        return self._row._make(values)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first row, or None."""
        rows = self.rows(conn, params)
        return rows[0] if rows else None
