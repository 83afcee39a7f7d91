"""OTLP export of wasteaudit's spans, metrics and finding events into an existing telemetry stack.

    import wasteaudit
    wasteaudit.configure(export="otlp")               # or WASTEAUDIT_EXPORT=otlp
    # endpoint: WASTEAUDIT_OTLP_ENDPOINT, else the standard OTEL_EXPORTER_OTLP_[TRACES_|METRICS_|LOGS_]ENDPOINT,
    # else http://localhost:4318; OTEL_EXPORTER_OTLP_HEADERS / _TIMEOUT / _COMPRESSION and
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES work as everywhere else.

What :func:`setup_export` does, per signal:

* **Plugs into what the app already has.** If the app (or another library) already set an SDK
  ``TracerProvider`` / ``MeterProvider`` / ``LoggerProvider``, wasteaudit *adds* its exporter to it
  (a span processor, a metric reader, a log record processor) and replaces nothing: the app's own
  exporters, samplers, views and resource stay as they are (and the app's other spans are exported
  to wasteaudit's endpoint too). Otherwise it creates an SDK provider with a resource built from
  ``service_name`` / ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` and, with
  ``set_global=True`` (the default), installs it as the global provider.
* **Exports in the background only**: ``BatchSpanProcessor``, ``PeriodicExportingMetricReader``,
  ``BatchLogRecordProcessor``. The request path only appends to in-memory buffers (bounded by the
  SDK's queue sizes, ``OTEL_BSP_MAX_QUEUE_SIZE`` etc.), so a slow or dead backend never slows a call.
* **Counts failures, never raises them**: each exporter is wrapped; failed batches (and exporter
  exceptions) are counted per signal in ``wasteaudit.status()["export"]``.

Calling it again (``configure()`` again) with the same arguments is a no-op; with different ones it
detaches what the previous call added and sets up anew.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from wasteaudit.exceptions import ConfigError
from wasteaudit.export import _state

__all__ = ["ExportHandle", "apply_settings", "current_handle", "export_status", "setup_export", "shutdown_export"]

EXPORT_MODES = ("", "none", "otlp")

_lock = threading.RLock()
_handle: "ExportHandle | None" = None


# --- exporters that count their failures ----------------------------------------------------------


def _describe(exc: BaseException | None, fallback: str) -> str:
    return f"{type(exc).__name__}: {exc}"[:300] if exc is not None else fallback


def counting_span_exporter(inner: Any) -> Any:
    """Wrap a SpanExporter: results counted under ``traces``; an exception becomes FAILURE."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self.inner = inner

        def export(self, spans: Sequence[Any]) -> Any:
            try:
                result = inner.export(spans)
            except Exception as exc:
                _state.count_export("traces", len(spans), False, _describe(exc, ""))
                return SpanExportResult.FAILURE
            ok = result == SpanExportResult.SUCCESS
            _state.count_export("traces", len(spans), ok, None if ok else "export returned FAILURE")
            return result

        def shutdown(self) -> None:
            try:
                inner.shutdown()
            except Exception:
                pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            try:
                return bool(inner.force_flush(timeout_millis))
            except Exception:
                return False

    return CountingSpanExporter()


