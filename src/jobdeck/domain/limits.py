"""What the stores keep at most: a value beyond is refused on the way in (or cut, where a
worker reports it), the same on every store. PostgreSQL refused a longer text or a larger
number and SQLite kept it (or, for a number beyond its 64 bits, failed with a 500).

Plain constants, without pydantic or SQLAlchemy: worker processes import them too."""

INT32_MAX = 2**31 - 1
"""The largest count or duration a job keeps (an integer column)."""
INT64_MAX = 2**63 - 1
"""The largest key (a job's or a log line's seq)."""
RESULT_ID_MAX_LENGTH = 512
"""Characters of a result's id (a result file's path in its results directory)."""
MIME_TYPE_MAX_LENGTH = 128
"""Characters of a result's MIME type."""
ERROR_CODE_MAX_LENGTH = 64
"""Characters of a job error's code."""
SOURCE_MAX_LENGTH = 160
"""Characters of who caused a change (an error's or a message's source)."""
TASK_LOG_MAX_BYTES = 16 * 2**20
"""Bytes of log a task keeps by default (its job type's ``max_log_bytes``): lines beyond are
left out and counted, so that a task that prints without end fills neither the store nor
the service's memory."""
MAX_LOCAL_PROCESSES = 256
"""Worker processes one service or ``jobdeck worker`` runs at most."""
