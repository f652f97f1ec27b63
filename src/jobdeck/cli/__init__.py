"""The ``jobdeck`` command."""
