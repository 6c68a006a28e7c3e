from __future__ import annotations

import time
import uuid

from towerlight.ids import time_ordered_id


def test_time_ordered_ids_start_with_their_time_and_sort_in_order_made() -> None:
    # GIVEN ids made a few milliseconds apart
    before_ms = time.time_ns() // 1_000_000
    first = time_ordered_id()
    time.sleep(0.003)
    second = time_ordered_id()
    after_ms = time.time_ns() // 1_000_000
    # THEN both are UUIDv7, each starting with its unix time in ms; the later sorts after (as text and as uuid)
    assert all((uuid.UUID(i).version, uuid.UUID(i).variant) == (7, uuid.RFC_4122) for i in (first, second))
    assert before_ms <= uuid.UUID(first).int >> 80 < uuid.UUID(second).int >> 80 <= after_ms
    assert first < second and uuid.UUID(first) < uuid.UUID(second)
    # AND the rest is random: ids made in the same millisecond still differ
    assert len({time_ordered_id() for _ in range(1000)}) == 1000
