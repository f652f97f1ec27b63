"""Job ids: UUIDs of version 7, so that ids sort by creation time and index well."""

import os
import time

_VARIANT = "89ab"  # the variant's two bits (10) and one random bit, as a hex digit


def new_job_ids(count: int) -> list[str]:
    """``count`` new UUIDv7 strings (RFC 9562): 48 bits of milliseconds, the version, then
    random bits (with the variant's two).

    Text sliced from one block of random hex: the ids of one call share their time, and a
    call to the system's random source or an integer formatted per id was a fifth of the
    work of a batch of submissions.
    """
    millis = f"{time.time_ns() // 1_000_000 % (1 << 48):012x}"
    prefix = f"{millis[:8]}-{millis[8:]}-7"
    random = os.urandom(10 * count).hex()  # per id 20 digits: 18 used whole, one for the variant
    ids = []
    for start in range(0, 20 * count, 20):
        block = random[start : start + 20]
        variant = _VARIANT[int(block[3], 16) & 3]
        ids.append(f"{prefix}{block[:3]}-{variant}{block[4:7]}-{block[7:19]}")
    return ids


def new_job_id() -> str:
    """A new UUIDv7 string."""
    return new_job_ids(1)[0]
