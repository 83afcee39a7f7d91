"""A call's span is decided when the call starts and made when it ends.

The calling thread draws the span's ids and asks the sampler, exactly as the OpenTelemetry SDK's
``Tracer.start_span`` would, and makes the call current under a non-recording span carrying
those ids; the finisher thread opens the recording span with the same ids, decision, parent and
start time. These tests hold the decision to the SDK's own, and the exported span to what an
immediately started span would have been.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, instrumented
from openai_support import only_call
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, DEFAULT_ON, Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

import wasteaudit
from wasteaudit import config
from wasteaudit._internal import tracing
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "user", "content": "Say hi"}]
ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}


class CountingIds(IdGenerator):
    """Deterministic ids, so two tracers fed the same sequence can be compared."""

    def __init__(self) -> None:
        self._next = itertools.count(0x1000)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return next(self._next) << 64 | 0xABC


class RandomCountingIds(CountingIds):
    """Deterministic ids that claim to be random (W3C level 2's random-trace-id flag, where supported)."""

    def is_trace_id_random(self) -> bool:
        return True


RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)


class TaggingSampler(Sampler):
    """Drops calls to gpt-4o, keeps every other span with an added attribute and a trace-state entry."""

    def __init__(self) -> None:
        self.calls = 0

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:
        self.calls += 1
        keep = (attributes or {}).get("gen_ai.request.model") != "gpt-4o"
        decision = Decision.RECORD_AND_SAMPLE if keep else Decision.DROP
        return SamplingResult(decision, {**(attributes or {}), "sampler.kept": keep} if keep else None, TraceState([("wa", "1")]))

    def get_description(self) -> str:
        return "TaggingSampler"


class RecordOnly(Sampler):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY, args[4] if len(args) > 4 else None)

    def get_description(self) -> str:
        return "RecordOnly"


PARENTS = {
    "root": None,
    "local sampled": SpanContext(0xA1, 0xB1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
    "local unsampled": SpanContext(0xA2, 0xB2, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT)),
    "remote sampled with state": SpanContext(0xA3, 0xB3, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "x")])),
    "remote unsampled": SpanContext(0xA4, 0xB4, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT)),
    "remote sampled, random trace id": SpanContext(0xA5, 0xB5, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED | RANDOM)),
    "local unsampled, random trace id": SpanContext(0xA6, 0xB6, is_remote=False, trace_flags=TraceFlags(RANDOM)),
}
SAMPLERS = {
    "the SDK's default": lambda: DEFAULT_ON,
    "parent-based always-on": lambda: ParentBased(ALWAYS_ON),
    "always off": lambda: ALWAYS_OFF,
    "trace-id ratio 0.5": lambda: TraceIdRatioBased(0.5),
    "parent-based ratio": lambda: ParentBased(TraceIdRatioBased(0.5)),
    "custom, attributes and trace state": TaggingSampler,
    "record only": RecordOnly,
}


@contextmanager
def wasteaudit_tracer(provider: TracerProvider) -> Iterator[Any]:
    previous = tracing._tracer
    tracing._tracer = provider.get_tracer("wasteaudit")
    try:
        yield tracing._tracer
    finally:
        tracing._tracer = previous


@pytest.mark.parametrize("ids", [CountingIds, RandomCountingIds])
@pytest.mark.parametrize("parent_name", list(PARENTS))
@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
def test_the_start_decision_is_the_sdks_own(sampler_name: str, parent_name: str, ids: type) -> None:
    ours = TracerProvider(sampler=SAMPLERS[sampler_name](), id_generator=ids())
    sdk = TracerProvider(sampler=SAMPLERS[sampler_name](), id_generator=ids())
    parent = PARENTS[parent_name]
    ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else context.Context()
    token = context.attach(ctx)
    try:
        expected = sdk.get_tracer("sdk").start_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=ATTRS, start_time=1_000)
        with wasteaudit_tracer(ours):
            placeholder, pending = tracing.start_call_span_deferred("chat gpt-4o-mini", dict(ATTRS), 1_000, None)
            made = pending.open() if pending is not None else None
    finally:
        context.detach(token)
    want = expected.get_span_context()
    got = placeholder.get_span_context()
    assert (got.trace_id, got.span_id, got.trace_flags, got.trace_state, got.is_remote) == (want.trace_id, want.span_id, want.trace_flags, want.trace_state, want.is_remote)
    assert placeholder.is_recording() is False
    assert (pending is not None) == expected.is_recording()
    if made is not None:
        assert made.get_span_context() == want
        assert made.parent == expected.parent
        assert dict(made.attributes) == dict(expected.attributes)
        assert made.start_time == expected.start_time == 1_000
        assert made.kind is SpanKind.CLIENT


