"""Options that every command touching the store takes, the same everywhere."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    # jobdeck.service loads the engine (SQLAlchemy): `serve` starts its worker processes
    # first, and the client commands never need it.
    from jobdeck.service import StoreOptions

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="JOBDECK_DATA_DIR",
        help="Data directory: the SQLite database, results, the admin token.",
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="JOBDECK_DB",
        help="A PostgreSQL URL (postgresql://...) instead of SQLite in the data directory.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="JOBDECK_CONFIG",
        help="A TOML file of job types.",
        exists=True,
        dir_okay=False,
    ),
]
DEFAULT_DATA_DIR = Path(".jobdeck")


def store_options(
    data_dir: Path, db: str | None, config: Path | None = None, *, full_sync: bool = False
) -> "StoreOptions":
    """The store options from the command line."""
    from jobdeck.service import StoreOptions

    return StoreOptions(
        data_dir=data_dir,
        db=db,
        config=config,
        sqlite_synchronous="FULL" if full_sync else "NORMAL",
    )
