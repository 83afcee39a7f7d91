"""Chat and legacy Completions streams: exact usage, invisible injection, early exits, cuts, helpers."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import bare, collect, dump, httpx2, only_call, set_settings

from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "user", "content": "Count to three"}]
PIECES = ["One", ", two", ", three."]


def _stream(client, **kwargs):
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.create(stream=True, **kwargs)


# -- include_usage injection -----------------------------------------------------------------------


def test_injected_usage_is_exact_and_invisible_to_the_app(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES), usage=ob.chat_usage(9, 4, cached_tokens=0))
    with bare():
        expected = dump(list(_stream(oai())))
        assert "stream_options" not in llm_server.requests[-1].json
    assert records.calls == []

    seen = list(_stream(oai()))
    assert llm_server.requests[-1].json["stream_options"] == {"include_usage": True}
    assert dump(seen) == expected  # the app iterates exactly what it would have without us
    assert all(chunk.choices for chunk in seen)  # the chunk.choices[0] pattern keeps working
    call = only_call(records)
    assert call.usage_source == "provider" and (call.input_tokens, call.output_tokens) == (9, 4)
    assert call.stream and call.stream_state == "completed"
    assert call.choices[0].text == "One, two, three." and call.finish_reasons == ["stop"]
    assert call.chunks == len(expected) + 1  # the hidden usage chunk was received
    assert call.time_to_first_chunk_s is not None and call.response_model == "gpt-4o-mini-2024-07-18"
    assert call.gaps == []


def test_user_set_include_usage_is_respected_and_visible(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.chat_chunks(PIECES, include_usage=True, usage=ob.chat_usage(5, 3))))
    seen = list(_stream(oai(), stream_options={"include_usage": True}))
    assert seen[-1].choices == [] and seen[-1].usage.completion_tokens == 3  # the app asked for it: it sees it
    assert llm_server.requests[-1].json["stream_options"] == {"include_usage": True}
    call = only_call(records)
    assert (call.input_tokens, call.output_tokens) == (5, 3)


def test_user_set_stream_options_without_usage_is_respected(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.chat_chunks(PIECES)))
    list(_stream(oai(), stream_options={"include_usage": False}))
    assert llm_server.requests[-1].json["stream_options"] == {"include_usage": False}
    call = only_call(records)
    assert call.usage_source == "missing" and call.input_tokens is None and call.output_tokens is None
    assert "usage missing: the app set stream_options without include_usage" in call.gaps


def test_injection_turned_off_records_missing_with_reason(oai, llm_server, records):
    set_settings(openai_stream_usage=False)
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    list(_stream(oai()))
    assert "stream_options" not in llm_server.requests[-1].json
    call = only_call(records)
    assert call.usage_source == "missing" and call.output_tokens is None  # never a silent 0
    assert any("openai_stream_usage is off" in gap for gap in call.gaps)


def test_host_not_on_allow_list_is_not_injected(oai, llm_server, records):
    set_settings(stream_usage_hosts=("api.openai.com", ".openai.azure.com"))
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    list(_stream(oai()))
    assert "stream_options" not in llm_server.requests[-1].json
    assert any("not on stream_usage_hosts" in gap for gap in only_call(records).gaps)


def test_suffix_entry_on_allow_list(oai, llm_server, records):
    set_settings(stream_usage_hosts=(".0.0.1",))
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    list(_stream(oai()))
    assert llm_server.requests[-1].json["stream_options"] == {"include_usage": True}


def test_host_ignoring_include_usage_gives_missing_not_zero(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.chat_chunks(PIECES)))  # a host that ignores the option
    list(_stream(oai()))
    call = only_call(records)
    assert call.usage_source == "missing" and call.output_tokens is None
    assert "usage missing: include_usage requested but the host sent no usage chunk" in call.gaps


def test_usage_on_a_chunk_with_choices_is_recorded_and_not_hidden(oai, llm_server, records):
    """Some hosts (OpenRouter) put usage on a chunk that still has a choice: the app sees it."""
    events = ob.chat_chunks(PIECES, done=False)
    events.append(events[-1].replace('"finish_reason": "stop"', '"finish_reason": null')[:-1] + ', "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}')
    events.append(ob.DONE)
    llm_server.enqueue(Reply(sse=events))
    seen = list(_stream(oai()))
    assert len(seen) == len(events) - 1 and seen[-1].usage.total_tokens == 5
    call = only_call(records)
    assert call.output_tokens == 2 and call.finish_reasons == ["stop"]  # a later null does not erase "stop"


def test_stream_helper_sees_the_same_accumulated_completion(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES), usage=ob.chat_usage(7, 4))
    with bare():
        with oai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
            bare_events = [e.type for e in stream]
            bare_final = stream.get_final_completion()
    with oai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert events == bare_events
    assert final.model_dump() == bare_final.model_dump()
    assert final.usage is None  # exactly as without instrumentation
    call = only_call(records)
    assert call.method == "stream" and (call.input_tokens, call.output_tokens) == (7, 4)
    assert llm_server.requests[-1].headers["x-stainless-helper-method"] == "chat.completions.stream"


def test_stream_helper_get_final_completion_without_iterating(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES), usage=ob.chat_usage(7, 4))
    with oai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        assert stream.get_final_completion().choices[0].message.content == "One, two, three."
    call = only_call(records)
    assert call.stream_state == "completed" and call.output_tokens == 4


# -- early exits -------------------------------------------------------------------------------------


def test_break_then_close_finishes_once_as_abandoned(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    stream = _stream(oai())
    for chunk in stream:
        if chunk.choices[0].delta.content == "One":
            break
    assert records.calls == []  # still open: nothing to finish yet
    stream.close()
    stream.close()
    call = only_call(records)
    assert call.stream_state == "abandoned" and call.choices[0].text == "One"
    assert call.finish_reasons == [None] and call.finish_category == "error"
    assert call.usage_source == "missing" and "usage missing: stream was closed before the usage chunk" in call.gaps


def test_break_without_close_finishes_on_garbage_collection(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    stream = _stream(oai())
    next(iter(stream))
    next(stream)
    del stream
    collect()
    call = only_call(records)
    assert call.stream_state == "abandoned" and call.choices[0].text == "One"


def test_context_manager_exit_finishes(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    with _stream(oai()) as stream:
        assert type(stream).__name__ == "SyncStreamProxy" and isinstance(stream, openai.Stream)
        next(stream)
    assert only_call(records).stream_state == "abandoned"


def test_all_choices_finished_but_usage_unread(oai, llm_server, records):
    """Breaking on finish_reason leaves only the usage chunk unread: the output is complete."""
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    with _stream(oai()) as stream:
        for chunk in stream:
            if chunk.choices[0].finish_reason:
                break
    call = only_call(records)
    assert call.stream_state == "abandoned" and call.finish_reasons == ["stop"] and call.finish_category == "stop"
    assert call.usage_source == "missing"


def test_helper_early_exit_finishes_at_once(oai, llm_server, records):
    """The helper closes the HTTP response, not the raw stream: our close hook still ends the record."""
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    with oai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        for event in stream:
            if event.type == "content.delta" and event.delta:
                break
        keep_alive = stream  # the helper is still referenced: no GC fallback involved
    call = only_call(records)
    assert call.method == "stream" and call.stream_state == "abandoned" and call.choices[0].text == "One"
    assert keep_alive is stream


def test_helper_close_without_with_block(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    manager = oai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES)
    stream = manager.__enter__()
    next(iter(stream))
    stream.close()
    assert only_call(records).stream_state == "abandoned"


def test_stream_cut_midway_propagates_the_sdk_error(oai, llm_server, records):
    events = ob.chat_chunks(PIECES, include_usage=True)
    llm_server.enqueue(Reply(sse=events, cut_after=3))
    with bare():
        bare_seen = []
        with pytest.raises(Exception) as bare_error:
            for chunk in _stream(oai(), stream_options={"include_usage": True}):
                bare_seen.append(chunk)
    llm_server.enqueue(Reply(sse=events, cut_after=3))
    seen = []
    with pytest.raises(Exception) as error:
        for chunk in _stream(oai(), stream_options={"include_usage": True}):
            seen.append(chunk)
    assert type(error.value) is type(bare_error.value) and str(error.value) == str(bare_error.value)
    assert dump(seen) == dump(bare_seen)
    call = only_call(records)
    assert call.stream_state == "error" and call.error_type == type(error.value).__name__
    assert call.choices[0].text == "One, two" and call.finish_reasons == [None] and call.finish_category == "error"
    assert call.usage_source == "missing" and "usage missing: stream failed before the usage chunk" in call.gaps


# -- n, tools, refusal -------------------------------------------------------------------------------


def test_n3_interleaved_choices(oai, llm_server, records):
    deltas = [["a1", "a2"], ["b1"], ["c1", "c2", "c3"]]
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(deltas, finish_reason=["stop", "length", "stop"]), usage=ob.chat_usage(4, 12))
    list(_stream(oai(), n=3))
    call = only_call(records)
    assert [(c.index, c.text, c.finish_reason) for c in call.choices] == [(0, "a1a2", "stop"), (1, "b1", "length"), (2, "c1c2c3", "stop")]
    assert call.finish_reasons == ["stop", "length", "stop"] and call.output_tokens == 12


def test_abandoned_n3_pads_unstarted_choices(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks([["a"], ["b"], ["c"]]))
    with _stream(oai(), n=3) as stream:
        next(stream)
        next(stream)  # role chunks of choices 0 and 1 only
    call = only_call(records)
    assert [c.index for c in call.choices] == [0, 1, 2] and call.finish_reasons == [None, None, None]


def test_tool_call_deltas(oai, llm_server, records):
    calls = [ob.tool_call("lookup", {"query": "weather in Paris"}, "call_x"), ob.tool_call("lookup", {"query": "Rome"}, "call_y")]
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks([], tool_calls=calls, finish_reason="tool_calls"))
    list(_stream(oai(), tools=[{"type": "function", "function": {"name": "lookup"}}]))
    call = only_call(records)
    assert call.choices[0].tool_calls == [
        {"id": "call_x", "type": "function", "name": "lookup", "arguments": '{"query": "weather in Paris"}'},
        {"id": "call_y", "type": "function", "name": "lookup", "arguments": '{"query": "Rome"}'},
    ]
    assert call.finish_reasons == ["tool_calls"] and call.finish_category == "tool"


def test_refusal_deltas(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks([], refusal=["I can", "'t help."]))
    list(_stream(oai()))
    call = only_call(records)
    assert call.choices[0].refusal == "I can't help." and call.finish_category == "refusal"


def test_stream_span_attributes(oai, llm_server, records, spans):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES), usage=ob.chat_usage(9, 4, cached_tokens=2))
    stream = _stream(oai())
    assert spans.spans == []  # the span stays open while the app iterates
    list(stream)
    attrs = spans.spans[-1].attributes
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 9 and attrs["gen_ai.usage.cache_read.input_tokens"] == 2
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["wasteaudit.stream.state"] == "completed" and attrs["wasteaudit.usage_source"] == "provider"
    assert "gen_ai.response.time_to_first_chunk" in attrs


# -- raw streams -------------------------------------------------------------------------------------


def test_raw_stream_is_untouched_and_not_injected(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    raw = oai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(raw.parse())
    assert "stream_options" not in llm_server.requests[-1].json
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "One, two, three."
    call = only_call(records)
    assert call.usage_source == "missing" and "raw streaming response: body not observed" in call.gaps


def test_with_streaming_response_stream(oai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    with oai().chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert "stream_options" not in llm_server.requests[-1].json
    assert only_call(records).usage_source == "missing"


# -- async -------------------------------------------------------------------------------------------


async def test_async_stream_injected_and_invisible(aoai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES), usage=ob.chat_usage(9, 4))
    with bare():
        expected = dump([c async for c in await _stream(aoai())])
    stream = await _stream(aoai())
    assert type(stream).__name__ == "AsyncStreamProxy"
    seen = dump([c async for c in stream])
    assert seen == expected
    call = only_call(records)
    assert (call.input_tokens, call.output_tokens, call.stream_state) == (9, 4, "completed")


async def test_async_break_and_close(aoai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    stream = await _stream(aoai())
    async for _ in stream:
        break
    await stream.close()
    assert only_call(records).stream_state == "abandoned"


async def test_async_context_manager_and_gc(aoai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    async with await _stream(aoai()) as stream:
        await stream.__anext__()
    assert only_call(records).stream_state == "abandoned"
    stream2 = await _stream(aoai())
    await stream2.__anext__()
    del stream2
    collect()
    assert [c.stream_state for c in records.calls] == ["abandoned", "abandoned"]


async def test_async_stream_helper(aoai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES), usage=ob.chat_usage(7, 4))
    async with aoai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "One, two, three." and final.usage is None
    call = only_call(records)
    assert call.method == "stream" and call.output_tokens == 4 and call.stream_state == "completed"


async def test_async_stream_helper_early_exit(aoai, llm_server, records):
    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(PIECES))
    async with aoai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        async for event in stream:
            if event.type == "content.delta":
                break
        keep = stream
    assert only_call(records).stream_state == "abandoned" and keep is stream


async def test_async_stream_cut(aoai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.chat_chunks(PIECES), cut_after=2))
    with pytest.raises((openai.APIConnectionError, httpx2.RemoteProtocolError)):  # older SDKs: the transport's own error
        async for _ in await _stream(aoai()):
            pass
    assert only_call(records).stream_state == "error"


# -- legacy completions streams ----------------------------------------------------------------------


def test_legacy_completion_stream_injected(oai, llm_server, records):
    def handler(request):
        include = (request.json.get("stream_options") or {}).get("include_usage")
        return Reply(sse=ob.completion_chunks(["Hi", " there"], n=2, include_usage=bool(include)))

    llm_server.handler = handler
    with bare():
        expected = dump(list(oai().completions.create(model="gpt-3.5-turbo-instruct", prompt="x", n=2, stream=True)))
    seen = dump(list(oai().completions.create(model="gpt-3.5-turbo-instruct", prompt="x", n=2, stream=True)))
    assert seen == expected
    call = only_call(records)
    assert [c.text for c in call.choices] == ["Hi there", "Hi there"] and call.finish_reasons == ["stop", "stop"]
    assert call.usage_source == "provider" and call.output_tokens == 4


async def test_async_legacy_completion_stream(aoai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.completion_chunks(["a", "b"], include_usage=True)))
    stream = await aoai().completions.create(model="gpt-3.5-turbo-instruct", prompt="x", stream=True, stream_options={"include_usage": True})
    seen = [c async for c in stream]
    assert seen[-1].usage is not None
    call = only_call(records)
    assert call.choices[0].text == "ab" and call.usage_source == "provider"


def test_helper_length_error_after_the_last_chunk(oai, llm_server, records):
    """The helper raises LengthFinishReasonError itself; the raw stream is closed before its usage chunk."""
    import pydantic

    class Answer(pydantic.BaseModel):
        answer: str

    llm_server.handler = ob.honour_include_usage(ob.chat_chunks(['{"answer": "4'], finish_reason="length"))
    with pytest.raises(openai.LengthFinishReasonError):
        with oai().chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer) as stream:
            stream.get_final_completion()
    call = only_call(records)
    assert call.method == "stream" and call.finish_reasons == ["length"] and call.finish_category == "length"
    assert call.choices[0].text == '{"answer": "4' and call.stream_state == "abandoned"
    assert call.output_type == "json"


def test_ids_come_from_the_first_chunk_that_has_them(oai, llm_server, records):
    """Azure starts a stream with a prompt_filter_results chunk whose id and model are empty."""
    import json

    azure_first = {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    events = ["data: " + json.dumps(azure_first), *ob.chat_chunks(PIECES)]
    llm_server.enqueue(Reply(sse=events))
    seen = list(_stream(oai()))
    assert seen[0].choices == []  # not a usage chunk: never hidden
    call = only_call(records)
    assert (call.response_id, call.response_model) == ("chatcmpl-local-stream", "gpt-4o-mini-2024-07-18")
    assert call.choices[0].text == "One, two, three."


def _chunk(delta: dict[str, Any] | None = None, *, index: Any = 0, finish: str | None = None, usage: dict[str, int] | None = None, choices: bool = True, **extra: Any) -> Any:
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", "choices": [], **extra}
    if choices:
        body["choices"] = [{"index": index, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return construct_type(type_=ChatCompletionChunk, value=body)


ODD_SEQUENCES = {
    "plain text": [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}), _chunk({"content": "lo"}), _chunk(finish="stop")],
    "refusal after text": [_chunk({"content": "I"}), _chunk({"content": " can"}), _chunk({"refusal": "No."}), _chunk(finish="stop")],
    "tool call after text": [
        _chunk({"content": "Let me look"}),
        _chunk({"content": " it up"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        _chunk(finish="tool_calls"),
    ],
    "usage on every chunk": [_chunk({"content": "a"}, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}), _chunk({"content": "b"}, usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}), _chunk(finish="stop")],
    "second choice appears": [_chunk({"content": "a"}), _chunk({"content": "b"}, index=1), _chunk({"content": "c"}), _chunk(finish="stop"), _chunk(finish="stop", index=1)],
    "reasoning extra mid-stream": [_chunk({"content": "a"}), _chunk({"content": "b", "reasoning_content": "think"}), _chunk({"content": "c"}), _chunk(finish="stop")],
    "text on the finishing chunk": [_chunk({"content": "a"}), _chunk({"content": "b"}), _chunk({"content": "c"}, finish="length")],
    "usage-only chunk last": [_chunk({"content": "a"}), _chunk({"content": "b"}), _chunk(finish="stop"), _chunk(choices=False, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})],
    "empty and non-string content": [_chunk({"content": "a"}), _chunk({"content": None}), _chunk({"content": ""}), _chunk({"content": "b"}), _chunk(finish="stop")],
}


@pytest.mark.parametrize("name", list(ODD_SEQUENCES))
@pytest.mark.parametrize("hide_usage", [False, True])
def test_the_stream_loop_records_what_on_item_does(name: str, hide_usage: bool) -> None:
    from wasteaudit.instrumentation._calls import CallTracker
    from wasteaudit.instrumentation._openai_streams import ChatStreamObserver

    outcomes = []
    for fast in (True, False):
        tracker = CallTracker(provider="openai", operation="chat", api="chat.completions", method="create", request_model="gpt-4o-mini", stream=True, params={})
        observer = ChatStreamObserver(tracker, hide_usage=hide_usage, legacy=False, expected=1, usage_gap="usage missing")
        if fast:  # the observer's own loop, as a ``for`` loop over the stream runs it
            source = iter(ODD_SEQUENCES[name])
            passed = list(observer.items(source.__next__, lambda error, exhausted: None))
            shown = [any(chunk is p for p in passed) for chunk in ODD_SEQUENCES[name]]
        else:
            shown = [observer.on_item(chunk) for chunk in ODD_SEQUENCES[name]]
        refused = observer._assemble("completed")
        record = tracker.record
        outcomes.append((shown, refused, observer.count, observer.hidden, [(c.index, c.text, c.refusal, c.tool_calls, c.finish_reason, c.reasoning_text) for c in record.choices], record.finish_reasons, record.output_tokens, record.usage_source, record.response_id))
        tracker._done = True  # not handed to any sink
    assert outcomes[0] == outcomes[1]
