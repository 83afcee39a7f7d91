"""Responses API: create / parse / stream, sync and async, through the real SDK."""

from __future__ import annotations

import openai
import pydantic
import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import httpx2, only_call

from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

INPUT = [{"role": "user", "content": "Write a haiku"}]


def test_create_records_text_usage_and_request(oai, llm_server, records, spans):
    usage = ob.responses_usage(1200, 80, cached_tokens=1024, reasoning_tokens=32, cache_write_tokens=100, ttl_30m_tokens=60, ttl_12h_tokens=40)
    llm_server.enqueue(Reply(json=ob.response("Petals fall", usage=usage, service_tier="priority")))
    app_input = list(INPUT)
    result = oai().responses.create(
        model="gpt-4.1",
        input=app_input,
        instructions="You are a poet.",
        max_output_tokens=100,
        temperature=0.7,
        reasoning={"effort": "medium"},
        text={"format": {"type": "json_object"}},
    )
    app_input.append({"role": "assistant", "content": result.output_text})
    assert result.output_text == "Petals fall"
    call = only_call(records)
    assert (call.operation, call.api, call.method) == ("chat", "responses", "create")
    assert call.response_id == "resp_local_1" and call.response_model == "gpt-4.1-2025-04-14"
    assert (call.input_tokens, call.input_cache_read_tokens, call.input_cache_write_tokens) == (1200, 1024, 100)
    assert (call.output_tokens, call.output_reasoning_tokens) == (80, 32)
    assert call.usage_details == {"total_tokens": 1280, "input.cache_write_tokens_details.ttl_30m_tokens": 60, "input.cache_write_tokens_details.ttl_12h_tokens": 40}
    assert call.service_tier == "priority"
    assert call.finish_reasons == ["completed"] and call.finish_category == "stop"
    assert call.choices[0].text == "Petals fall"
    assert call.input_messages == INPUT and call.system_instructions == "You are a poet."
    assert call.request_params == {"max_tokens": 100, "temperature": 0.7, "reasoning_effort": "medium"}
    assert call.output_type == "json"
    attrs = spans.spans[-1].attributes
    assert attrs["gen_ai.usage.input_tokens"] == 1200 and attrs["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 100 and attrs["gen_ai.usage.cache_write.input_tokens"] == 100
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("completed",)


def test_string_input(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response("ok")))
    oai().responses.create(model="gpt-4.1", input="hello")
    assert only_call(records).input_messages == "hello"


def test_incomplete_max_output_tokens(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response("Petals", status="incomplete", incomplete_reason="max_output_tokens", output_tokens=16)))
    oai().responses.create(model="gpt-4.1", input=INPUT, max_output_tokens=16)
    call = only_call(records)
    assert call.finish_reasons == ["max_output_tokens"] and call.finish_category == "length"
    assert call.output_tokens == 16 and call.choices[0].text == "Petals"


def test_incomplete_content_filter(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response("", status="incomplete", incomplete_reason="content_filter")))
    oai().responses.create(model="gpt-4.1", input=INPUT)
    call = only_call(records)
    assert call.finish_reasons == ["content_filter"] and call.finish_category == "filter"


def test_function_calls_and_reasoning(oai, llm_server, records):
    output = [
        ob.reasoning_item(["Need the weather first."]),
        ob.function_call_item("get_weather", {"city": "Oslo"}, call_id="call_9"),
        {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "oslo"}},
    ]
    llm_server.enqueue(Reply(json=ob.response(None, output=output)))
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    oai().responses.create(model="gpt-4.1", input=INPUT, tools=tools)
    call = only_call(records)
    choice = call.choices[0]
    assert choice.tool_calls == [
        {"id": "call_9", "type": "function_call", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"id": "ws_1", "type": "web_search_call", "name": "web_search"},
    ]
    assert choice.reasoning_text == "Need the weather first." and choice.text is None
    assert call.finish_reasons == ["completed"] and call.finish_category == "tool"
    assert call.tool_definitions == tools


def test_refusal_content(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response(None, refusal="I can't assist with that.")))
    oai().responses.create(model="gpt-4.1", input=INPUT)
    call = only_call(records)
    assert call.choices[0].refusal == "I can't assist with that." and call.finish_category == "refusal"


def test_failed_status_is_error_category(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response(None, status="failed", error={"code": "server_error", "message": "boom"}, include_usage=False)))
    oai().responses.create(model="gpt-4.1", input=INPUT)
    call = only_call(records)
    assert call.finish_reasons == ["failed"] and call.finish_category == "error"
    assert call.error_type == "server_error" and call.error_message == "boom"
    assert call.usage_source == "missing"


