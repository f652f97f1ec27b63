"""The engine's limits and policies, with the defaults a service starts with."""

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from jobdeck.domain.jobtypes import BUILTIN_TYPES, JobType


@dataclass
class EngineSettings:
    """What the engine enforces. Every field has a default a service can run with."""

    results_dir: Path = Path(".jobdeck/results")
    job_types: dict[str, JobType] = field(default_factory=lambda: dict(BUILTIN_TYPES))
    default_destruction: timedelta = timedelta(days=7)
    max_destruction: timedelta = timedelta(days=30)
    max_execution_duration: int = 0
    """Seconds; 0 means no cap on what a job may ask for."""
    lease_seconds: float = 30.0
    retry_base_delay: float = 1.0
    retry_max_delay: float = 300.0
    lost_task_retries: int = 3
    """How often a task whose worker died is run again, whatever max_retries_per_task says."""
    wait_cap: float = 60.0
    """The longest a blocking GET (``?wait=``) holds a request."""
    token_cache_seconds: float = 5.0
