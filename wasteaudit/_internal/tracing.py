"""Spans for runs and calls, decorated from the records (the record never depends on the span).

Uses whatever TracerProvider the app set up; with none, OpenTelemetry hands out non-recording
spans and this costs a few microseconds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from wasteaudit._internal import semconv as sc

if TYPE_CHECKING:
    from wasteaudit._internal.runs import RunState
    from wasteaudit.records import CallRecord, RunRecord

_tracer: Any = None


def tracer() -> Any:
    global _tracer
    if _tracer is None:
        from opentelemetry import trace

        from wasteaudit._version import __version__

        _tracer = trace.get_tracer("wasteaudit", __version__)
    return _tracer


def _ids(span: Any) -> tuple[str | None, str | None]:
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def start_run_span(run: "RunState") -> None:
    from opentelemetry import trace

    current = trace.get_current_span()
    span = tracer().start_span(
        f"audit {run.name}",
        start_time=int(run.started_at * 1e9),
        attributes={sc.WA_RUN_ID: run.id, sc.WA_RUN_NAME: run.name},
        context=trace.set_span_in_context(run.parent.span) if run.parent is not None and run.parent.span is not None else None,
    )
    run.span = span
    run.entry_span = current
    run.trace_id, run.span_id = _ids(span)


def end_run_span(run: "RunState", record: "RunRecord", exc: BaseException | None) -> None:
    span = run.span
    if span is None:
        return
    if span.is_recording():
        span.set_attribute(sc.WA_RUN_STATUS, record.status)
        if record.tags:
            span.set_attribute(sc.WA_RUN_TAGS, json.dumps(record.tags, sort_keys=True))
        if exc is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute(sc.ERROR_TYPE, type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.end()


def parent_context(run: "RunState | None") -> Any:
    """Calls nest under their run's span unless the app opened a span of its own inside the run."""
    if run is None or run.span is None:
        return None
    from opentelemetry import trace

    if trace.get_current_span() is run.entry_span:
        return trace.set_span_in_context(run.span)
    return None


def start_call_span(name: str, attributes: dict[str, Any], start_ns: int, run: "RunState | None") -> Any:
    return tracer().start_span(name, kind=_client_kind(), attributes=attributes, start_time=start_ns, context=parent_context(run))


_CLIENT: Any = None


def _client_kind() -> Any:
    global _CLIENT
    if _CLIENT is None:
        from opentelemetry.trace import SpanKind

        _CLIENT = SpanKind.CLIENT
    return _CLIENT


def call_end_attributes(record: "CallRecord", *, started: bool = False) -> dict[str, Any]:
    """Attributes known only when a call has ended (usage, finish, attempts).

    ``started``: the span was started by us with the call's identity (call id, run), which is
    then not set a second time (every attribute costs the SDK a validation pass).
    """
    attrs: dict[str, Any] = {
        sc.WA_ATTEMPTS: record.attempt_count,
        sc.WA_USAGE_SOURCE: record.usage_source,
    }
    if not started:
        attrs[sc.WA_CALL_ID] = record.id
        if record.run_id:
            attrs[sc.WA_RUN_ID] = record.run_id
        if record.function:
            attrs[sc.WA_RUN_NAME] = record.function
    if record.response_model:
        attrs[sc.RESPONSE_MODEL] = record.response_model
    if record.response_id:
        attrs[sc.RESPONSE_ID] = record.response_id
    if record.finish_reasons:
        attrs[sc.RESPONSE_FINISH_REASONS] = [r if r is not None else "error" for r in record.finish_reasons]
    if record.finish_category:
        attrs[sc.WA_FINISH_CATEGORY] = record.finish_category
    if record.stream_state:
        attrs[sc.WA_STREAM_STATE] = record.stream_state
    if record.time_to_first_chunk_s is not None:
        attrs[sc.RESPONSE_TTFC] = record.time_to_first_chunk_s
    if record.input_tokens is not None:
        attrs[sc.USAGE_INPUT] = record.input_tokens
    if record.output_tokens is not None:
        attrs[sc.USAGE_OUTPUT] = record.output_tokens
    if record.input_cache_read_tokens is not None:
        attrs[sc.USAGE_CACHE_READ] = record.input_cache_read_tokens
    if record.input_cache_write_tokens is not None:
        attrs[sc.USAGE_CACHE_CREATION] = record.input_cache_write_tokens
        attrs[sc.USAGE_CACHE_WRITE] = record.input_cache_write_tokens
    if record.output_reasoning_tokens is not None:
        attrs[sc.USAGE_REASONING] = record.output_reasoning_tokens
    failed = [a.status_code or 0 for a in record.attempts if a.error_type or (a.status_code or 0) >= 400]
    if failed:
        attrs[sc.WA_ATTEMPT_STATUSES] = failed
    if record.error_type:
        attrs[sc.ERROR_TYPE] = record.error_type
    return attrs


def content_attributes(record: "CallRecord") -> dict[str, Any]:
    """Opt-in message content, in the conventions' JSON shapes (already policy-filtered)."""
    from wasteaudit._internal.content import to_jsonable

    attrs: dict[str, Any] = {}
    if record.input_messages is not None:
        attrs[sc.INPUT_MESSAGES] = json.dumps(to_jsonable(record.input_messages), ensure_ascii=False)
    if record.system_instructions is not None:
        attrs[sc.SYSTEM_INSTRUCTIONS] = json.dumps(to_jsonable(record.system_instructions), ensure_ascii=False)
    if record.choices:
        out = []
        for choice in record.choices:
            parts: list[dict[str, Any]] = []
            if choice.text:
                parts.append({"type": "text", "content": choice.text})
            for call in choice.tool_calls or []:
                parts.append({"type": "tool_call", "id": call.get("id"), "name": call.get("name"), "arguments": call.get("arguments")})
            out.append({"role": "assistant", "parts": parts, "finish_reason": choice.finish_reason or "error"})
        attrs[sc.OUTPUT_MESSAGES] = json.dumps(out, ensure_ascii=False)
    return attrs
