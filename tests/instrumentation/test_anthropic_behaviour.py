"""Outcomes that matter for waste scoring, retries, stream lifecycles and the instrumentation's
own lifecycle (middleware idempotence, undo, disabled mode, runs)."""

from __future__ import annotations

import gc
import warnings

import anthropic
import pytest

import wasteaudit
from anthropic_support import *  # noqa: F403 - fixtures (shared server)
from anthropic_support import (
    KW,
    RICH_INPUT_TOTAL,
    async_client,
    error_observation,
    instrumented,
    rich_message,
    sync_client,
)
from wasteaudit import config
from wasteaudit.instrumentation import instrument_anthropic
from wasteaudit.localllm import Reply
from wasteaudit.localllm import anthropic_bodies as ab


def _drain(stream) -> list:
    return [event.type for event in stream]


# -- stop reasons -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_reason", ["max_tokens", "model_context_window_exceeded"])
@pytest.mark.parametrize("streamed", [False, True])
def test_truncated_output_is_category_length(records, llm_server, stop_reason, streamed):
    msg = ab.message("The answer is a long story that was cut", stop_reason=stop_reason, usage=ab.usage(20, 64))
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_stream(msg) if streamed else ab.reply_message(msg))
        if streamed:
            _drain(client.messages.create(**KW, stream=True))
        else:
            client.messages.create(**KW)
    call = records.calls[0]
    assert call.finish_reasons == [stop_reason]
    assert call.finish_category == "length"
    assert call.output_tokens == 64 and call.usage_source == "provider"
    assert call.choices[0].text == "The answer is a long story that was cut"


@pytest.mark.parametrize("streamed", [False, True])
def test_refusal(records, llm_server, streamed):
    msg = ab.refusal_message(input_tokens=97, output_tokens=0, explanation="This request could enable harm.")
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_stream(msg) if streamed else ab.reply_message(msg))
        if streamed:
            with client.messages.stream(**KW) as stream:
                final = stream.get_final_message()
            assert final.stop_reason == "refusal"
        else:
            client.messages.create(**KW)
    call = records.calls[0]
    assert call.finish_reasons == ["refusal"] and call.finish_category == "refusal"
    assert call.output_tokens == 0 and call.input_tokens == 97
    assert call.choices[0].refusal == "This request could enable harm."
    assert call.choices[0].text is None


def test_stop_sequence_and_request_params(records, llm_server):
    msg = ab.message("one two", stop_reason="stop_sequence", stop_sequence="three", usage=ab.usage(9, 3))
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_message(msg))
        client.messages.create(
            **KW,
            stop_sequences=["three"],
            system=[{"type": "text", "text": "Count.", "cache_control": {"type": "ephemeral"}}],
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[{"name": "calc", "description": "math", "input_schema": {"type": "object"}}],
            tool_choice={"type": "auto"},
            output_config={"effort": "low", "format": {"type": "json_schema", "schema": {"type": "object"}}},
            service_tier="auto",
            extra_body={"temperature": 0.7, "top_p": 0.9},
        )
    call = records.calls[0]
    assert call.finish_reasons == ["stop_sequence"] and call.finish_category == "stop"
    assert call.request_params == {
        "max_tokens": 256,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["three"],
        "thinking_type": "enabled",
        "thinking_budget_tokens": 1024,
        "effort": "low",
        "service_tier": "auto",
        "tool_choice": "auto",
    }
    assert call.system_instructions == [{"type": "text", "text": "Count.", "cache_control": {"type": "ephemeral"}}]
    assert call.tool_definitions[0]["name"] == "calc"
    assert call.response_format == {"type": "json_schema", "schema": {"type": "object"}}
    assert call.output_type == "json"


# -- usage ------------------------------------------------------------------------------------


def test_stream_usage_is_overlaid_never_summed(records, llm_server):
    """message_delta repeats cumulative counts (newer API: input/cache too); the last one wins."""
    msg = ab.message("hi", usage=ab.usage(2081, 574, cache_read=28247, cache_creation=7621, web_search_requests=3))
    events = ab.stream_events(msg, delta_input_usage=True)
    # an intermediate message_delta with a smaller cumulative count, as long server-tool turns send
    early = ab.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None}, "usage": {"output_tokens": 100}})
    events.insert(len(events) - 2, early)
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(Reply(sse=events))
        _drain(client.messages.create(**KW, stream=True))
    call = records.calls[0]
    assert call.output_tokens == 574  # the last cumulative value, not 100 + 574
    assert call.input_tokens == 2081 + 28247 + 7621
    assert call.input_cache_read_tokens == 28247 and call.input_cache_write_tokens == 7621
    assert call.usage_details["server_tool_use"] == {"web_search_requests": 3, "web_fetch_requests": 0}


