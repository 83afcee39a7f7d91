"""Fixtures for the export tests: a private MeterProvider / LoggerProvider, an instrumented OpenAI client.

Nothing here sets a global OpenTelemetry provider (that can happen once per process): tests that
need the global path run a subprocess (``export_support.run_app``).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from wasteaudit.export import _state
from wasteaudit.export.metrics import stop_recording, use_meter_provider

# The loopback server and the instrumented OpenAI client are the instrumentation suite's own.
from instrumentation.openai_support import _shared_llm_server, instrumented, llm_server, oai  # noqa: F401


@pytest.fixture
def metric_reader() -> Iterator[Any]:
    """An SDK MeterProvider with an in-memory reader, made wasteaudit's for the test."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    use_meter_provider(provider)
    try:
        yield reader
    finally:
        stop_recording()
        provider.shutdown()
        _state.reset_counters()


@pytest.fixture
def log_exporter() -> Iterator[Any]:
    """An SDK LoggerProvider with an in-memory exporter, used by emit_findings for the test."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemory
    except ImportError:  # older SDK name
        from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemory  # type: ignore[no-redef]

    exporter = InMemory()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    previous = _state.logger_provider
    _state.logger_provider = provider
    try:
        yield exporter
    finally:
        _state.logger_provider = previous
        provider.shutdown()
