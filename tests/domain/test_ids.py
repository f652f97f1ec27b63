"""Job ids are RFC 9562 UUIDv7 strings: unique, and in creation order across milliseconds."""

import time
import uuid

from jobdeck.domain.ids import new_job_id, new_job_ids


def test_ids_are_uuid7_and_unique() -> None:
    ids = [*new_job_ids(5000), new_job_id()]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_ids_begin_with_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_job_ids(3)
    after = time.time_ns() // 1_000_000
    for text in ids:
        assert before <= uuid.UUID(text).int >> 80 <= after


def test_ids_sort_by_creation_time() -> None:
    first = new_job_id()
    time.sleep(0.002)
    second = new_job_ids(3)
    assert all(first < later for later in second)