def counting_metric_exporter(inner: Any) -> Any:
    """Wrap a MetricExporter (keeping its temporality and aggregation preferences)."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class CountingMetricExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__(
                preferred_temporality=getattr(inner, "_preferred_temporality", None),
                preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
            )
            self.inner = inner

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            items = sum(len(scope.metrics) for rm in metrics_data.resource_metrics for scope in rm.scope_metrics)
            try:
                result = inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            except Exception as exc:
                _state.count_export("metrics", items, False, _describe(exc, ""))
                return MetricExportResult.FAILURE
            ok = result == MetricExportResult.SUCCESS
            _state.count_export("metrics", items, ok, None if ok else "export returned FAILURE")
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            try:
                return bool(inner.force_flush(timeout_millis=timeout_millis))
            except Exception:
                return False

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            try:
                inner.shutdown(timeout_millis=timeout_millis, **kwargs)
            except Exception:
                pass

    return CountingMetricExporter()


def _log_export_types() -> tuple[Any, Any]:
    try:  # opentelemetry-sdk >= 1.39 names
        from opentelemetry.sdk._logs.export import (
            LogRecordExporter,
            LogRecordExportResult,
        )

        return LogRecordExporter, LogRecordExportResult
    except ImportError:  # older SDKs
        from opentelemetry.sdk._logs.export import LogExporter, LogExportResult

        return LogExporter, LogExportResult


def counting_log_exporter(inner: Any) -> Any:
    """Wrap a log record exporter: results counted under ``logs``."""
    base, results = _log_export_types()

    class CountingLogExporter(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.inner = inner

        def export(self, batch: Sequence[Any]) -> Any:
            try:
                result = inner.export(batch)
            except Exception as exc:
                _state.count_export("logs", len(batch), False, _describe(exc, ""))
                return results.FAILURE
            ok = getattr(result, "name", None) == "SUCCESS"
            _state.count_export("logs", len(batch), ok, None if ok else "export returned FAILURE")
            return result

        def shutdown(self) -> None:
            try:
                inner.shutdown()
            except Exception:
                pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            try:
                return bool(inner.force_flush(timeout_millis))
            except Exception:
                return False

    return CountingLogExporter()


# --- processors that can be detached from a provider we do not own --------------------------------


def _detachable_span_processor(inner: Any) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class DetachableSpanProcessor(SpanProcessor):
        """Forwards to ``inner`` until detached (an SDK TracerProvider cannot remove a processor)."""

        def __init__(self) -> None:
            self.inner = inner
            self.detached = False

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if not self.detached:
                inner.on_start(span, parent_context=parent_context)

        def on_end(self, span: Any) -> None:
            if not self.detached:
                inner.on_end(span)

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            _drain_calls(timeout_millis / 1000)  # wasteaudit's spans end on its finisher thread
            return bool(inner.force_flush(timeout_millis))

    return DetachableSpanProcessor()


def _drain_calls(timeout_s: float) -> None:
    """Finish the calls still queued on wasteaudit's finisher thread (their spans end there)."""
    from wasteaudit._internal import pipeline

    pipeline.drain(timeout_s)


def _detachable_log_processor(inner: Any) -> Any:
    from opentelemetry.sdk._logs import LogRecordProcessor

    class DetachableLogRecordProcessor(LogRecordProcessor):
        def __init__(self) -> None:
            self.inner = inner
            self.detached = False

        def on_emit(self, log_record: Any) -> None:
            if not self.detached:
                inner.on_emit(log_record)

        def emit(self, log_record: Any) -> None:  # SDKs before on_emit
            self.on_emit(log_record)

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(inner.force_flush(timeout_millis))

    return DetachableLogRecordProcessor()


# --- setup -------------------------------------------------------------------------------------------


class ExportHandle:
    """What :func:`setup_export` set up: the providers in use and the pieces wasteaudit added."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self.logger_provider: Any = None
        self.created: dict[str, bool] = {}  # signal -> whether wasteaudit created the provider
        self.endpoints: dict[str, str | None] = {}
        self.from_settings = False
        self._span_processor: Any = None
        self._metric_reader: Any = None
        self._log_processor: Any = None
        self._tracer_swap: tuple[Any] | None = None  # wasteaudit's tracer before we pointed it elsewhere
        self._closed = False

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export what is buffered now, blocking up to ``timeout_s`` in all (not for the request path).

        The signals share one deadline, so a collector that hangs costs ``timeout_s``, not three times it.
        """
        ok = True
        deadline = time.monotonic() + timeout_s

        def left_ms() -> int:
            return max(1, int((deadline - time.monotonic()) * 1000))

        _drain_calls(timeout_s)  # spans of calls still being finished end first

        for piece in (self._span_processor, self._log_processor):
            if piece is not None:
                try:
                    ok = bool(piece.force_flush(left_ms())) and ok
                except Exception:
                    ok = False
        if self._metric_reader is not None:
            try:
                ok = bool(self._metric_reader.force_flush(timeout_millis=left_ms())) and ok
            except Exception:
                ok = False
        return ok

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush and detach what wasteaudit added (the providers themselves stay usable)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.force_flush(timeout_s)
        except Exception:
            pass
        if self._span_processor is not None:
            self._span_processor.detached = True
            _quiet(self._span_processor.shutdown)
        if self._tracer_swap is not None:
            from wasteaudit._internal import tracing

            tracing._tracer = self._tracer_swap[0]
        if self._log_processor is not None:
            self._log_processor.detached = True
            _quiet(self._log_processor.shutdown)
            if _state.logger_provider is self.logger_provider:
                _state.logger_provider = None
        if self._metric_reader is not None:
            remove = getattr(self.meter_provider, "remove_metric_reader", None)
            if remove is not None:
                _quiet(lambda: remove(self._metric_reader))
            else:
                _quiet(self._metric_reader.shutdown)
        recorder = _state.recorder
        if recorder is not None and self.meter_provider is not None and recorder.meter_provider is self.meter_provider:
            from opentelemetry import metrics

            if metrics.get_meter_provider() is not self.meter_provider:  # a private provider: stop using it
                from wasteaudit.export.metrics import stop_recording

                stop_recording()

    def __repr__(self) -> str:
        return f"<ExportHandle endpoints={self.endpoints} created={self.created}>"


