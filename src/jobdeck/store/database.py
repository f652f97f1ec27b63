"""Opening the database (SQLite with its promise written down, or PostgreSQL) and migrating it."""

from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.pool import NullPool

from jobdeck.domain.errors import ValidationFailed

SqliteSync = Literal["NORMAL", "FULL"]
MIGRATIONS = Path(__file__).parent / "migrations"
READER_CACHE_KIB = 2048
WRITER_CACHE_KIB = 16384
POOL_SIZES = {"pool_size": 16, "max_overflow": 32}
"""Connections a pool keeps, and how many more it opens at a peak."""
HEAD_REVISION = "0003"
"""The newest migration (a test holds it to Alembic's own view): a store already there is
not handed to Alembic at all, whose import alone costs a second of a server's start."""


def database_url(*, db: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL for ``--db`` (a PostgreSQL or SQLite URL) or the data directory.
    Raises :class:`ValueError` for a URL of another kind."""
    if db is None:
        return f"sqlite:///{data_dir / 'jobdeck.db'}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if db.startswith(("postgresql+psycopg://", "sqlite:///")):
        return db
    # The scheme alone: the rest may hold a password.
    scheme = db.split("://", 1)[0] if "://" in db else db[:20]
    raise ValueError(
        "jobdeck's stores are PostgreSQL (postgresql://user@host/database) and SQLite "
        f"(sqlite:///path), not {scheme!r}"
    )


def open_database(url: str, *, sqlite_synchronous: SqliteSync = "NORMAL") -> Engine:
    """Create the SQLAlchemy engine.

    SQLite runs in WAL mode. ``synchronous=NORMAL`` survives a crash of the process (kill -9)
    without losing a committed transaction; only a power loss or an OS crash can lose the
    last transactions. ``FULL`` survives those too, at the cost of an fsync per commit.
    """
    if url.startswith("sqlite"):
        engine = _open_sqlite(url, sqlite_synchronous)
    else:
        engine = create_engine(url, pool_pre_ping=True, **POOL_SIZES)
    _refused_values_are_invalid(engine)
    return engine


def reads_engine(engine: Engine) -> Engine:
    """The engine the reads of ``engine``'s store go through.

    On SQLite, the store's own: a read there is a few local calls, and one snapshot. On
    PostgreSQL, a pool of its own whose connections run in autocommit from their start: a
    read then costs no BEGIN and no ROLLBACK round trips, and a job is read in one statement
    (one snapshot). Asked per checkout of the store's pool instead
    (``execution_options(isolation_level=...)``), autocommit was set and reset at each: 0.6
    ms a look-up here against 0.35. Its connections are opened as reads need them, and lent
    without a ping (a round trip): the engine reads again, on a new connection, should a read
    find its connection dead (``Engine._reading``).
    """
    if is_sqlite(engine):
        return engine
    reads = create_engine(engine.url, isolation_level="AUTOCOMMIT", **POOL_SIZES)
    _refused_values_are_invalid(reads)
    return reads


def _open_sqlite(url: str, sqlite_synchronous: SqliteSync) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        **POOL_SIZES,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would defer BEGIN; we issue BEGIN ourselves
        # so a writer takes the lock up front (BEGIN IMMEDIATE) and never deadlocks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Readers keep a small page cache each (there may be dozens, and the OS caches
        # the file for all of them); the writer asks for a large one (Writer).
        cursor.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        # On the driver's connection: through SQLAlchemy, BEGIN cost as much as a query.
        conn.connection.driver_connection.execute(f"BEGIN {mode}")

    return engine


def _refused_values_are_invalid(engine: Engine) -> None:
    """A value the database refuses (on PostgreSQL: a NUL character in text, a number out of
    range) comes from the request: it fails as invalid input, not as a server error."""

    @event.listens_for(engine, "handle_error")
    def _refused(context: ExceptionContext) -> BaseException | None:
        if isinstance(context.sqlalchemy_exception, DataError):
            return refused_value(context.sqlalchemy_exception)
        return None


def refused_value(error: DBAPIError) -> ValidationFailed:
    """The invalid-input error for a value the database refused (``error``, a DataError)."""
    lines = str(error.orig).splitlines()
    reason = " ".join(line.strip() for line in lines if line.strip())[:300]
    return ValidationFailed(f"the database refused a value of this request: {reason}")


def is_sqlite(engine: Engine) -> bool:
    """Whether ``engine`` talks to SQLite."""
    return engine.dialect.name == "sqlite"


def current_revision(engine: Engine) -> str | None:
    """The migration the store is at (None: a new store)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def upgrade(engine: Engine) -> None:
    """Apply the Alembic migrations up to the newest."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def admin_engine(url: str) -> Engine:
    """An engine without pooling, for one-off administrative statements."""
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
