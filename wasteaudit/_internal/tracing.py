"""Spans for runs and calls, decorated from the records (the record never depends on the span).

Uses whatever TracerProvider the app set up; with none, OpenTelemetry hands out non-recording
spans and this costs a few microseconds.
"""

from __future__ import annotations

import json
import sys
import threading
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


# -- deferred span start ----------------------------------------------------------------------
# Starting an SDK span costs the calling thread more than everything else wasteaudit does there
# (attribute validation, the span object, the processors' on_start). What must be decided when
# the call starts is only what the outside world can see during the call: the span's ids (for
# child spans and propagated trace headers) and the sampling decision (made on the start
# attributes, as the conventions ask). So the calling thread decides exactly that, with the
# tracer's own id generator and sampler, and makes the call current under a non-recording span
# carrying those ids; the finisher thread later opens the recording span through the tracer's
# ``start_span`` with the same ids, decision, parent context and start time (its sampler and id
# generator replay them). Span processors therefore see ``on_start`` when the call has ended.
# Only the OpenTelemetry SDK's own Tracer allows this (its sampler and id generator are
# per-tracer attributes); any other tracer starts its span on the calling thread.


class _Presets(threading.local):
    def __init__(self) -> None:
        self.result: Any = None  # the sampling result decided at the call's start, replayed by open
        self.trace_id: int | None = None
        self.span_id: int | None = None


_presets = _Presets()


class _DeferringSampler:
    """Wraps the tracer's sampler: while a pending span is opened it replays the decision made at
    the call's start (the sampler is not asked twice); otherwise it delegates."""

    def __init__(self, sampler: Any) -> None:
        self.wrapped = sampler

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, links: Any = None, *args: Any, **kwargs: Any) -> Any:
        result = _presets.result
        if result is not None:
            return result
        return self.wrapped.should_sample(parent_context, trace_id, name, kind, attributes, links, *args, **kwargs)

    def get_description(self) -> str:
        return str(self.wrapped.get_description())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class _DeferringIds:
    """Wraps the tracer's id generator: while a pending span is opened it hands out the ids drawn
    at the call's start; otherwise it delegates."""

    def __init__(self, generator: Any) -> None:
        self.wrapped = generator

    def generate_trace_id(self) -> int:
        preset = _presets.trace_id
        return preset if preset is not None else int(self.wrapped.generate_trace_id())

    def generate_span_id(self) -> int:
        preset = _presets.span_id
        return preset if preset is not None else int(self.wrapped.generate_span_id())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class PendingSpan:
    """A call span decided when the call started and made when it ends (see above).

    ``result`` is the sampler's result; ``None`` for the SDK's default sampler, whose result
    (record and sample, these attributes, this trace state) is made only when the span opens.
    """

    __slots__ = ("deferral", "name", "start_ns", "context", "result", "attributes", "trace_state", "trace_id", "span_id")

    def __init__(self, deferral: "_Deferral", name: str, start_ns: int, context: Any, result: Any, attributes: Any, trace_state: Any, trace_id: int, span_id: int) -> None:
        self.deferral = deferral
        self.name = name
        self.start_ns = start_ns
        self.context = context
        self.result = result
        self.attributes = attributes
        self.trace_state = trace_state
        self.trace_id = trace_id
        self.span_id = span_id

    def open(self) -> Any:
        """The recording span, with the ids, decision, parent, attributes and start time decided at the start."""
        deferral = self.deferral
        result = self.result
        if result is None:
            result = deferral.result_type(deferral.record_and_sample, self.attributes, self.trace_state)
        presets = _presets
        presets.result, presets.trace_id, presets.span_id = result, self.trace_id, self.span_id
        try:
            return deferral.tracer.start_span(self.name, context=self.context, kind=_client_kind(), start_time=self.start_ns)
        finally:
            presets.result = presets.trace_id = presets.span_id = None


class _Deferral:
    """A deferring SDK tracer and the parts the calling thread uses, looked up once."""

    __slots__ = ("tracer", "ids", "sampler", "enabled", "default_on", "result_type", "record_and_sample", "random", "root_random")

    def __init__(self, sdk_tracer: Any) -> None:
        from opentelemetry.sdk.trace import sampling

        if not isinstance(sdk_tracer.sampler, _DeferringSampler):
            sdk_tracer.sampler = _DeferringSampler(sdk_tracer.sampler)
            sdk_tracer.id_generator = _DeferringIds(sdk_tracer.id_generator)
        self.tracer = sdk_tracer
        self.ids = sdk_tracer.id_generator.wrapped
        self.sampler = sdk_tracer.sampler.wrapped
        self.enabled = getattr(sdk_tracer, "_is_enabled", None)  # tracer configuration (newer SDKs)
        # The SDK's default sampler (the ``DEFAULT_ON`` instance: parent-based, root always on)
        # decides from the parent's sampled flag alone; its result is made here directly.
        self.default_on = self.sampler is getattr(sampling, "DEFAULT_ON", None)
        self.result_type = sampling.SamplingResult
        self.record_and_sample = sampling.Decision.RECORD_AND_SAMPLE
        # W3C Trace Context level 2's random-trace-id flag, where the SDK sets it (newer SDKs)
        from opentelemetry.trace import TraceFlags

        knows = hasattr(self.ids, "is_trace_id_random")
        self.random = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0)) if knows else 0
        self.root_random = bool(self.random and self.ids.is_trace_id_random())


