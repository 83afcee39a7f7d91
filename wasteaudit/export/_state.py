"""Process-wide export state: the active metrics recorder and the export failure counters.

Imported on the request path (by the call lifecycle hook), so it imports nothing but the
standard library; the OpenTelemetry SDK and exporters load only when export is set up or a
MeterProvider is found.
"""

from __future__ import annotations

import threading
import time
from typing import Any

SIGNALS = ("traces", "metrics", "logs")

_lock = threading.Lock()

# The MetricsRecorder in use (bound to one MeterProvider), or None. Read without a lock on the
# request path: swapping it is a single reference assignment.
recorder: Any = None
# The MeterProvider found not to be a real one last time we looked (the API's proxy or no-op
# provider): while get_meter_provider() keeps returning it, the per-call check is one identity test.
noop_provider: Any = None
# A LoggerProvider set up or plugged into by setup_export (None: use the global one if it is real).
logger_provider: Any = None


def _fresh() -> dict[str, Any]:
    return {"exported_batches": 0, "exported_items": 0, "failed_batches": 0, "failed_items": 0, "last_error": None, "last_failure_at": None}


_counters: dict[str, dict[str, Any]] = {signal: _fresh() for signal in SIGNALS}
_events = {"findings_emitted": 0, "findings_recorded": 0}


def count_export(signal: str, items: int, ok: bool, error: str | None = None) -> None:
    """Count one export attempt of a batch (called from the exporters' background threads)."""
    with _lock:
        counters = _counters.setdefault(signal, _fresh())
        if ok:
            counters["exported_batches"] += 1
            counters["exported_items"] += items
        else:
            counters["failed_batches"] += 1
            counters["failed_items"] += items
            counters["last_error"] = error
            counters["last_failure_at"] = time.time()


def count_event(name: str, n: int = 1) -> None:
    with _lock:
        _events[name] = _events.get(name, 0) + n


def snapshot() -> dict[str, Any]:
    """Counters for ``wasteaudit.status()['export']``."""
    with _lock:
        out: dict[str, Any] = {signal: dict(values) for signal, values in _counters.items()}
        out.update(_events)
    out["failed_exports"] = sum(out[s]["failed_batches"] for s in SIGNALS)
    out["metrics_active"] = recorder is not None
    return out


def reset_counters() -> None:
    with _lock:
        for signal in list(_counters):
            _counters[signal] = _fresh()
        for key in _events:
            _events[key] = 0
