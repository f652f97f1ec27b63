"""Job ids: UUIDs of version 7, so that ids sort by creation time and index well."""

import os
import time

_VERSION_AND_VARIANT = (0x7 << 76) | (0x2 << 62)
_CLEAR = ~((0xF << 76) | (0x3 << 62))


def new_job_ids(count: int) -> list[str]:
    """``count`` new UUIDv7 strings (RFC 9562): 48 bits of milliseconds, then random bits.

    One call to the system's random source for all of them: for a batch of submissions, a
    call per id was a fifth of the work.
    """
    millis = time.time_ns() // 1_000_000
    random = os.urandom(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        value = (millis << 80) | int.from_bytes(random[start : start + 10], "big")
        text = f"{(value & _CLEAR) | _VERSION_AND_VARIANT:032x}"
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids


def new_job_id() -> str:
    """A new UUIDv7 string."""
    return new_job_ids(1)[0]
