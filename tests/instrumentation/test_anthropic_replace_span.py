"""Replace mode (``anthropic_sdk_span="replace"``, the default): for a client whose own tracing is
on, wasteaudit keeps the SDK from making its span and makes it itself. The proof that this loses
nothing: every workload is run twice against the same scripted server, once through the bare SDK
with its tracing on and once instrumented, and the one span of the second run must carry
everything the SDK's span carried (name, kind, scope, status, events, every attribute key and
value; only the request id the server draws afresh and the time to first chunk may differ).

Workloads: {create, parse, beta create, stream=True, messages.stream(), beta stream=True, beta
messages.stream()} x {sync, async} x {ok, retried, HTTP error, and for streams: an error event,
a cut connection, an early close, and a dropped stream}. Early close has no meaning for a call
that returns a whole Message, so those get only the first three.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from anthropic_support import *  # noqa: F403 - fixtures (shared server)
from anthropic_support import KW, async_client, instrumented, needs_sdk_tracing, rich_message, sync_client
from wasteaudit import config
from wasteaudit.localllm import Reply
from wasteaudit.localllm import anthropic_bodies as ab
from wasteaudit.testing import SpanCapture

SDK_SPAN = "anthropic.messages.create"
# values that differ between two runs by nature: the server draws a request id per response, and
# a time to first chunk is a measurement
DRAWN = {"anthropic.request.id", "gen_ai.response.time_to_first_chunk"}

# request options that give the SDK's span as many attributes as it can carry
REQUEST = {
    **KW,
    "thinking": {"type": "enabled", "budget_tokens": 128},
    "service_tier": "auto",
    "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    "extra_headers": {"anthropic-beta": "tools-2024-04-04, fine-grained-tool-streaming-2025-05-14"},
}
BETA_REQUEST = {**{k: v for k, v in REQUEST.items() if k != "extra_headers"}, "betas": ["context-management-2025-06-27"]}

NON_STREAM = ("create", "parse", "beta_create")
STREAMS = ("create_stream", "helper", "beta_stream", "beta_helper")
CASES = [(m, v) for m in NON_STREAM for v in ("ok", "retried", "http_error")] + [
    (m, v) for m in STREAMS for v in ("ok", "retried", "http_error", "error_event", "cut", "early_close")
] + [("create_stream", "dropped")]


def _replies(method: str, variant: str) -> list[Reply]:
    msg = rich_message()
    streaming = method in STREAMS
    ok = ab.reply_stream(msg, headers={"request-id": "req_fixed"}) if streaming else ab.reply_message(msg, headers={"request-id": "req_fixed"})
    if variant == "retried":
        return [ab.reply_overloaded(), ok]
    if variant == "http_error":
        return [ab.reply_invalid_request("messages: text content blocks must be non-empty")]
    if variant == "error_event":
        return [ab.reply_stream(msg, error_after=6, error=("overloaded_error", "Overloaded"))]
    if variant == "cut":
        return [ab.reply_stream(msg, cut_after=5)]
    return [ok]


def _request(method: str) -> tuple[str, dict[str, Any]]:
    beta = method.startswith("beta")
    return ("beta" if beta else "stable"), dict(BETA_REQUEST if beta else REQUEST)


def _drive_sync(client: Any, method: str, variant: str) -> None:
    api, args = _request(method)
    res = client.beta.messages if api == "beta" else client.messages
    try:
        if method in ("create", "beta_create"):
            res.create(**args)
        elif method == "parse":
            res.parse(**args)
        elif method in ("create_stream", "beta_stream"):
            stream = res.create(stream=True, **args)
            if variant == "dropped":
                next(iter(stream))
                next(iter(stream))
                del stream
                gc.collect()
                return
            with stream:
                for n, _ in enumerate(stream):
                    if variant == "early_close" and n == 2:
                        break
        else:
            with res.stream(**args) as stream:
                for n, _ in enumerate(stream):
                    if variant == "early_close" and n == 2:
                        break
    except Exception:
        pass


async def _drive_async(client: Any, method: str, variant: str) -> None:
    api, args = _request(method)
    res = client.beta.messages if api == "beta" else client.messages
    try:
        if method in ("create", "beta_create"):
            await res.create(**args)
        elif method == "parse":
            await res.parse(**args)
        elif method in ("create_stream", "beta_stream"):
            stream = await res.create(stream=True, **args)
            async with stream:
                n = 0
                async for _ in stream:
                    if variant == "early_close" and n == 2:
                        break
                    n += 1
        else:
            async with res.stream(**args) as stream:
                n = 0
                async for _ in stream:
                    if variant == "early_close" and n == 2:
                        break
                    n += 1
    except Exception:
        pass
    finally:
        await client.close()


def _one_span(server: Any, flavour: str, method: str, variant: str) -> Any:
    """Run the workload once on a fresh client whose spans go to a fresh in-memory exporter."""
    captured = SpanCapture()
    server.enqueue(*_replies(method, variant))
    options = {"open_telemetry": {"tracer_provider": captured.provider}, "max_retries": 1}
    if flavour == "sync":
        _drive_sync(sync_client(server, **options), method, variant)
    else:

        async def run() -> None:
            await _drive_async(async_client(server, **options), method, variant)

        asyncio.run(run())
    spans = captured.spans
    captured.provider.shutdown()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def _assert_superset(sdk: Any, ours: Any) -> None:
    assert ours.name == sdk.name == SDK_SPAN
    assert ours.kind == sdk.kind == SpanKind.CLIENT
    assert ours.instrumentation_scope.name == sdk.instrumentation_scope.name
    assert ours.instrumentation_scope.version == sdk.instrumentation_scope.version
    assert (ours.status.status_code, ours.status.description) == (sdk.status.status_code, sdk.status.description)
    ours_events = [(e.name, dict(e.attributes or {})) for e in ours.events]
    for event in sdk.events:
        assert (event.name, dict(event.attributes or {})) in ours_events
    mine = dict(ours.attributes)
    for key, value in dict(sdk.attributes).items():
        assert key in mine, f"{key} missing (SDK: {value!r})"
        if key in DRAWN:
            assert type(mine[key]) is type(value), key
        else:
            assert mine[key] == value, f"{key}: ours {mine[key]!r}, SDK {value!r}"
    assert ours.parent == sdk.parent  # both roots here: no app span around the call
    assert any(k.startswith("wasteaudit.") for k in mine)


@needs_sdk_tracing
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(("method", "variant"), CASES)
def test_replaced_span_carries_everything_the_sdk_span_does(records, llm_server, flavour, method, variant):
    if flavour == "async" and variant == "dropped":
        pytest.skip("an async stream is dropped the same way; its collection runs no I/O")
    config.set_settings(config.replace(config.get_settings(), anthropic_sdk_span="replace"))
    sdk_span = _one_span(llm_server, flavour, method, variant)
    with instrumented():
        our_span = _one_span(llm_server, flavour, method, variant)
    _assert_superset(sdk_span, our_span)
    call = records.calls[-1]
    # made by wasteaudit, not the SDK: it spans the whole call, from the wrapper's start to its end
    assert (our_span.start_time, our_span.end_time) == (int(call.started_at * 1e9), int(call.ended_at * 1e9))
    ctx = our_span.get_span_context()
    assert (call.trace_id, call.span_id) == (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    assert dict(our_span.attributes)["wasteaudit.call.id"] == call.id


@needs_sdk_tracing
def test_statuses_cover_ok_error_and_unset(records, llm_server):
    """The matrix above would pass vacuously if every span were alike: these are the SDK's three outcomes."""
    config.set_settings(config.replace(config.get_settings(), anthropic_sdk_span="replace"))
    with instrumented():
        ok = _one_span(llm_server, "sync", "create", "ok")
        failed = _one_span(llm_server, "sync", "create_stream", "error_event")
        closed = _one_span(llm_server, "sync", "create_stream", "early_close")
    assert ok.status.status_code == StatusCode.OK
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "overloaded_error"
    assert closed.status.status_code == StatusCode.UNSET
    assert ok.attributes["http.request.method"] == "POST" and ok.attributes["gen_ai.request.reasoning.level"] == "high"


