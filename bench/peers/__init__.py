"""The systems under test, one module each, all behind ``common.Peer``."""

from __future__ import annotations

import importlib
from pathlib import Path

from common import Peer, PeerFailed

#: system name -> (module in this package, class name). Order is the table's order.
SYSTEMS: dict[str, tuple[str, str]] = {
    "jobdeck-sqlite": ("jobdeck", "JobdeckSqlite"),
    "jobdeck-pg": ("jobdeck", "JobdeckPostgres"),
    "celery": ("celery", "CeleryPeer"),
    "rq": ("rq", "RqPeer"),
    "dramatiq": ("dramatiq", "DramatiqPeer"),
    "huey-redis": ("huey", "HueyRedis"),
    "huey-sqlite": ("huey", "HueySqlite"),
    "arq": ("arq", "ArqPeer"),
    "procrastinate": ("procrastinate", "ProcrastinatePeer"),
    "pgqueuer": ("pgqueuer", "PgqueuerPeer"),
}
JOBDECK = ("jobdeck-sqlite", "jobdeck-pg")


def load_peer(name: str, work_dir: Path) -> Peer:
    """Import the module of system ``name`` and build its peer; PeerFailed if it cannot."""
    if name not in SYSTEMS:
        raise PeerFailed(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    module_name, class_name = SYSTEMS[name]
    try:
        module = importlib.import_module(f"peers.{module_name}")
    except ImportError as error:
        raise PeerFailed(
            f"not installed ({error}); pip install -r bench/requirements.txt"
        ) from error
    peer: Peer = getattr(module, class_name)(work_dir)
    return peer
