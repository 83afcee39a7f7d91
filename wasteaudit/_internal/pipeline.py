"""Where finished records go: the storage writer and any extra sinks (test capture, exporters).

``emit()`` runs on the app's request path, so it only appends to bounded in-memory queues;
the writer (and its SQLAlchemy import) is created lazily on the first record and lives in a
background thread. Every failure here is counted, never raised.

Calls are finished off the request path (:mod:`wasteaudit._internal.deferred`) when every extra
sink accepts records from another thread (``deferrable = True``: the test kit does; a sink that
reads the caller's context does not). ``emit()`` queues behind unfinished calls so records keep
their order; ``flush()`` and ``reset_writer()`` drain the finisher first.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any, Protocol

from wasteaudit._internal import deferred
from wasteaudit._internal.safety import internal_error
from wasteaudit.config import get_settings, warn_if_unconfigured


class Sink(Protocol):
    def submit(self, record: Any) -> bool: ...


_lock = threading.Lock()
_writer: Any = None
_writer_failed: str | None = None
_extra_sinks: tuple[Sink, ...] = ()
_dropped_disabled_storage = 0
# every extra sink takes records from the finisher thread (see can_defer)
_sinks_deferrable = True


def _deferrable(sinks: tuple[Sink, ...]) -> bool:
    return all(getattr(sink, "deferrable", False) is True for sink in sinks)


def add_sink(sink: Sink) -> None:
    global _extra_sinks, _sinks_deferrable
    if not getattr(sink, "deferrable", False):
        drain()  # records finished before it arrived go out first, in order
    with _lock:
        _extra_sinks = (*_extra_sinks, sink)
        _sinks_deferrable = _deferrable(_extra_sinks)


def remove_sink(sink: Sink) -> None:
    global _extra_sinks, _sinks_deferrable
    drain()  # what was recorded while it was installed still reaches it
    with _lock:
        _extra_sinks = tuple(s for s in _extra_sinks if s is not sink)
        _sinks_deferrable = _deferrable(_extra_sinks)


def can_defer() -> bool:
    """Whether a finished call may be completed and delivered on the finisher thread."""
    return _sinks_deferrable and deferred.enabled() and get_settings().finish_in_background


def drain(timeout: float | None = None) -> bool:
    """Finish every call still queued on the finisher (in this thread); True when none is left."""
    try:
        return deferred.drain(timeout)
    except Exception as exc:
        internal_error("pipeline.drain", exc)
        return False


def _get_writer() -> Any:
    global _writer, _writer_failed
    writer = _writer
    if writer is not None or _writer_failed is not None:
        return writer
    with _lock:
        if _writer is None and _writer_failed is None:
            settings = get_settings()
            try:
                from wasteaudit.storage.writer import Writer

                _writer = Writer(
                    settings.database_url,
                    queue_size=settings.queue_size,
                    batch_size=settings.batch_size,
                    flush_interval=settings.flush_interval,
                    auto_migrate=settings.auto_migrate,
                    price_overrides=settings.price_overrides,
                )
            except Exception as exc:  # a bad URL is reported by configure(); here we only count
                _writer_failed = repr(exc)
                internal_error("pipeline.writer", exc)
            else:
                # Registered after the writer's own exit hook, so it runs before it (LIFO): the
                # calls still being finished reach the writer before it stops.
                atexit.unregister(_drain_at_exit)
                atexit.register(_drain_at_exit)
        return _writer


def _drain_at_exit() -> None:
    drain(timeout=5.0)


def emit(record: Any) -> None:
    """Hand a finished record to every sink (behind calls still being finished). Never raises."""
    if deferred.pending() and can_defer():
        deferred.submit_or_run(lambda: deliver(record))
        return
    deliver(record)


def deliver(record: Any) -> None:
    """Hand a finished record to every sink now (the finisher's jobs call this directly)."""
    settings = get_settings()
    if not settings.enabled:
        return
    for sink in _extra_sinks:
        try:
            sink.submit(record)
        except Exception as exc:
            internal_error("pipeline.sink", exc)
    if not settings.storage:
        return
    if not settings.explicit:
        warn_if_unconfigured()
    writer = _writer if _writer is not None else _get_writer()
    if writer is None:
        return
    try:
        writer.submit(record)
    except Exception as exc:
        internal_error("pipeline.submit", exc)


def current_writer() -> Any:
    """The running writer, or None if nothing was recorded yet (or storage failed to start)."""
    return _writer


def writer_start_error() -> str | None:
    return _writer_failed


def reset_writer(timeout: float | None = 5.0) -> None:
    """Stop the writer (flushing what it can) so the next record starts one with new settings."""
    global _writer, _writer_failed
    drain(timeout)
    with _lock:
        writer, _writer, _writer_failed = _writer, None, None
    if writer is not None:
        try:
            writer.shutdown(timeout=timeout)
        except Exception as exc:
            internal_error("pipeline.shutdown", exc)


def flush(timeout: float | None = None) -> bool:
    """Finish the queued calls, then wait for the writer; True when nothing is left pending."""
    deadline = None if timeout is None else time.monotonic() + timeout
    drained = drain(timeout)
    writer = _writer
    if writer is None:
        return drained
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return bool(writer.flush(timeout=remaining)) and drained
    except Exception as exc:
        internal_error("pipeline.flush", exc)
        return False


def stats() -> dict[str, Any]:
    writer = _writer
    base: dict[str, Any] = {"writer_start_error": _writer_failed}
    if writer is not None:
        try:
            base.update(writer.stats())
        except Exception as exc:
            internal_error("pipeline.stats", exc)
    return base