def _traced(server: Any, captured: SpanCapture, **options: Any) -> Any:
    return sync_client(server, open_telemetry={"tracer_provider": captured.provider}, **options)


@needs_sdk_tracing
def test_requests_carry_the_trace_context_of_the_replacing_span(records, llm_server):
    config.set_settings(config.replace(config.get_settings(), anthropic_sdk_span="replace"))
    captured = SpanCapture()
    with instrumented():
        llm_server.enqueue(ab.reply_overloaded(), ab.reply_message(rich_message()))
        _traced(llm_server, captured, max_retries=1).messages.create(**KW)
        (span,) = captured.spans
    ctx = span.get_span_context()
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert [r.headers.get("traceparent", "")[:-3] for r in llm_server.requests] == [expected, expected]
    assert span.attributes["http.request.resend_count"] == 1
    assert span.attributes["url.full"].endswith("/v1/messages")


@needs_sdk_tracing
def test_calls_not_captured_keep_the_sdk_span_untouched(records, llm_server):
    """Raw-response calls, content-recording clients and a disabled wasteaudit: the SDK's own span."""
    config.set_settings(config.replace(config.get_settings(), anthropic_sdk_span="replace"))
    captured = SpanCapture()
    with instrumented():
        llm_server.enqueue(ab.reply_message(rich_message()), ab.reply_message(rich_message()))
        _traced(llm_server, captured).messages.with_raw_response.create(**KW).parse()
        sync_client(llm_server, open_telemetry={"tracer_provider": captured.provider, "traces": {"content_mode": "content"}}).messages.create(**KW)
        raw, content = captured.spans
        config.set_settings(config.replace(config.get_settings(), enabled=False))
        llm_server.enqueue(ab.reply_message(rich_message()))
        _traced(llm_server, captured).messages.create(**KW)
        untouched = captured.spans[-1]
    for span in (raw, content):  # enriched: the SDK's span (its own start), with ours added
        call = next(c for c in records.calls if c.span_id == f"{span.get_span_context().span_id:016x}")
        assert span.start_time != int(call.started_at * 1e9)
        assert span.attributes["anthropic.message.stop_reason"] == "tool_use" and "wasteaudit.call.id" in span.attributes
    assert "gen_ai.input.messages" in content.attributes  # the SDK recorded the content itself
    assert untouched.name == SDK_SPAN and not any(k.startswith("wasteaudit.") for k in untouched.attributes)
    assert len(records.calls) == 2


