"""The one entry point the call lifecycle uses: ``call_finished(record)``.

``CallTracker.finish`` calls it once per finished call, after the record went to the pipeline.
With no MeterProvider set (the OpenTelemetry API default) it costs two attribute reads and a
comparison (~0.4 µs); the metrics module and its
instruments are created only when a real MeterProvider shows up (set by the app, or by
:func:`wasteaudit.export.setup_export`).
"""

from __future__ import annotations

from typing import Any

from wasteaudit.export import _state

_metrics_api: Any = None
_api_internal: Any = None
_env_provider = False
_NOT_REAL = frozenset({"_ProxyMeterProvider", "NoOpMeterProvider", "_DefaultMeterProvider"})


def call_finished(record: Any) -> None:
    """Record the GenAI client metrics for one finished call (when a MeterProvider is configured)."""
    recorder = _state.recorder
    if recorder is None:
        recorder = activate_from_global()
        if recorder is None:
            return
    recorder.record_call(record)


def metrics_active() -> bool:
    """Whether calls' metrics are recorded (a real MeterProvider is configured)."""
    return _state.recorder is not None or activate_from_global() is not None


def activate_from_global() -> Any:
    """The recorder for the global MeterProvider, created on first sight of a real one; else None."""
    global _metrics_api, _api_internal, _env_provider
    api = _metrics_api
    if api is None:
        import os

        from opentelemetry import metrics as api

        _metrics_api = api
        # get_meter_provider() reads os.environ on every call (microseconds here): read the
        # module's global instead while nothing is configured, when this API version has one.
        internal = getattr(api, "_internal", None)
        _api_internal = internal if hasattr(internal, "_METER_PROVIDER") else None
        _env_provider = "OTEL_PYTHON_METER_PROVIDER" in os.environ
    internal = _api_internal
    if internal is not None and internal._METER_PROVIDER is None and not _env_provider:
        return None
    provider = api.get_meter_provider()
    if provider is _state.noop_provider:
        return None
    if type(provider).__name__ in _NOT_REAL:
        _state.noop_provider = provider
        return None
    from wasteaudit.config import get_settings

    settings = get_settings()
    if not (settings.enabled and getattr(settings, "export_metrics", True)):
        return None
    from wasteaudit.export.metrics import use_meter_provider

    return use_meter_provider(provider)