def test_a_later_message_delta_without_usage_keeps_the_count(records, llm_server):
    events = ab.stream_events(ab.message("hi", usage=ab.usage(4, 20)))
    events.insert(len(events) - 1, 'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}')
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(Reply(sse=events))
        _drain(client.messages.create(**KW, stream=True))
    call = records.calls[0]
    assert call.output_tokens == 20 and call.usage_source == "provider" and call.gaps == []


def test_redacted_thinking_and_server_tools(records, llm_server):
    msg = ab.message(
        [ab.redacted_thinking_block(), ab.server_tool_use_block("web_search", {"query": "news"}, id="srv_1"), ab.text_block("Done.")],
        usage=ab.usage(10, 30, thinking_tokens=25, web_search_requests=1),
    )
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_stream(msg))
        with client.messages.stream(**KW) as stream:
            stream.until_done()
    call = records.calls[0]
    choice = call.choices[0]
    assert choice.reasoning_text is None  # redacted: no text to keep
    assert call.output_reasoning_tokens == 25
    assert choice.tool_calls == [{"id": "srv_1", "name": "web_search", "arguments": '{"query":"news"}', "type": "server_tool_use"}]
    assert choice.text == "Done."


def test_old_usage_without_cache_fields_keeps_them_null(records, llm_server):
    msg = ab.message("ok", usage=ab.usage(7, 2, cache_read=None, cache_creation=None, service_tier=None))
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_message(msg))
        client.messages.create(**KW)
    call = records.calls[0]
    assert call.input_tokens == 7 and call.output_tokens == 2
    assert call.input_cache_read_tokens is None and call.input_cache_write_tokens is None
    assert call.output_reasoning_tokens is None and call.service_tier is None and call.usage_details is None


# -- retries and attempts ---------------------------------------------------------------------


@pytest.mark.parametrize(("first", "status", "kind"), [(ab.reply_overloaded, 529, "overloaded_error"), (ab.reply_rate_limited, 429, "rate_limit_error")])
async def test_retry_then_success_is_one_call_two_attempts(records, llm_server, first, status, kind):
    with instrumented():
        client = async_client(llm_server)
        llm_server.enqueue(first(), ab.reply_message(rich_message()))
        await client.messages.create(**KW)
    assert len(records.calls) == 1
    call = records.calls[0]
    assert [(a.index, a.status_code, a.error_type) for a in call.attempts] == [(0, status, kind), (1, 200, None)]
    assert call.attempts[1].request_id and all(a.duration_s is not None for a in call.attempts)
    assert call.output_tokens == 50 and call.error_type is None and call.status_code == 200


def test_retries_exhausted(records, llm_server):
    with instrumented():
        client = sync_client(llm_server, max_retries=2)
        llm_server.enqueue(ab.reply_overloaded(), ab.reply_overloaded(), ab.reply_overloaded())
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.messages.create(**KW)
    assert caught.value.status_code == 529
    call = records.calls[0]
    assert [a.status_code for a in call.attempts] == [529, 529, 529]
    assert call.error_type == "overloaded_error" and call.status_code == 529 and call.finish_category == "error"


def test_timeouts_are_failed_attempts(records, llm_server):
    with instrumented():
        client = sync_client(llm_server, max_retries=1, timeout=0.05)
        llm_server.enqueue(Reply(json=ab.message(), delay_s=0.3), Reply(json=ab.message(), delay_s=0.3))
        with pytest.raises(anthropic.APITimeoutError):
            client.messages.create(**KW)
    call = records.calls[0]
    assert [a.error_type for a in call.attempts] == ["APITimeoutError", "APITimeoutError"]
    assert [a.status_code for a in call.attempts] == [None, None]
    assert call.error_type == "APITimeoutError"


# -- stream lifecycle -------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_cut_stream_raises_the_same_and_records_an_error(records, llm_server, flavour):
    msg = rich_message()

    async def run():
        llm_server.enqueue(ab.reply_stream(msg, cut_after=7))
        try:
            if flavour == "sync":
                return ("events", _drain(sync_client(llm_server).messages.create(**KW, stream=True)))
            stream = await async_client(llm_server).messages.create(**KW, stream=True)
            return ("events", [e.type async for e in stream])
        except Exception as exc:
            return error_observation(exc)[:3]

    bare = await run()
    with instrumented():
        seen = await run()
    assert seen == bare and seen[0] == "error"
    call = records.calls[0]
    assert call.stream_state == "error"
    assert call.error_type == bare[1].__name__
    assert call.finish_reasons == [None] and call.finish_category == "error"
    assert call.input_tokens == RICH_INPUT_TOTAL and call.output_tokens is None


