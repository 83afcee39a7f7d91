"""Record ids: unique without coordination, and time-ordered so the database's indexes append."""

from __future__ import annotations

import re
import time

from wasteaudit.records import new_id


def test_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_in_a_later_millisecond_sort_after() -> None:
    earlier = [new_id() for _ in range(50)]
    time.sleep(0.003)
    later = [new_id() for _ in range(50)]
    assert max(earlier) < min(later)


def test_ids_start_with_the_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(value[:12], 16) <= after
