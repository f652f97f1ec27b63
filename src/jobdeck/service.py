"""Putting the parts together: the database, the engine, upkeep, local workers, the HTTP app."""

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from jobdeck.domain.jobtypes import JobType
from jobdeck.engine.engine import Engine
from jobdeck.engine.settings import EngineSettings
from jobdeck.store.database import SqliteSync, database_url, open_database, upgrade
from jobdeck.worker.config import load_job_types

ADMIN_TOKEN_FILE = "admin-token"


@dataclass(frozen=True)
class StoreOptions:
    """Where the store is: a data directory (SQLite by default) or a database URL."""

    data_dir: Path = Path(".jobdeck")
    db: str | None = None
    config: Path | None = None
    sqlite_synchronous: SqliteSync = "NORMAL"
    results_dir: Path | None = None


def open_engine(
    options: StoreOptions,
    *,
    migrate: bool = True,
    lease_seconds: float | None = None,
    job_types: dict[str, JobType] | None = None,
) -> Engine:
    """Open the store, apply migrations, and return an engine (not yet started).

    ``job_types``: those of ``options.config``, where the caller has loaded them already (to
    start worker processes with them before the engine); read from the file otherwise.
    """
    options.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(
        database_url(db=options.db, data_dir=options.data_dir),
        sqlite_synchronous=options.sqlite_synchronous,
    )
    if migrate:
        upgrade(db)
    settings = EngineSettings(
        results_dir=(options.results_dir or options.data_dir / "results").resolve(),
        job_types=load_job_types(options.config) if job_types is None else job_types,
    )
    if lease_seconds is not None:
        settings.lease_seconds = lease_seconds
    return Engine(db, settings)


def ensure_admin_token(engine: Engine, data_dir: Path) -> tuple[str, bool]:
    """The admin token kept in the data directory (readable by its owner only).

    Made on first start; returns ``(token, created)``.
    """
    path = data_dir / ADMIN_TOKEN_FILE
    created = not path.exists()
    if created:
        token = "jd_" + secrets.token_urlsafe(32)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(token + "\n")
    token = path.read_text().strip()
    engine.add_token(token, "admin", admin=True)
    return token, created
