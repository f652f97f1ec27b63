"""jobdeck: a durable, asynchronous job service."""

__version__ = "0.1.0"