def test_background_queued_response_notes_the_gap(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response(None, status="queued", include_usage=False)))
    oai().responses.create(model="gpt-4.1", input=INPUT, background=True)
    call = only_call(records)
    assert call.finish_reasons == ["queued"] and call.usage_source == "missing"
    assert any("background response queued" in gap for gap in call.gaps)


class Haiku(pydantic.BaseModel):
    lines: list[str]


def test_parse(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response('{"lines": ["a", "b", "c"]}')))
    result = oai().responses.parse(model="gpt-4.1", input=INPUT, text_format=Haiku)
    assert result.output_parsed == Haiku(lines=["a", "b", "c"])
    call = only_call(records)
    assert call.method == "parse" and call.output_type == "json" and call.response_format == {"type": "json_schema", "name": "Haiku"}


async def test_async_create_and_parse(aoai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response("one")), Reply(json=ob.response('{"lines": []}')))
    client = aoai()
    assert (await client.responses.create(model="gpt-4.1", input="x")).output_text == "one"
    assert (await client.responses.parse(model="gpt-4.1", input="x", text_format=Haiku)).output_parsed == Haiku(lines=[])
    assert [c.method for c in records.calls] == ["create", "parse"]


def test_beta_responses_create_if_present(oai, llm_server, records):
    client = oai()
    beta = getattr(client.beta, "responses", None)
    if beta is None or not hasattr(beta, "create"):
        pytest.skip("this SDK has no beta Responses")
    llm_server.enqueue(Reply(json=ob.response("beta")))
    beta.create(model="gpt-4.1", input="x")
    call = only_call(records)
    assert call.api == "responses" and call.choices[0].text == "beta"
    assert "beta=true" in llm_server.requests[-1].path


def test_raw_response(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.response("raw", output_tokens=1)))
    raw = oai().responses.with_raw_response.create(model="gpt-4.1", input="x")
    assert raw.parse().output_text == "raw"
    assert only_call(records).output_tokens == 1


def test_http_error(oai, llm_server, records):
    llm_server.enqueue(ob.error_reply(400, "model not found", retry_after_ms=None))
    with pytest.raises(openai.BadRequestError):
        oai().responses.create(model="nope", input="x", stream=True)
    call = only_call(records)
    assert call.stream and call.status_code == 400 and call.error_type == "invalid_request_error"


# -- streams -----------------------------------------------------------------------------------------


def _stream(client, **kwargs):
    kwargs.setdefault("model", "gpt-4.1")
    kwargs.setdefault("input", INPUT)
    return client.responses.create(stream=True, **kwargs)


def test_stream_completed(oai, llm_server, records):
    events = ob.response_events(["Pet", "als ", "fall"], usage=ob.responses_usage(30, 3, cached_tokens=16, reasoning_tokens=0))
    llm_server.enqueue(Reply(sse=events))
    seen = list(_stream(oai()))
    assert len(seen) == len(events) and seen[-1].type == "response.completed"
    assert "stream_options" not in llm_server.requests[-1].json  # usage arrives in response.completed anyway
    call = only_call(records)
    assert call.stream_state == "completed" and call.usage_source == "provider"
    assert (call.input_tokens, call.input_cache_read_tokens, call.output_tokens) == (30, 16, 3)
    assert call.choices[0].text == "Petals fall" and call.finish_reasons == ["completed"]
    assert call.response_id == "resp_local_stream" and call.chunks == len(events)


def test_stream_incomplete(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["Pet"], terminal="incomplete", incomplete_reason="max_output_tokens")))
    list(_stream(oai(), max_output_tokens=1))
    call = only_call(records)
    assert call.finish_reasons == ["max_output_tokens"] and call.finish_category == "length" and call.usage_source == "provider"


def test_stream_failed(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["Pe"], terminal="failed", error={"code": "server_error", "message": "model crashed"})))
    list(_stream(oai()))
    call = only_call(records)
    assert call.finish_reasons == ["failed"] and call.finish_category == "error"
    assert call.error_type == "server_error" and call.usage_source == "provider"
    assert call.stream_state == "completed"  # the stream itself ended normally


