"""The ``jobdeck`` command."""

import gc
import sys


def run() -> None:
    """Run the ``jobdeck`` command (the console script, and ``python -m jobdeck``)."""
    # Importing the command makes a few hundred thousand objects that live as long as the
    # process (modules, models, tables): collecting among them while they appear only costs
    # time (about 0.15 s of a start here).
    gc.disable()
    from jobdeck.cli.main import SERVICE_COMMANDS, full_app, service_app

    # `serve` and `worker` do without the client commands' modules (Rich's tables and live
    # displays, the HTTP client): about 0.1 s of a service's start here, before its first job.
    app = service_app() if sys.argv[1:2] and sys.argv[1] in SERVICE_COMMANDS else full_app()
    settle()
    app()


def settle() -> None:
    """End a start-up run without garbage collection: exempt every object made so far
    (modules, models; for `serve` and `worker` the engine, workers and app too) from every
    later collection, and collect again. A full collection walks every object it tracks, and
    requests and claims, which make many short-lived ones, set one off again and again: a
    batch of 1,000 jobs took half as long again with the start-up's objects in."""
    gc.freeze()
    gc.enable()
