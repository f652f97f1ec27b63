"""The ``jobdeck`` command: one Typer app, the server commands and the client commands."""

import typer

from jobdeck.cli import server

SERVICE_COMMANDS = ("serve", "worker")
"""Commands that run the service: :func:`service_app` is enough for them."""


def service_app() -> typer.Typer:
    """The server commands alone: serve, worker, db, token."""
    app = typer.Typer(
        name="jobdeck",
        help="jobdeck: a durable, asynchronous job service.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.command()(server.serve)
    app.command()(server.worker)
    app.add_typer(server.db_app, name="db")
    app.add_typer(server.token_app, name="token")
    return app


def full_app() -> typer.Typer:
    """Every command: the server's and the client's (submit, list, show, …)."""
    from jobdeck.cli import jobs

    app = service_app()
    jobs.register(app)
    return app