def test_stream_function_call_and_refusal(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events([], function_call={"name": "lookup", "arguments": '{"q": "long query text"}', "call_id": "c1"})))
    llm_server.enqueue(Reply(sse=ob.response_events([], refusal=["No", "pe."])))
    client = oai()
    list(_stream(client))
    list(_stream(client))
    tool_call, refusal = records.calls
    assert tool_call.choices[0].tool_calls == [{"id": "c1", "type": "function_call", "name": "lookup", "arguments": '{"q": "long query text"}'}]
    assert tool_call.finish_category == "tool"
    assert refusal.choices[0].refusal == "Nope." and refusal.finish_category == "refusal"


def test_stream_error_event(oai, llm_server, records):
    events = ob.response_events(["a"], terminal="")
    events.append('event: error\ndata: {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": null, "sequence_number": 99}')
    llm_server.enqueue(Reply(sse=events))
    seen = list(_stream(oai()))
    assert seen[-1].type == "error"
    call = only_call(records)
    assert call.error_type == "rate_limit_exceeded" and call.finish_category == "error"


def test_stream_early_break_and_close(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["Pet", "als"])))
    stream = _stream(oai())
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    stream.close()
    call = only_call(records)
    assert call.stream_state == "abandoned" and call.choices[0].text == "Pet"
    assert call.finish_reasons == [None] and call.finish_category == "error" and call.usage_source == "missing"
    assert "usage missing: stream was closed before response.completed" in call.gaps


def test_stream_ends_without_terminal_event(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["a", "b"], terminal="")))
    list(_stream(oai()))
    call = only_call(records)
    assert call.stream_state == "completed" and call.finish_category == "error"
    assert "usage missing: stream ended without response.completed" in call.gaps


def test_stream_cut(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["Pet", "als", " fall"]), cut_after=6))
    # Older SDK releases let the transport's error through mid-stream instead of wrapping it.
    with pytest.raises((openai.APIConnectionError, httpx2.RemoteProtocolError)) as caught:
        list(_stream(oai()))
    call = only_call(records)
    assert call.stream_state == "error" and call.choices[0].text == "Petals" and call.error_type == type(caught.value).__name__


def test_stream_helper_final_response(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["Hel", "lo"], usage=ob.responses_usage(5, 2))))
    with oai().responses.stream(model="gpt-4.1", input=INPUT) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert texts == ["Hel", "lo"] and final.output_text == "Hello" and final.usage.output_tokens == 2
    call = only_call(records)
    assert call.method == "stream" and call.output_tokens == 2 and call.stream_state == "completed"


def test_stream_helper_early_exit(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["Hel", "lo"])))
    with oai().responses.stream(model="gpt-4.1", input=INPUT) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
        keep = stream
    call = only_call(records)
    assert call.stream_state == "abandoned" and call.choices[0].text == "Hel" and keep is stream


def test_stream_helper_parse_format(oai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(['{"lines": ', '["x"]}'])))
    with oai().responses.stream(model="gpt-4.1", input=INPUT, text_format=Haiku) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Haiku(lines=["x"])
    call = only_call(records)
    assert call.method == "stream" and call.output_type == "json"


async def test_async_stream(aoai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["a", "b"], usage=ob.responses_usage(3, 2))))
    stream = await _stream(aoai())
    seen = [e async for e in stream]
    assert seen[-1].type == "response.completed"
    call = only_call(records)
    assert call.output_tokens == 2 and call.choices[0].text == "ab"


async def test_async_stream_early_exit_and_helper(aoai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["a", "b"])), Reply(sse=ob.response_events(["c", "d"], usage=ob.responses_usage(3, 2))))
    client = aoai()
    stream = await _stream(client)
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    await stream.close()
    async with client.responses.stream(model="gpt-4.1", input=INPUT) as helper:
        final = await helper.get_final_response()
    assert final.output_text == "cd"
    abandoned, helper_call = records.calls
    assert abandoned.stream_state == "abandoned" and abandoned.choices[0].text == "a"
    assert helper_call.method == "stream" and helper_call.output_tokens == 2


async def test_async_stream_helper_early_exit(aoai, llm_server, records):
    llm_server.enqueue(Reply(sse=ob.response_events(["a", "b"])))
    async with aoai().responses.stream(model="gpt-4.1", input=INPUT) as helper:
        async for event in helper:
            if event.type == "response.output_text.delta":
                break
        keep = helper
    assert only_call(records).stream_state == "abandoned" and keep is helper


def test_resumed_stream_is_not_recorded_twice(oai, llm_server, records):
    """responses.stream(response_id=...) re-streams a stored response through retrieve(): no new usage."""
    llm_server.enqueue(Reply(sse=ob.response_events(["a"])))
    with oai().responses.stream(response_id="resp_local_stream") as stream:
        stream.get_final_response()
    assert records.calls == []