def test_body_ending_without_message_stop_is_an_error_state(records, llm_server):
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_stream(rich_message(), end=False))
        events = _drain(client.messages.create(**KW, stream=True))
    assert "message_stop" not in events
    call = records.calls[0]
    assert call.stream_state == "error" and call.error_type is None
    assert call.finish_reasons == [None]
    assert any("message_stop" in gap for gap in call.gaps)


def test_stream_dropped_without_close_is_finalized_by_gc(records, llm_server):
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_stream(rich_message()))
        stream = client.messages.create(**KW, stream=True)
        for _event in stream:
            break
        assert records.calls == []
        del stream, _event
        gc.collect()
    assert len(records.calls) == 1
    assert records.calls[0].stream_state == "abandoned"


def test_stream_finalizes_exactly_once(records, llm_server):
    with instrumented():
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_stream(rich_message()))
        with client.messages.create(**KW, stream=True) as stream:
            _drain(stream)
            stream.close()
        stream.close()
        gc.collect()
    assert len(records.calls) == 1 and records.calls[0].stream_state == "completed"


async def test_async_helper_early_exit_and_aclose(records, llm_server):
    with instrumented():
        client = async_client(llm_server)
        llm_server.enqueue(ab.reply_stream(rich_message()), ab.reply_stream(rich_message()))
        async with client.messages.stream(**KW) as stream:
            async for _text in stream.text_stream:
                break
        raw = await client.messages.create(**KW, stream=True)
        await raw.__anext__()
        await raw.close()
    assert [c.stream_state for c in records.calls] == ["abandoned", "abandoned"]
    assert [c.method for c in records.calls] == ["stream", "create"]


# -- runs, lifecycle of the instrumentation -----------------------------------------------------


def test_calls_belong_to_their_audit_run(records, llm_server):
    @wasteaudit.audit(name="answer")
    def answer() -> str:
        client = sync_client(llm_server)
        llm_server.enqueue(ab.reply_message(ab.message("four")), ab.reply_stream(ab.message("five")))
        first = client.messages.create(**KW).content[0].text
        with client.messages.stream(**KW) as stream:
            second = stream.get_final_text()
        return first + second

    with instrumented():
        assert answer() == "fourfive"
    run = records.runs[0]
    assert [c.run_id for c in records.calls] == [run.id, run.id]
    assert {c.function for c in records.calls} == {"answer"}


def test_middleware_is_innermost_once_and_survives_copies(records, llm_server):
    seen_by_user = []

    class UserMiddleware(anthropic.Middleware):
        def handle(self, request, call_next):
            response = call_next(request)
            seen_by_user.append(response.status_code)
            return response

    with instrumented():
        user = UserMiddleware()
        client = sync_client(llm_server, middleware=[user])
        assert len(client.middleware) == 2 and client.middleware[0] is user
        ours = client.middleware[-1]
        copies = [client.copy(), client.with_options(timeout=5), client.with_middleware(UserMiddleware())]
        for copy in copies:
            assert sum(1 for m in copy.middleware if m is ours) == 1 and copy.middleware[-1] is ours
        assert client.with_options(middleware=[user]).middleware == (user, ours)
        llm_server.enqueue(ab.reply_overloaded(), ab.reply_message(rich_message()))
        copies[2].messages.create(**KW)
    assert seen_by_user == [529, 529, 200, 200]  # two user middlewares (inner first), each sees both attempts
    assert [a.status_code for a in records.calls[0].attempts] == [529, 200]  # ours counts each once


def test_middleware_given_as_iterator_is_left_alone(records, llm_server):
    with instrumented():
        client = sync_client(llm_server, middleware=iter([]))
        assert client.middleware == ()
        llm_server.enqueue(ab.reply_message())
        client.messages.create(**KW)
    assert records.calls[0].attempts == [] and records.calls[0].output_tokens == 8


def test_undo_restores_everything_and_instrument_is_idempotent(records, llm_server):
    from anthropic._base_client import SyncAPIClient
    from anthropic.lib.streaming import MessageStream, MessageStreamManager
    from anthropic.resources.messages import AsyncMessages, Messages

    originals = [vars(Messages)["create"], vars(AsyncMessages)["parse"], vars(SyncAPIClient)["__init__"], vars(MessageStreamManager)["__enter__"], vars(MessageStream)["__init__"]]
    first = instrument_anthropic()
    assert instrument_anthropic() is first
    assert vars(Messages)["create"] is not originals[0]
    first.undo()
    assert [vars(Messages)["create"], vars(AsyncMessages)["parse"], vars(SyncAPIClient)["__init__"], vars(MessageStreamManager)["__enter__"], vars(MessageStream)["__init__"]] == originals
    client = sync_client(llm_server)
    assert client.middleware == ()
    llm_server.enqueue(ab.reply_message())
    client.messages.create(**KW)
    assert records.calls == []


