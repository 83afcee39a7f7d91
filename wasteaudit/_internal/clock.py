"""The wall clock records are stamped with; replaceable so demos and tests can spread traffic over weeks.

Durations always come from ``time.perf_counter`` (never from this clock): only the timestamps
that place a run or call in a reporting period are affected.
"""

from __future__ import annotations

import time
from typing import Callable

_source: Callable[[], float] = time.time


def now() -> float:
    return _source()


def set_clock(source: Callable[[], float] | None) -> None:
    """Use ``source`` for record timestamps (``None`` restores the system clock)."""
    global _source
    _source = source or time.time
