"""Job ids: UUIDs of version 7, so that ids sort by creation time and index well."""

import os
import time
import uuid


def new_job_id() -> str:
    """A new UUIDv7 string (RFC 9562): 48 bits of milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))
