"""Spans: the SDK's own ``anthropic.messages.create`` span is enriched (never a second span) when
its tracing records one; otherwise wasteaudit emits its own ``chat {model}`` span."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from anthropic_support import *  # noqa: F403 - fixtures (shared server)
from anthropic_support import KW, MODEL, RICH_INPUT_TOTAL, SDK_TRACES, async_client, instrumented, needs_sdk_tracing, rich_message, sync_client
from wasteaudit.localllm import Reply
from wasteaudit.localllm import anthropic_bodies as ab

SDK_SPAN = "anthropic.messages.create"
OUR_SPAN = f"chat {MODEL}"


def _sdk_traced(server, spans, *, flavour="sync", **options):
    factory = sync_client if flavour == "sync" else async_client
    return factory(server, open_telemetry={"tracer_provider": spans.provider}, **options)


def _only_span(spans):
    finished = spans.spans
    assert len(finished) == 1, [s.name for s in finished]
    return finished[0]


def _assert_enriched(span, call, *, finish_reasons=("tool_use",), category="tool"):
    attrs = dict(span.attributes)
    assert span.name == SDK_SPAN
    assert span.instrumentation_scope.name.startswith("com.anthropic.sdk")
    # the SDK's own attributes survive untouched ...
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["anthropic.message.stop_reason"] == finish_reasons[0]
    assert attrs["gen_ai.usage.input_tokens"] == RICH_INPUT_TOTAL  # includes cache reads and writes
    assert attrs["gen_ai.usage.output_tokens"] == 50
    # ... and ours are added
    assert attrs["gen_ai.response.finish_reasons"] == finish_reasons
    assert attrs["wasteaudit.call.id"] == call.id
    assert attrs["wasteaudit.usage_source"] == "provider"
    assert attrs["wasteaudit.finish.category"] == category
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 20
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 20
    assert attrs["wasteaudit.attempts"] == len(call.attempts)
    ctx = span.get_span_context()
    assert call.trace_id == format(ctx.trace_id, "032x") and call.span_id == format(ctx.span_id, "016x")
    return attrs


@needs_sdk_tracing
def test_sdk_span_is_enriched_not_duplicated(records, llm_server, spans):
    with instrumented():
        client = _sdk_traced(llm_server, spans)
        llm_server.enqueue(ab.reply_message(rich_message()))
        client.messages.create(**KW, extra_body={"temperature": 0.2, "top_k": 5}, stop_sequences=["END"])
    span = _only_span(spans)
    call = records.calls[0]
    attrs = _assert_enriched(span, call)
    assert span.status.status_code == StatusCode.OK
    # request parameters the SDK does not record
    assert attrs["gen_ai.request.temperature"] == 0.2 and attrs["gen_ai.request.top_k"] == 5
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert call.request_params["temperature"] == 0.2 and call.request_params["stop"] == ["END"]


@needs_sdk_tracing
def test_sdk_span_with_retries_counts_attempts(records, llm_server, spans):
    with instrumented():
        client = _sdk_traced(llm_server, spans)
        llm_server.enqueue(ab.reply_overloaded(), ab.reply_message(rich_message()))
        client.messages.create(**KW)
    span = _only_span(spans)
    call = records.calls[0]
    attrs = _assert_enriched(span, call)
    assert attrs["wasteaudit.attempts"] == 2
    assert attrs["wasteaudit.attempts.failed_statuses"] == (529,)
    assert attrs["http.request.resend_count"] == 1


@needs_sdk_tracing
@pytest.mark.parametrize("how", ["create", "helper"])
def test_sdk_span_enriched_while_stream_flows(records, llm_server, spans, how):
    with instrumented():
        client = _sdk_traced(llm_server, spans)
        llm_server.enqueue(ab.reply_stream(rich_message()))
        if how == "create":
            for _ in client.messages.create(**KW, stream=True):
                pass
        else:
            with client.messages.stream(**KW) as stream:
                stream.until_done()
    span = _only_span(spans)
    call = records.calls[0]
    attrs = _assert_enriched(span, call)
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["wasteaudit.stream.state"] == "completed"
    assert call.stream_state == "completed"


@needs_sdk_tracing
@pytest.mark.parametrize("how", ["create", "helper"])
def test_sdk_span_of_abandoned_stream(records, llm_server, spans, how):
    with instrumented():
        client = _sdk_traced(llm_server, spans)
        llm_server.enqueue(ab.reply_stream(rich_message()))
        if how == "create":
            with client.messages.create(**KW, stream=True) as stream:
                next(iter(stream))
        else:
            with client.messages.stream(**KW) as stream:
                next(iter(stream.text_stream))
    span = _only_span(spans)
    attrs = dict(span.attributes)
    call = records.calls[0]
    assert span.name == SDK_SPAN
    assert attrs["wasteaudit.call.id"] == call.id
    assert attrs["wasteaudit.stream.state"] == "abandoned" == call.stream_state
    assert attrs["gen_ai.response.finish_reasons"] == ("error",)
    assert attrs["wasteaudit.usage_source"] == "missing"
    assert "gen_ai.usage.output_tokens" not in attrs


@needs_sdk_tracing
async def test_sdk_span_async_create_and_stream(records, llm_server, spans):
    with instrumented():
        client = _sdk_traced(llm_server, spans, flavour="async")
        llm_server.enqueue(ab.reply_message(rich_message()), ab.reply_stream(rich_message()))
        await client.messages.create(**KW)
        async with client.messages.stream(**KW) as stream:
            await stream.get_final_message()
    finished = spans.spans
    assert [s.name for s in finished] == [SDK_SPAN, SDK_SPAN]
    for span, call in zip(finished, records.calls):
        _assert_enriched(span, call)


@needs_sdk_tracing
@pytest.mark.parametrize("how", ["parse", "raw", "beta"])
def test_sdk_span_enriched_for_parse_raw_and_beta(records, llm_server, spans, how):
    with instrumented():
        client = _sdk_traced(llm_server, spans)
        llm_server.enqueue(ab.reply_message(rich_message()))
        if how == "parse":
            client.messages.parse(**KW)
        elif how == "raw":
            client.messages.with_raw_response.create(**KW).parse()
        else:
            client.beta.messages.create(**KW)
    _assert_enriched(_only_span(spans), records.calls[0])


@needs_sdk_tracing
def test_sdk_span_error_keeps_sdk_status_and_gets_attempts(records, llm_server, spans):
    import anthropic

    with instrumented():
        client = _sdk_traced(llm_server, spans)
        llm_server.enqueue(ab.reply_invalid_request())
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(**KW)
    span = _only_span(spans)
    attrs = dict(span.attributes)
    assert span.status.status_code == StatusCode.ERROR
    assert attrs["error.type"] == "invalid_request_error"
    assert attrs["wasteaudit.attempts.failed_statuses"] == (400,)
    assert attrs["wasteaudit.call.id"] == records.calls[0].id
    assert records.calls[0].error_type == "invalid_request_error"


@pytest.mark.parametrize("tracing_off", ["option", "env", "no_provider"])
def test_our_span_when_sdk_does_not_trace(records, llm_server, spans, monkeypatch, tracing_off):
    if tracing_off == "option" and not SDK_TRACES:
        pytest.skip("this anthropic release has no open_telemetry option")
    with instrumented():
        if tracing_off == "option":
            client = sync_client(llm_server, open_telemetry=False)
        elif tracing_off == "env":
            monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
            client = sync_client(llm_server)
        else:  # tracing on, but no SDK tracer provider registered anywhere (and the SDK's own http client)
            client = sync_client(llm_server, http_client=None)
        llm_server.enqueue(ab.reply_rate_limited(), ab.reply_message(rich_message()))
        client.messages.create(**KW)
    span = _only_span(spans)
    call = records.calls[0]
    attrs = dict(span.attributes)
    assert span.name == OUR_SPAN
    assert span.kind == trace.SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == MODEL and attrs["gen_ai.request.max_tokens"] == 256
    assert attrs["gen_ai.usage.input_tokens"] == RICH_INPUT_TOTAL
    assert attrs["gen_ai.usage.output_tokens"] == 50
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 30
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 20 == attrs["gen_ai.usage.cache_write.input_tokens"]
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 12
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert attrs["wasteaudit.attempts"] == 2 and attrs["wasteaudit.attempts.failed_statuses"] == (429,)
    assert attrs["wasteaudit.call.id"] == call.id
    assert span.start_time == int(call.started_at * 1e9)
    assert call.span_id == format(span.get_span_context().span_id, "016x")


def test_our_span_for_streams_nests_under_the_app_span(records, llm_server, spans):
    app_tracer = spans.provider.get_tracer("app")
    with instrumented():
        client = sync_client(llm_server)  # SDK tracing on, no provider: decided at the first attempt
        llm_server.enqueue(ab.reply_stream(rich_message()))
        with app_tracer.start_as_current_span("handler") as parent:
            with client.messages.stream(**KW) as stream:
                stream.get_final_message()
    ours = [s for s in spans.spans if s.name == OUR_SPAN]
    assert len(ours) == 1
    span = ours[0]
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    attrs = dict(span.attributes)
    assert attrs["wasteaudit.stream.state"] == "completed"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0


@needs_sdk_tracing
def test_client_built_before_instrumenting_is_recorded_with_our_span(records, llm_server, spans):
    client = sync_client(llm_server, open_telemetry=False)  # no wasteaudit middleware on this one
    with instrumented():
        llm_server.enqueue(ab.reply_overloaded(), ab.reply_message(rich_message()))
        client.messages.create(**KW)
    call = records.calls[0]
    assert call.attempts == []  # retries are invisible without the middleware
    assert any("attempts unknown" in gap for gap in call.gaps)
    assert call.output_tokens == 50 and call.input_tokens == RICH_INPUT_TOTAL
    assert _only_span(spans).name == OUR_SPAN


def test_an_anthropic_stream_records_the_time_between_its_chunks(records, llm_server):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from wasteaudit.export import _state
    from wasteaudit.export.metrics import stop_recording, use_meter_provider

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    use_meter_provider(provider)
    try:
        with instrumented():
            client = sync_client(llm_server)
            llm_server.enqueue(Reply(sse=ab.stream_events(rich_message(), pings=False)))
            with client.messages.create(**KW, stream=True) as stream:
                events = list(stream)
        metrics = {m.name: m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    finally:
        stop_recording()
        provider.shutdown()
        _state.reset_counters()
    (point,) = metrics["gen_ai.client.operation.time_per_output_chunk"].data.data_points
    call = records.calls[-1]
    assert point.count == len(events) - 1 == call.chunks - 1 and point.attributes["gen_ai.provider.name"] == "anthropic"
