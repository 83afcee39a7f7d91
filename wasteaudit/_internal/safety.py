"""Fail-open helpers: wasteaudit's own errors are counted and logged, never raised into the app.

Under pytest (``WASTEAUDIT_RAISE_INTERNAL=1``, set by our test-suite) they re-raise so our own
bugs fail our tests instead of hiding behind the fail-open promise.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter

logger = logging.getLogger("wasteaudit")

_lock = threading.Lock()
_errors: Counter[str] = Counter()
_last_logged: dict[str, float] = {}
_LOG_EVERY_S = 60.0


def raise_internal() -> bool:
    return os.environ.get("WASTEAUDIT_RAISE_INTERNAL") == "1"


def internal_error(where: str, exc: BaseException) -> None:
    """Count an internal failure and log it at most once a minute per place."""
    with _lock:
        _errors[where] += 1
        now = time.monotonic()
        due = now - _last_logged.get(where, -_LOG_EVERY_S) >= _LOG_EVERY_S
        if due:
            _last_logged[where] = now
    if due:
        logger.warning("wasteaudit internal error in %s (counted, app unaffected): %r", where, exc, exc_info=exc)
    if raise_internal():
        raise exc


def internal_error_counts() -> dict[str, int]:
    """Counts per place, including those of calls still being finished (drained first)."""
    from wasteaudit._internal import deferred

    deferred.drain()
    with _lock:
        return dict(_errors)


def reset_internal_errors() -> None:
    with _lock:
        _errors.clear()
        _last_logged.clear()