def test_a_non_sdk_tracer_starts_the_span_at_once() -> None:
    class Foreign(trace.NoOpTracer):
        pass

    previous = tracing._tracer
    tracing._tracer = Foreign()
    try:
        span, pending = tracing.start_call_span_deferred("chat m", dict(ATTRS), 1_000, None)
    finally:
        tracing._tracer = previous
    assert pending is None and not span.is_recording()


class StartNoting(SpanProcessor):
    """Notes each on_start: the thread, the span's start time and the baggage it was given."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int | None, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.starts.append((threading.current_thread().name, span.start_time, baggage.get_baggage("tenant", parent_context)))

    def on_end(self, span: Any) -> None:
        pass


@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, StartNoting, TaggingSampler]]:
    sampler = TaggingSampler()
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    noting = StartNoting()
    provider.add_span_processor(noting)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with wasteaudit_tracer(provider):
        yield exporter, noting, sampler
    provider.shutdown()


def test_the_exported_span_is_the_one_decided_at_the_start(oai, llm_server, records, traced) -> None:
    exporter, noting, sampler = traced
    hook_parents: list[SpanContext] = []
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi!", prompt_tokens=7, completion_tokens=2)))
    client = oai()
    starts_during_call: list[int] = []

    def hook(request: Any) -> None:
        hook_parents.append(trace.get_current_span().get_span_context())
        starts_during_call.append(len(noting.starts))

    client._client.event_hooks["request"].append(hook)

    @wasteaudit.audit(name="greet")
    def greet() -> str:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content or ""
        finally:
            context.detach(token)

    assert greet() == "Hi!"
    record = only_call(records)
    wasteaudit.flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, run = spans["chat gpt-4o-mini"], spans["audit greet"]
    ctx = call.get_span_context()
    # what the world saw during the call is the exported span
    assert hook_parents and (hook_parents[0].trace_id, hook_parents[0].span_id) == (ctx.trace_id, ctx.span_id)
    assert (record.trace_id, record.span_id) == (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    assert call.parent is not None and call.parent.span_id == run.get_span_context().span_id
    assert call.start_time == int(record.started_at * 1e9) and call.end_time == int(record.ended_at * 1e9)
    assert call.attributes["sampler.kept"] is True and call.attributes["gen_ai.usage.output_tokens"] == 2
    assert call.get_span_context().trace_state.get("wa") == "1"
    # the sampler was asked once per span (run and call), never again when the call's span opened
    assert sampler.calls == 2
    # processors see the call's on_start once it has ended (only the run's had run during the
    # call), with the call's own start time and the app's baggage
    assert starts_during_call == [1]
    call_start = [s[1:] for s in noting.starts if s[1] == call.start_time]
    assert call_start == [(call.start_time, "acme")]


def test_a_sampled_out_call_is_recorded_without_a_span(oai, llm_server, records, traced) -> None:
    exporter, noting, sampler = traced
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi!", model="gpt-4o", prompt_tokens=7, completion_tokens=2)))
    oai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    record = only_call(records)
    wasteaudit.flush()
    assert record.output_tokens == 2 and record.trace_id is not None
    assert exporter.get_finished_spans() == () and noting.starts == [] and sampler.calls == 1


def test_finishing_on_the_calling_thread_starts_the_span_with_the_call(oai, llm_server, records, traced) -> None:
    exporter, noting, _ = traced
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi!", prompt_tokens=7, completion_tokens=2)))
    previous = config.get_settings()
    config.set_settings(config.replace(previous, finish_in_background=False))
    try:
        seen_during_call: list[int] = []
        client = oai()
        client._client.event_hooks["request"].append(lambda request: seen_during_call.append(len(noting.starts)))
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        config.set_settings(previous)
    assert seen_during_call == [1]  # the span had started (on_start ran) before the request went out
    assert noting.starts[0][0] == threading.current_thread().name
    assert len(exporter.get_finished_spans()) == 1


def test_a_tracer_made_before_the_app_set_its_provider_defers_once_the_provider_is_there() -> None:
    """wasteaudit's tracer may be a proxy (made before the app set its provider): it defers
    through the SDK tracer the proxy resolves to, and starts spans at once until then."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    proxy = trace.ProxyTracer("wasteaudit")
    previous = tracing._tracer
    tracing._tracer = proxy
    try:
        before, pending_before = tracing.start_call_span_deferred("chat m", dict(ATTRS), 1_000, None)
        proxy._real_tracer = provider.get_tracer("wasteaudit")  # what the proxy does once a provider is set
        placeholder, pending = tracing.start_call_span_deferred("chat m", dict(ATTRS), 2_000, None)
        assert pending is not None
        made = pending.open()
        made.end(end_time=3_000)
    finally:
        tracing._tracer = previous
    assert pending_before is None and not before.is_recording()
    [span] = exporter.get_finished_spans()
    assert span.get_span_context() == placeholder.get_span_context() and (span.start_time, span.end_time) == (2_000, 3_000)
