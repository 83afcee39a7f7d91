"""Test kit: capture wasteaudit's records (and spans) in memory.

    from wasteaudit.testing import capture

    def test_my_feature():
        with capture() as audit_log:
            my_feature()
        assert audit_log.calls[0].output_tokens == 42

Also a pytest fixture ``wasteaudit_capture`` (import it into your ``conftest.py``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from wasteaudit._internal import pipeline
from wasteaudit.records import CallRecord, RunRecord, ScoreRecord


class CapturedAudit:
    """An in-memory sink: every record emitted while it is installed, in order.

    Calls are finished off the app's thread; every reader first finishes the queued ones, so a
    test reads complete records right after its calls.
    """

    deferrable = True  # takes records from the finisher thread (it reads no caller context)

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def submit(self, record: Any) -> bool:
        with self._lock:
            self._items.append(record)
        return True

    @property
    def records(self) -> list[Any]:
        """Every record, in order (the live list)."""
        pipeline.drain()
        return self._items

    @property
    def calls(self) -> list[CallRecord]:
        pipeline.drain()
        with self._lock:
            return [r for r in self._items if isinstance(r, CallRecord)]

    @property
    def runs(self) -> list[RunRecord]:
        pipeline.drain()
        with self._lock:
            return [r for r in self._items if isinstance(r, RunRecord)]

    @property
    def scores(self) -> list[ScoreRecord]:
        pipeline.drain()
        with self._lock:
            return [r for r in self._items if isinstance(r, ScoreRecord)]

    def clear(self) -> None:
        pipeline.drain()
        with self._lock:
            self._items.clear()


@contextmanager
def capture() -> Iterator[CapturedAudit]:
    """Collect every record emitted inside the block (storage keeps working as configured)."""
    sink = CapturedAudit()
    pipeline.add_sink(sink)
    try:
        yield sink
    finally:
        pipeline.remove_sink(sink)


class SpanCapture:
    """Spans finished while installed, from a private in-memory TracerProvider."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def spans(self) -> list[Any]:
        pipeline.drain()  # wasteaudit's spans end in the finisher thread
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        pipeline.drain()
        self.exporter.clear()


@contextmanager
def capture_spans() -> Iterator[SpanCapture]:
    """Route wasteaudit's own spans to an in-memory exporter for the block.

    Only wasteaudit's tracer is redirected; SDKs with their own tracing (anthropic) take a
    ``tracer_provider`` option instead — pass ``captured.provider`` to them.
    """
    from wasteaudit._internal import tracing
    from wasteaudit._version import __version__

    captured = SpanCapture()
    previous = tracing._tracer
    tracing._tracer = captured.provider.get_tracer("wasteaudit", __version__)
    try:
        yield captured
    finally:
        tracing._tracer = previous
        captured.provider.shutdown()


try:  # the fixture is optional: pytest is not a runtime dependency
    import pytest

    @pytest.fixture
    def wasteaudit_capture() -> Iterator[CapturedAudit]:
        with capture() as sink:
            yield sink

except ImportError:  # pragma: no cover - pytest absent
    pass
