"""Waste findings back into traces: one OpenTelemetry log record (event) per finding.

Each event is named ``wasteaudit.waste.finding`` and carries the trace id and span id of the call
it is about (from the stored call), so a trace viewer that correlates logs with spans (Grafana
Tempo + Loki, Jaeger, Phoenix, Honeycomb, ...) shows the waste next to the call that produced it.
Weekly totals never need these events: the ``wasteaudit.waste.*`` counters carry them.

The logger comes from the LoggerProvider :func:`wasteaudit.export.setup_export` set up or
plugged into, else the app's global one when it is a real (SDK) provider; with neither this is a
no-op. Scoring runs off the request path, so emitting here is never on it either; export itself
happens in the provider's batch processor thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from wasteaudit._internal import semconv as sc
from wasteaudit.export import _state
from wasteaudit.export.metrics import (
    NO_RUN,
    WASTE_KIND,
    WASTE_SUBKIND,
    WASTE_TIER,
    _get,
    finding_cost,
)

__all__ = ["EVENT_NAME", "emit_findings", "finding_attributes"]

EVENT_NAME = "wasteaudit.waste.finding"
WASTE_TOKENS = "wasteaudit.waste.tokens"
WASTE_COST = "wasteaudit.waste.cost.usd"
WASTE_CONFIDENCE = "wasteaudit.waste.confidence"
WASTE_REASON = "wasteaudit.waste.reason"
WASTE_CHOICE = "wasteaudit.waste.choice_index"
WASTE_SEGMENT_START = "wasteaudit.waste.segment.start"
WASTE_SEGMENT_END = "wasteaudit.waste.segment.end"
WASTE_MATCH = "wasteaudit.waste.matching_call.id"

_NOT_REAL = frozenset({"ProxyLoggerProvider", "_ProxyLoggerProvider", "NoOpLoggerProvider"})


def _logger(logger_provider: Any = None) -> Any:
    provider = logger_provider or _state.logger_provider
    if provider is None:
        from opentelemetry import _logs

        provider = _logs.get_logger_provider()
        if type(provider).__name__ in _NOT_REAL:
            return None
    from wasteaudit._version import __version__

    return provider.get_logger("wasteaudit", __version__)


def _context(call: Any) -> Any:
    """An OTel context whose current span is the call's span (from stored ids), or None."""
    trace_id, span_id = _get(call, "trace_id"), _get(call, "span_id")
    if not trace_id or not span_id:
        return None
    try:
        tid, sid = int(str(trace_id), 16), int(str(span_id), 16)
    except ValueError:
        return None
    if not tid or not sid:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span_context = SpanContext(trace_id=tid, span_id=sid, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def _reason(evidence: Any) -> str | None:
    if not isinstance(evidence, Mapping):
        return None
    for key in ("reason", "rule", "why"):
        value = evidence.get(key)
        if isinstance(value, str) and value:
            return value[:500]
    return None


def finding_attributes(finding: Any, call: Any, cost: float | None = None) -> dict[str, Any]:
    """The event's attributes: the waste label, its size and price, and the call it belongs to."""
    attrs: dict[str, Any] = {
        WASTE_KIND: str(_get(finding, "kind")),
        WASTE_SUBKIND: str(_get(finding, "subkind")),
        WASTE_TIER: str(_get(finding, "tier")),
        WASTE_TOKENS: int(_get(finding, "tokens") or 0),
    }
    confidence = _get(finding, "confidence")
    if isinstance(confidence, (int, float)) and not isinstance(confidence, bool):
        attrs[WASTE_CONFIDENCE] = float(confidence)
    if cost is not None:
        attrs[WASTE_COST] = float(cost)
    call_id = _get(finding, "call_id") or (_get(call, "id") if call is not None else None)
    if call_id:
        attrs[sc.WA_CALL_ID] = str(call_id)
    run_id = _get(finding, "run_id") or (_get(call, "run_id") if call is not None else None)
    if run_id:
        attrs[sc.WA_RUN_ID] = str(run_id)
    if call is not None:
        attrs[sc.WA_RUN_NAME] = _get(call, "function") or NO_RUN
        for key, name in ((sc.REQUEST_MODEL, "request_model"), (sc.RESPONSE_MODEL, "response_model"), (sc.PROVIDER, "provider"), (sc.OPERATION, "operation")):
            value = _get(call, name)
            if value:
                attrs[key] = str(value)
    for key, name in ((WASTE_CHOICE, "choice_index"), (WASTE_SEGMENT_START, "segment_start"), (WASTE_SEGMENT_END, "segment_end")):
        value = _get(finding, name)
        if isinstance(value, int) and not isinstance(value, bool):
            attrs[key] = value
    evidence = _get(finding, "evidence")
    reason = _reason(evidence)
    if reason:
        attrs[WASTE_REASON] = reason
    if isinstance(evidence, Mapping):
        match = evidence.get("matching_call_id") or evidence.get("match_call_id")
        if isinstance(match, str) and match:
            attrs[WASTE_MATCH] = match
    return attrs


def _body(attrs: Mapping[str, Any]) -> str:
    text = f"{attrs[WASTE_KIND]}/{attrs[WASTE_SUBKIND]} ({attrs[WASTE_TIER]}): {attrs[WASTE_TOKENS]} output tokens wasted"
    if WASTE_COST in attrs:
        text += f" (${attrs[WASTE_COST]:.6f})"
    if WASTE_REASON in attrs:
        text += f" - {attrs[WASTE_REASON]}"
    return text


def emit_findings(call: Any, findings: Iterable[Any], *, logger_provider: Any = None) -> int:
    """Emit one ``wasteaudit.waste.finding`` event per finding of ``call``; returns how many.

    ``call`` is the stored call (a ``CallRecord`` or a row with ``trace_id``/``span_id``); without
    ids the events are still emitted, just not linked to a span. Never raises.
    """
    try:
        logger = _logger(logger_provider)
        if logger is None:
            return 0
        from opentelemetry._logs import SeverityNumber

        context = _context(call)
        now = time.time_ns()
        costs: dict[Any, Any] = {}
        emitted = 0
        for finding in findings:
            attrs = finding_attributes(finding, call, finding_cost(finding, call, _cache=costs))
            try:
                logger.emit(
                    timestamp=now,
                    observed_timestamp=now,
                    context=context,
                    severity_number=SeverityNumber.INFO,
                    severity_text="INFO",
                    body=_body(attrs),
                    attributes=attrs,
                    event_name=EVENT_NAME,
                )
            except TypeError:  # an API without keyword emit / event names: the record form
                from opentelemetry._logs import LogRecord

                logger.emit(LogRecord(timestamp=now, observed_timestamp=now, severity_number=SeverityNumber.INFO,
                                      severity_text="INFO", body=_body(attrs), attributes={**attrs, "event.name": EVENT_NAME}))
            emitted += 1
        _state.count_event("findings_emitted", emitted)
        return emitted
    except Exception as exc:
        from wasteaudit._internal.safety import internal_error

        internal_error("export.emit_findings", exc)
        return 0