def _quiet(fn: Any) -> None:
    try:
        fn()
    except Exception:
        pass


def _signal_endpoint(base: str | None, signal: str) -> str | None:
    """``http://collector:4318`` -> ``http://collector:4318/v1/traces``; None lets the exporter read
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` itself."""
    if not base:
        return None
    base = base.rstrip("/")
    for known in ("/v1/traces", "/v1/metrics", "/v1/logs"):
        if base.endswith(known):
            base = base[: -len(known)]
    return f"{base}/v1/{signal}"


def _resolved_endpoint(exporter: Any) -> str | None:
    value = getattr(exporter, "_endpoint", None)
    return value if isinstance(value, str) else None


def _otlp_exporters() -> tuple[Any, Any, Any]:
    try:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise ConfigError(
            "OTLP export needs the OTLP/HTTP exporter: pip install 'wasteaudit[otlp]' "
            f"(opentelemetry-exporter-otlp-proto-http); import failed: {exc}"
        ) from None
    return OTLPSpanExporter, OTLPMetricExporter, OTLPLogExporter


def _resource(service_name: str | None, resource: Any) -> Any:
    if resource is not None:
        return resource
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": service_name} if service_name else {})


def setup_export(
    *,
    endpoint: str | None = None,
    service_name: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    traces: bool = True,
    metrics: bool = True,
    logs: bool = True,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    logger_provider: Any = None,
    set_global: bool = True,
    resource: Any = None,
    metric_export_interval_s: float | None = None,
    span_exporter: Any = None,
    metric_exporter: Any = None,
    log_exporter: Any = None,
) -> ExportHandle:
    """Export wasteaudit's spans, metrics and finding events over OTLP/HTTP (see the module docs).

    ``endpoint`` is the collector's base URL (``http://host:4318``; the signal paths are added);
    without it the standard ``OTEL_EXPORTER_OTLP_*`` variables apply. ``tracer_provider`` /
    ``meter_provider`` / ``logger_provider`` name providers to plug into instead of the global ones;
    ``span_exporter`` / ``metric_exporter`` / ``log_exporter`` replace the OTLP/HTTP exporters (e.g.
    with gRPC ones) and are wrapped the same way. Raises :class:`ConfigError` (at start-up) only when
    the exporter package is missing; export failures later are counted, never raised.
    """
    global _handle
    key = (endpoint, service_name, tuple(sorted((headers or {}).items())), timeout, traces, metrics, logs,
           id(tracer_provider), id(meter_provider), id(logger_provider), set_global, id(resource), metric_export_interval_s,
           id(span_exporter), id(metric_exporter), id(log_exporter))
    with _lock:
        if _handle is not None and not _handle._closed and _handle.key == key:
            return _handle
        needs_otlp = (traces and span_exporter is None) or (metrics and metric_exporter is None) or (logs and log_exporter is None)
        span_cls, metric_cls, log_cls = _otlp_exporters() if needs_otlp else (None, None, None)
        if _handle is not None:
            _handle.shutdown()
            _handle = None
        options: dict[str, Any] = {}
        if headers:
            options["headers"] = dict(headers)
        if timeout is not None:
            options["timeout"] = timeout
        handle = ExportHandle(key)
        res: Any = None
        if traces:
            res = res or _resource(service_name, resource)
            exporter = span_exporter or span_cls(endpoint=_signal_endpoint(endpoint, "traces"), **options)
            handle.endpoints["traces"] = _resolved_endpoint(exporter)
            _setup_traces(handle, counting_span_exporter(exporter), tracer_provider, set_global, res)
        if metrics:
            res = res or _resource(service_name, resource)
            exporter = metric_exporter or metric_cls(endpoint=_signal_endpoint(endpoint, "metrics"), **options)
            handle.endpoints["metrics"] = _resolved_endpoint(exporter)
            _setup_metrics(handle, counting_metric_exporter(exporter), meter_provider, set_global, res, metric_export_interval_s)
        if logs:
            res = res or _resource(service_name, resource)
            exporter = log_exporter or log_cls(endpoint=_signal_endpoint(endpoint, "logs"), **options)
            handle.endpoints["logs"] = _resolved_endpoint(exporter)
            _setup_logs(handle, counting_log_exporter(exporter), logger_provider, set_global, res)
        _handle = handle
        return handle


