"""The ``jobdeck`` command: one Typer app, the server commands and the client commands."""

import typer

from jobdeck.cli import jobs, server

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
jobs.register(app)