_deferring: tuple[Any, _Deferral | None] | None = None  # (the tracer in use, its deferral or None)


def _deferral() -> _Deferral | None:
    """The deferral for the SDK tracer behind :func:`tracer`, or None when that tracer is not the
    OpenTelemetry SDK's (or lacks what deferral relies on). The tracer is wasteaudit's own (the
    SDK makes one per ``get_tracer``), so wrapping its sampler and id generator touches no other."""
    global _deferring
    current = _tracer if _tracer is not None else tracer()
    cached = _deferring
    if cached is not None and cached[0] is current:
        return cached[1]
    candidate = current
    if type(current).__name__ == "ProxyTracer":  # made before the app set its provider
        candidate = getattr(current, "_real_tracer", None)
        if candidate is None:
            return None  # no provider yet: decided again once there is one
    found = None
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    if sdk is not None and isinstance(candidate, sdk.Tracer) and hasattr(candidate, "sampler") and hasattr(candidate, "id_generator"):
        metrics = getattr(candidate, "_tracer_metrics", None)
        # with the SDK's own span metrics on, spans are started as the SDK counts them
        if metrics is None or type(metrics).__name__.startswith("NoOp"):
            try:
                found = _Deferral(candidate)
            except Exception as exc:  # an SDK release without what the deferral reads
                from wasteaudit._internal.safety import internal_error

                internal_error("tracing.deferral", exc)
    _deferring = (current, found)
    return found


_api: Any = None  # (get_current_span, get_current, SpanContext, TraceFlags, NonRecordingSpan)


def _otel_api() -> Any:
    global _api
    if _api is None:
        from opentelemetry import context, trace

        _api = (trace.get_current_span, context.get_current, trace.SpanContext, trace.TraceFlags, trace.NonRecordingSpan)
    return _api


def start_call_span_deferred(name: str, attributes: dict[str, Any], start_ns: int, run: "RunState | None") -> tuple[Any, PendingSpan | None]:
    """(the span to make current during the call, the span to open at its end or None).

    What the SDK's ``Tracer.start_span`` decides at a span's start, decided the same way — the
    tracer's own id generator and sampler, the parent's trace flags — without making the span
    (a test holds this to the SDK's own result). With no deferring tracer this is
    :func:`start_call_span`; a decision that does not record gives the SDK's non-recording span.
    """
    deferral = _deferral()
    if deferral is None:
        return start_call_span(name, attributes, start_ns, run), None
    get_current_span, get_current, SpanContext, TraceFlags, NonRecordingSpan = _api or _otel_api()
    random_flag = deferral.random
    context = parent_context(run) or get_current()
    parent = get_current_span(context).get_span_context()
    if deferral.enabled is not None and not deferral.enabled():
        return NonRecordingSpan(parent), None
    ids = deferral.ids
    root = not parent.is_valid
    if deferral.default_on and not (root or parent.trace_flags.sampled):
        # the SDK's default sampler: the span of a sampled-out parent is sampled out
        return NonRecordingSpan(SpanContext(parent.trace_id, ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(parent.trace_flags & random_flag), trace_state=parent.trace_state)), None
    trace_id = ids.generate_trace_id() if root else parent.trace_id
    if deferral.default_on:  # recorded and sampled; the sampler's result is made when the span opens
        result, trace_state, flags = None, (None if root else parent.trace_state), 1
    else:
        result = deferral.sampler.should_sample(context, trace_id, name, _CLIENT or _client_kind(), attributes, ())
        trace_state, flags = result.trace_state, (1 if result.decision.is_sampled() else 0)
    if random_flag and (deferral.root_random if root else parent.trace_flags & random_flag):
        flags |= random_flag
    span_id = ids.generate_span_id()
    placeholder = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=trace_state))
    if result is not None and not result.decision.is_recording():
        return placeholder, None
    return placeholder, PendingSpan(deferral, name, start_ns, context, result, attributes, trace_state, trace_id, span_id)


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