def _setup_traces(handle: ExportHandle, exporter: Any, provider: Any, set_global: bool, resource: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    processor = _detachable_span_processor(BatchSpanProcessor(exporter))
    target = provider if provider is not None else trace.get_tracer_provider()
    created = not hasattr(target, "add_span_processor")
    if created:
        target = TracerProvider(resource=resource)
    target.add_span_processor(processor)
    if created:
        if set_global and provider is None:
            trace.set_tracer_provider(target)
        if trace.get_tracer_provider() is not target:
            _point_wasteaudit_tracer(handle, target)
    elif provider is not None and trace.get_tracer_provider() is not provider:
        _point_wasteaudit_tracer(handle, provider)  # an explicit, non-global provider: wasteaudit's spans go there
    handle.tracer_provider = target
    handle.created["traces"] = created
    handle._span_processor = processor


def _point_wasteaudit_tracer(handle: ExportHandle, provider: Any) -> None:
    """wasteaudit's own spans go to ``provider`` (not the global one); undone by ``handle.shutdown()``."""
    from wasteaudit._internal import tracing
    from wasteaudit._version import __version__

    if handle._tracer_swap is None:
        handle._tracer_swap = (tracing._tracer,)
    tracing._tracer = provider.get_tracer("wasteaudit", __version__)


def _setup_metrics(handle: ExportHandle, exporter: Any, provider: Any, set_global: bool, resource: Any, interval_s: float | None) -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from wasteaudit.export.metrics import use_meter_provider

    kwargs = {"export_interval_millis": interval_s * 1000} if interval_s else {}
    reader = PeriodicExportingMetricReader(exporter, **kwargs)
    target = provider if provider is not None else metrics.get_meter_provider()
    created = False
    if hasattr(target, "add_metric_reader"):
        target.add_metric_reader(reader)
    elif hasattr(target, "get_meter") and type(target).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider", "_DefaultMeterProvider"):
        # an SDK too old to add a reader: record into the app's provider, exported by its own readers
        reader = None
    else:
        created = True
        target = MeterProvider(metric_readers=[reader], resource=resource)
        if set_global and provider is None:
            metrics.set_meter_provider(target)
    use_meter_provider(target)
    handle.meter_provider = target
    handle.created["metrics"] = created
    handle._metric_reader = reader


def _setup_logs(handle: ExportHandle, exporter: Any, provider: Any, set_global: bool, resource: Any) -> None:
    from opentelemetry import _logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    processor = _detachable_log_processor(BatchLogRecordProcessor(exporter))
    target = provider if provider is not None else _logs.get_logger_provider()
    created = not hasattr(target, "add_log_record_processor")
    if created:
        target = LoggerProvider(resource=resource)
        if set_global and provider is None:
            _logs.set_logger_provider(target)
    target.add_log_record_processor(processor)
    _state.logger_provider = target
    handle.logger_provider = target
    handle.created["logs"] = created
    handle._log_processor = processor


# --- configuration ------------------------------------------------------------------------------------


def apply_settings(settings: Any) -> ExportHandle | None:
    """What ``wasteaudit.configure()`` calls: set up export for ``export="otlp"``, or undo ours."""
    mode = (getattr(settings, "export", "") or "").strip().lower()
    with _lock:
        if not settings.enabled or mode in ("", "none"):
            if _handle is not None and _handle.from_settings:
                shutdown_export()
            if not settings.enabled or not getattr(settings, "export_metrics", True):
                from wasteaudit.export.metrics import stop_recording

                stop_recording()
            return None
        if mode != "otlp":
            raise ConfigError(f"export must be one of: none, otlp; got {mode!r}")
        handle = setup_export(
            endpoint=getattr(settings, "otlp_endpoint", None) or None,
            service_name=getattr(settings, "service_name", None) or None,
            traces=getattr(settings, "export_traces", True),
            metrics=getattr(settings, "export_metrics", True),
            logs=getattr(settings, "export_logs", True),
        )
        handle.from_settings = True
        if not getattr(settings, "export_metrics", True):
            from wasteaudit.export.metrics import stop_recording

            stop_recording()
        return handle


def current_handle() -> ExportHandle | None:
    return _handle


def shutdown_export(timeout_s: float = 5.0) -> None:
    """Flush and detach everything :func:`setup_export` added."""
    global _handle
    with _lock:
        handle, _handle = _handle, None
    if handle is not None:
        handle.shutdown(timeout_s)


def export_status() -> dict[str, Any]:
    """Export counters per signal (batches and items exported / failed, last error) and the endpoints."""
    info = _state.snapshot()
    handle = _handle
    info["configured"] = handle is not None
    info["endpoints"] = dict(handle.endpoints) if handle is not None else {}
    return info