@needs_sdk_tracing
def test_uninstrument_restores_the_sdk_span_functions(records, llm_server):
    import anthropic._base_client as base_client

    before = (base_client.start_api_call_span, base_client.finish_api_call_span)
    with instrumented():
        assert (base_client.start_api_call_span, base_client.finish_api_call_span) != before
    assert (base_client.start_api_call_span, base_client.finish_api_call_span) == before


@needs_sdk_tracing
def test_enrich_mode_keeps_the_sdk_span(records, llm_server):
    config.set_settings(config.replace(config.get_settings(), anthropic_sdk_span="enrich"))
    captured = SpanCapture()
    with instrumented():
        llm_server.enqueue(ab.reply_message(rich_message()))
        _traced(llm_server, captured).messages.create(**KW)
        (span,) = captured.spans
    call = records.calls[0]
    assert span.name == SDK_SPAN and span.start_time != int(call.started_at * 1e9)
    assert span.attributes["wasteaudit.call.id"] == call.id


@needs_sdk_tracing
def test_replacing_span_nests_under_the_audited_run(records, llm_server):
    import wasteaudit
    from wasteaudit.testing import capture_spans

    config.set_settings(config.replace(config.get_settings(), anthropic_sdk_span="replace"))
    with capture_spans() as captured, instrumented():
        client = _traced(llm_server, captured)
        llm_server.enqueue(ab.reply_message(rich_message()))

        @wasteaudit.audit(name="answer")
        def answer() -> None:
            client.messages.create(**KW)

        answer()
        spans = captured.spans
    (call_span,) = [s for s in spans if s.name == SDK_SPAN]
    (run_span,) = [s for s in spans if s.name == "audit answer"]
    assert call_span.parent.span_id == run_span.get_span_context().span_id
    assert call_span.attributes["wasteaudit.run.name"] == "answer"
    assert call_span.attributes["anthropic.message.stop_reason"] == "tool_use"
