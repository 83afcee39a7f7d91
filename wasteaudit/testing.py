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
    """An in-memory sink: every record emitted while it is installed, in order."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self._lock = threading.Lock()

    def submit(self, record: Any) -> bool:
        with self._lock:
            self.records.append(record)
        return True

    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return [r for r in self.records if isinstance(r, CallRecord)]

    @property
    def runs(self) -> list[RunRecord]:
        with self._lock:
            return [r for r in self.records if isinstance(r, RunRecord)]

    @property
    def scores(self) -> list[ScoreRecord]:
        with self._lock:
            return [r for r in self.records if isinstance(r, ScoreRecord)]

    def clear(self) -> None:
        with self._lock:
            self.records.clear()


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
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
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
