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


YOUNG_GENERATION_THRESHOLD = 20_000
"""Container objects made (net) between two collections of the youngest generation (Python's
default: 700). A batch of 1,000 jobs holds tens of thousands while its request lasts: with the
default they set off about 13 young and one middle collection a batch, which walked them again
and again (a tenth of a SQLite server's time taking batches here); they go by reference
counting when the request ends, and a collection now comes rarely. Batches alternating
between two servers: 7-13 % more jobs a second on SQLite; on PostgreSQL within the noise."""


def settle() -> None:
    """End a start-up run without garbage collection: exempt every object made so far
    (modules, models; for `serve` and `worker` the engine, workers and app too) from every
    later collection, and collect again, less often (:data:`YOUNG_GENERATION_THRESHOLD`). A
    full collection walks every object it tracks, and requests and claims, which make many
    short-lived ones, set one off again and again: a batch of 1,000 jobs took half as long
    again with the start-up's objects in."""
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
    gc.enable()
