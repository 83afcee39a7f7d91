"""Anthropic calls through the real SDK over HTTP: every entry point, sync and async, with and
without streaming, run to the end, broken off early, failing, raw and retried.

Each case runs the same scripted replies twice — through the bare SDK and through the
instrumented one — and asserts the app saw exactly the same thing, then checks the record.
"""

from __future__ import annotations

import pytest

from anthropic_support import *  # noqa: F403 - fixtures (shared server)
from anthropic_support import (
    KW,
    MESSAGES,
    MODEL,
    RICH_INPUT_TOTAL,
    async_client,
    drive_async,
    drive_sync,
    instrumented,
    replies_for,
    rich_message,
    sync_client,
)

STREAMING = ("create_stream", "helper")


def _cases() -> list:
    cases = []
    for method in ("create", "parse", "create_stream", "helper"):
        variants = ["normal", "error", "retry"]
        if method in STREAMING:
            variants.append("break")
        if method in ("create", "create_stream"):
            variants.append("raw")
        for api in ("messages", "messages.beta"):
            for flavour in ("sync", "async"):
                for variant in variants:
                    cases.append(pytest.param(method, api, flavour, variant, id=f"{method}-{api}-{flavour}-{variant}"))
    return cases


async def _run(server, flavour: str, api: str, method: str, variant: str, replies: list, **client_options):
    server.enqueue(*replies)
    if flavour == "sync":
        client = sync_client(server, **client_options)
        return drive_sync(client, api, method, variant)
    client = async_client(server, **client_options)
    return await drive_async(client, api, method, variant)


@pytest.mark.parametrize(("method", "api", "flavour", "variant"), _cases())
async def test_entry_point_matrix(records, llm_server, method, api, flavour, variant):
    msg = rich_message()
    replies = replies_for(method, variant, msg)
    bare = await _run(llm_server, flavour, api, method, variant, replies)
    assert records.calls == []
    with instrumented():
        seen = await _run(llm_server, flavour, api, method, variant, replies)
    assert seen == bare, "the app must see exactly what the bare SDK returns or raises"

    assert len(records.calls) == 1
    call = records.calls[0]
    streaming = method in STREAMING
    assert call.provider == "anthropic" and call.operation == "chat"
    assert call.api == api
    assert call.method == {"create": "create", "create_stream": "create", "parse": "parse", "helper": "stream"}[method]
    assert call.stream is streaming
    assert call.request_model == MODEL
    assert call.request_params["max_tokens"] == 256
    assert call.input_messages == MESSAGES and call.input_messages is not MESSAGES
    assert call.server_address == "127.0.0.1" and call.server_port == int(llm_server.url.rsplit(":", 1)[1])
    assert call.ended_at is not None and call.duration_s is not None and call.duration_s >= 0

    if variant in ("normal", "retry") or (variant == "raw" and method == "create"):
        _assert_complete(call, streaming)
        statuses = [a.status_code for a in call.attempts]
        assert statuses == ([529, 429, 200] if variant == "retry" else [200])
        if variant == "retry":
            # a non-stream error body is read before the SDK retries; a streamed one is not
            expected_types = [None, None, None] if streaming else ["overloaded_error", "rate_limit_error", None]
            assert [a.error_type for a in call.attempts] == expected_types
            assert [a.index for a in call.attempts] == [0, 1, 2]
        assert call.gaps == []
    elif variant == "raw":  # with_streaming_response: the app reads the body later, we do not
        assert call.usage_source == "missing" and call.output_tokens is None
        assert any("raw response" in gap for gap in call.gaps)
        assert call.status_code == 200
    elif variant == "break":
        assert call.stream_state == "abandoned"
        assert call.finish_reasons == [None] and call.finish_category == "error"
        assert call.input_tokens == RICH_INPUT_TOTAL and call.input_cache_read_tokens == 30
        assert call.output_tokens is None and call.usage_source == "missing"
        assert any("message_delta" in gap for gap in call.gaps)
        assert call.response_id == "msg_rich_1"
    elif variant == "error":
        assert call.finish_category == "error"
        if streaming:
            assert call.error_type == "overloaded_error"
            assert call.stream_state == "error"
            assert call.finish_reasons == [None]
            assert call.input_tokens == RICH_INPUT_TOTAL and call.output_tokens is None
            assert call.choices and call.choices[0].reasoning_text  # what arrived before the error
        else:
            assert call.error_type == "invalid_request_error"
            assert call.status_code == 400
            assert call.finish_reasons == []
            assert call.input_tokens is None and call.output_tokens is None and call.usage_source == "missing"
            assert [(a.status_code, a.error_type) for a in call.attempts] == [(400, "invalid_request_error")]
            assert "messages: text content blocks must be non-empty" in call.error_message


def _assert_complete(call, streaming: bool) -> None:
    assert call.usage_source == "provider"
    assert call.input_tokens == RICH_INPUT_TOTAL
    assert call.input_cache_read_tokens == 30
    assert call.input_cache_write_tokens == 20
    assert call.usage_details["cache_creation"] == {"ephemeral_5m_input_tokens": 15, "ephemeral_1h_input_tokens": 5}
    assert call.output_tokens == 50
    assert call.output_reasoning_tokens == 12
    assert call.service_tier == "standard"
    assert call.finish_reasons == ["tool_use"] and call.finish_category == "tool"
    assert call.response_id == "msg_rich_1"
    assert call.response_model == "claude-sonnet-4-5-20250929"
    assert call.status_code == 200
    assert call.error_type is None
    choice = call.choices[0]
    assert choice.text == "2 + 2 = 4. Let me verify with the calculator."
    assert choice.reasoning_text == "The user wants 2+2. That is 4."
    assert choice.tool_calls == [
        {"id": "toolu_calc_1", "name": "calculator", "arguments": '{"expression":"2+2","precision":0}', "type": "tool_use"}
    ]
    assert choice.finish_reason == "tool_use"
    if streaming:
        assert call.stream_state == "completed"
        assert call.time_to_first_chunk_s is not None and call.time_to_first_chunk_s <= call.duration_s
        assert call.chunks and call.chunks > 5
    else:
        assert call.stream_state is None


async def test_async_gather_keeps_calls_apart(records, llm_server):
    """Concurrent async calls each get their own record and their own attempts."""
    import asyncio

    from wasteaudit.localllm import anthropic_bodies as ab

    with instrumented():
        client = async_client(llm_server)
        for i in range(6):
            llm_server.enqueue(ab.reply_message(ab.message(f"answer {i}", usage=ab.usage(5, i + 1))))
        results = await asyncio.gather(*(client.messages.create(**KW) for _ in range(6)))
    assert len(records.calls) == 6
    assert sorted(c.output_tokens for c in records.calls) == sorted(r.usage.output_tokens for r in results)
    assert all(len(c.attempts) == 1 for c in records.calls)
    assert len({c.id for c in records.calls}) == 6