def test_disabled_records_nothing_and_changes_nothing(records, llm_server):
    previous = config.get_settings()
    config.set_settings(config.replace(previous, enabled=False))
    try:
        with instrumented():
            client = sync_client(llm_server)
            llm_server.enqueue(ab.reply_message(rich_message()), ab.reply_stream(rich_message()))
            assert client.messages.create(**KW).usage.output_tokens == 50
            with client.messages.stream(**KW) as stream:
                assert stream.get_final_message().usage.output_tokens == 50
    finally:
        config.set_settings(previous)
    assert records.calls == []


@pytest.mark.parametrize("entry", ["create", "stream", "async_create", "parse"])
async def test_sdk_warnings_reach_the_app(records, llm_server, entry):
    """The SDK warns about retired models; the warning still reaches the app, with the same text.

    ``create`` (sync) and the ``stream()`` helper keep the exact frame the SDK points at. For
    ``parse`` and async ``create`` our wrapper's frame shifts the SDK's ``stacklevel`` by one
    (the warning names the app's line rather than its caller's)."""

    async def run():
        client = sync_client(llm_server)
        aclient = async_client(llm_server)
        llm_server.enqueue(ab.reply_stream() if entry == "stream" else ab.reply_message())
        args = {**KW, "model": "claude-sonnet-4-5"}  # in the SDK's DEPRECATED_MODELS
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if entry == "create":
                client.messages.create(**args)
            elif entry == "stream":
                with client.messages.stream(**args) as stream:
                    stream.until_done()
            elif entry == "async_create":
                await aclient.messages.create(**args)
            else:
                client.messages.parse(**args)
        return [(w.category, str(w.message), w.filename, w.lineno) for w in caught if w.category is not ResourceWarning]

    results = []
    for instrument_it in (False, True):  # one call site, so "the caller's line" is the same line
        handle = instrument_anthropic() if instrument_it else None
        try:
            results.append(await run())
        finally:
            if handle is not None:
                handle.undo()
    bare, seen = results
    if not bare:
        pytest.skip("this anthropic release does not warn about retired models")
    assert [w[:2] for w in seen] == [w[:2] for w in bare]
    if entry in ("create", "stream"):
        assert seen == bare
    assert all("wasteaudit/instrumentation" not in w[2] for w in seen)


def test_openai_call_inside_an_anthropic_middleware_is_its_own_record(records, llm_server):
    """A fallback middleware that asks OpenAI while an Anthropic call is running: two records."""
    import openai

    from wasteaudit.instrumentation import instrument_openai
    from wasteaudit.localllm import openai_bodies as ob

    class FallbackToOpenAI(anthropic.Middleware):
        def handle(self, request, call_next):
            response = call_next(request)
            if response.status_code == 529:
                llm_server.enqueue(Reply(json=ob.chat_completion("from openai")))
                oai = openai.OpenAI(api_key="sk-test", base_url=llm_server.openai_base_url, max_retries=0)
                answer = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                assert answer.choices[0].message.content == "from openai"
                llm_server.enqueue(ab.reply_message(rich_message()))  # for the SDK's retry
            return response

    openai_handle = instrument_openai()
    try:
        with instrumented():
            client = sync_client(llm_server, middleware=[FallbackToOpenAI()])
            llm_server.enqueue(ab.reply_overloaded())
            assert client.messages.create(**KW).usage.output_tokens == 50
    finally:
        openai_handle.undo()
    providers = sorted(c.provider for c in records.calls)
    assert providers == ["anthropic", "openai"]
    anthropic_call = next(c for c in records.calls if c.provider == "anthropic")
    assert [a.status_code for a in anthropic_call.attempts] == [529, 200]


@pytest.mark.parametrize("how", ["streaming_response", "raw_stream"])
def test_raw_bodies_the_app_reads_later_are_left_untouched(records, llm_server, how):
    with instrumented():
        client = sync_client(llm_server)
        if how == "streaming_response":
            llm_server.enqueue(ab.reply_message(rich_message()))
            with client.messages.with_streaming_response.create(**KW) as response:
                assert response.parse().usage.output_tokens == 50
        else:
            llm_server.enqueue(ab.reply_stream(rich_message()))
            response = client.messages.with_raw_response.create(**KW, stream=True)
            assert [e.type for e in response.parse()][-1] == "message_stop"
    call = records.calls[0]
    assert call.status_code == 200 and call.usage_source == "missing" and call.output_tokens is None
    assert any("raw response" in gap for gap in call.gaps)
    assert [a.status_code for a in call.attempts] == [200]
