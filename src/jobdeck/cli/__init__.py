"""The ``jobdeck`` command."""

import gc


def run() -> None:
    """Run the ``jobdeck`` command (the console script, and ``python -m jobdeck``)."""
    # Importing the command makes a few hundred thousand objects that live as long as the
    # process (modules, models, tables): collecting among them while they appear only costs
    # time (about 0.15 s of a start here). Once imported they are frozen, exempt from every
    # later collection.
    gc.disable()
    from jobdeck.cli.main import app

    gc.freeze()
    gc.enable()
    app()
