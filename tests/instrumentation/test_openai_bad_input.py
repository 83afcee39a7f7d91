"""Odd replies: the app sees exactly what the bare SDK gives it, and the record notes the gap.

Every case runs the same scripted reply through the uninstrumented SDK and then the instrumented
one and compares the outcomes (result or exception type, message, status, body). Our test-suite
sets ``WASTEAUDIT_RAISE_INTERNAL=1``, so an internal error of ours would surface here as a
different outcome instead of being swallowed.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import bare, only_call, outcome, set_settings

from wasteaudit._internal.safety import internal_error_counts
from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "user", "content": "hi"}]


def _chat(client: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def _chat_stream(client: Any) -> Any:
    return list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))


def _responses(client: Any) -> Any:
    return client.responses.create(model="gpt-4.1", input="hi")


def _responses_stream(client: Any) -> Any:
    return list(client.responses.create(model="gpt-4.1", input="hi", stream=True))


def _legacy(client: Any) -> Any:
    return client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")


def _body(data: Any) -> Reply:
    return Reply(body=json.dumps(data, ensure_ascii=False))


def _chat_with(**changes: Any) -> dict[str, Any]:
    return {**ob.chat_completion("ok"), **changes}


def _chunk(data: dict[str, Any]) -> str:
    return "data: " + json.dumps(data)


CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

CASES: list[tuple[str, Reply, Callable[[Any], Any], str | None]] = [
    ("malformed_json", Reply(body=b'{"id": "x", "choices": [', headers={"content-type": "application/json"}), _chat, None),
    ("empty_body", Reply(body=b""), _chat, None),
    ("not_an_object", _body(["a", "list"]), _chat, None),
    ("text_plain_json", Reply(body=json.dumps(ob.chat_completion("ok")), headers={"content-type": "text/plain"}), _chat, None),
    ("missing_usage", _body(ob.chat_completion("ok", include_usage=False)), _chat, "usage missing: response body had no usage"),
    ("usage_null", _body(_chat_with(usage=None)), _chat, "usage missing: response body had no usage"),
    ("usage_wrong_types", _body(_chat_with(usage={"prompt_tokens": "ten", "completion_tokens": 3.5, "total_tokens": None})), _chat, "usage malformed: no integer token counts"),
    (
        "usage_details_wrong",
        _body(_chat_with(usage={"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": "cached", "completion_tokens_details": {"reasoning_tokens": "x"}})),
        _chat,
        "usage field completion_tokens_details.reasoning_tokens is not an integer: 'x'",
    ),
    ("usage_a_string", _body(_chat_with(usage="lots")), _chat, "usage malformed: str instead of an object"),
    ("usage_bool", _body(_chat_with(usage={"prompt_tokens": True, "completion_tokens": 1})), _chat, "usage field prompt_tokens is not an integer: True"),
    ("choices_not_a_list", _body(_chat_with(choices="oops")), _chat, "response choices malformed: str"),
    ("choices_missing", _body({k: v for k, v in ob.chat_completion("ok").items() if k != "choices"}), _chat, "response had no choices"),
    ("choice_fields_wrong", _body(_chat_with(choices=[{"index": "zero", "message": "text", "finish_reason": 3}])), _chat, None),
    ("message_null", _body(_chat_with(choices=[{"index": 0, "message": None, "finish_reason": "stop"}])), _chat, None),
    ("tool_calls_wrong", _body(_chat_with(choices=[{"index": 0, "message": {"role": "assistant", "tool_calls": [{"id": 1, "function": "x"}, None]}, "finish_reason": "tool_calls"}])), _chat, None),
    ("unicode_and_nul", _body(ob.chat_completion("nul\x00 ok \u202eRTL\u202c 🧪 \ud800 end")), _chat, None),
    ("unknown_model_404", ob.error_reply(404, "The model `nope` does not exist", retry_after_ms=None, code="model_not_found"), _chat, None),
    ("html_502", Reply(status=502, body=b"<html>Bad gateway</html>", headers={"content-type": "text/html", "x-should-retry": "false"}), _chat, None),
    ("error_body_odd", Reply(status=400, json={"error": "just a string"}), _chat, None),
    ("error_200_in_body", _body({"error": {"message": "content filtered", "type": "content_filter"}}), _chat, None),
    ("legacy_missing_usage", _body({k: v for k, v in ob.completion("x").items() if k != "usage"}), _legacy, "usage missing: response body had no usage"),
    ("responses_usage_wrong", _body({**ob.response("x"), "usage": {"input_tokens": "1", "output_tokens": None}}), _responses, "usage malformed: no integer token counts"),
    ("responses_output_odd", _body({**ob.response("x"), "output": [{"type": "mystery"}, "str", {"type": "message", "content": "no"}, {"type": 5}]}), _responses, None),
    ("responses_status_missing", _body({k: v for k, v in ob.response("x").items() if k != "status"}), _responses, None),
    ("stream_bad_json", Reply(sse=[_chunk({**CHUNK, "choices": [{"index": 0, "delta": {"content": "a"}}]}), "data: {not json", ob.DONE]), _chat_stream, None),
    ("stream_error_event", Reply(sse=[_chunk({**CHUNK, "choices": []}), 'data: {"error": {"message": "overloaded", "type": "server_error"}}', ob.DONE]), _chat_stream, None),
    (
        "stream_odd_chunks",
        Reply(
            sse=[
                _chunk({**CHUNK, "choices": None}),
                _chunk({**CHUNK, "choices": "x"}),
                _chunk({**CHUNK, "choices": [{"index": None, "delta": None, "finish_reason": None}]}),
                _chunk({**CHUNK, "choices": [{"index": {"a": 1}, "delta": {"content": 5, "tool_calls": [{"function": {"name": "f", "arguments": 7}}, {"id": "t2"}]}}]}),
                _chunk({**CHUNK, "choices": [{"index": 0, "delta": {"tool_calls": "x", "refusal": ["no"]}, "finish_reason": 9}]}),
                _chunk({**CHUNK, "choices": [], "usage": "x"}),
                _chunk({**CHUNK, "choices": [], "usage": {"prompt_tokens": None}}),
                ob.DONE,
            ]
        ),
        _chat_stream,
        None,
    ),
    ("stream_comments_and_empty", Reply(sse=[": keep-alive", _chunk({**CHUNK, "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}), ob.DONE]), _chat_stream, None),
    ("stream_no_done", Reply(sse=[_chunk({**CHUNK, "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]})]), _chat_stream, None),
    ("stream_not_sse", Reply(body=json.dumps(ob.chat_completion("not a stream"))), _chat_stream, None),
    (
        "responses_stream_odd",
        Reply(
            sse=[
                'event: response.created\ndata: {"type": "response.created", "response": "x"}',
                'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": 5}',
                'event: response.output_item.done\ndata: {"type": "response.output_item.done", "item": {"type": "function_call"}}',
                'event: response.function_call_arguments.delta\ndata: {"type": "response.function_call_arguments.delta", "delta": "{", "output_index": [1]}',
                'event: response.completed\ndata: {"type": "response.completed", "response": {"status": 7, "usage": "none", "output": {"a": 1}}}',
            ]
        ),
        _responses_stream,
        None,
    ),
]


@pytest.mark.parametrize(("name", "reply", "call", "gap"), CASES, ids=[c[0] for c in CASES])
def test_same_outcome_as_bare_sdk(name, reply, call, gap, oai, llm_server, records):
    client = oai()
    if call is _chat_stream:  # a scripted reply ignores the request: ask the same in both runs
        set_settings(openai_stream_usage=False)
    before = internal_error_counts()
    llm_server.enqueue(reply)
    with bare():
        expected = outcome(lambda: call(client))
    llm_server.enqueue(reply)
    seen = outcome(lambda: call(client))
    assert seen == expected
    assert internal_error_counts() == before
    record = only_call(records)
    if gap is not None:
        assert gap in record.gaps, record.gaps
    if expected[0] == "raised":
        assert record.error_type is not None and record.finish_category == "error"
    if record.usage_source == "missing":
        assert record.input_tokens is None and record.output_tokens is None
        assert any(g.startswith("usage missing") or g.startswith("usage malformed") for g in record.gaps)


def test_ten_megabyte_output(oai, llm_server, records):
    text = "word " * (2 * 1024 * 1024)  # 10 MiB
    llm_server.enqueue(Reply(json=ob.chat_completion(text, completion_tokens=2_000_000)))
    result = _chat(oai())
    assert result.choices[0].message.content == text
    record = only_call(records)
    assert record.output_tokens == 2_000_000
    assert record.choices[0].text is result.choices[0].message.content  # a reference, not a copy


def test_ten_megabyte_stream(oai, llm_server, records):
    piece = "x" * 65536
    llm_server.enqueue(Reply(sse=ob.chat_chunks([piece] * 160, include_usage=True)))
    chunks = list(oai().chat.completions.create(model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert sum(len(c.choices[0].delta.content or "") for c in chunks if c.choices) == len(piece) * 160
    assert len(only_call(records).choices[0].text) == len(piece) * 160


def test_generator_messages_are_not_consumed(oai, llm_server, records):
    """An iterable the SDK accepts is passed through untouched; we do not snapshot it."""
    llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
    messages = (m for m in MESSAGES)
    _ = oai().chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert llm_server.requests[-1].json["messages"] == MESSAGES
    record = only_call(records)
    assert record.input_messages is None and "messages not captured: generator is not a list" in record.gaps


def test_fail_open_when_our_code_breaks(oai, llm_server, records, monkeypatch):
    """With internal errors not re-raised (production), a bug of ours never reaches the app."""
    from wasteaudit.instrumentation import _openai_call, _openai_extract

    monkeypatch.setenv("WASTEAUDIT_RAISE_INTERNAL", "0")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("wasteaudit bug")

    llm_server.enqueue(Reply(json=ob.chat_completion("setup broken")), Reply(json=ob.chat_completion("result broken")))
    client = oai()
    monkeypatch.setattr(_openai_call, "request_params", boom)  # setup fails: the original runs untouched
    assert _chat(client).choices[0].message.content == "setup broken"
    assert records.calls == []
    monkeypatch.undo()
    monkeypatch.setenv("WASTEAUDIT_RAISE_INTERNAL", "0")
    monkeypatch.setattr(_openai_call, "apply_chat_completion", boom)  # reading the result fails
    assert _chat(client).choices[0].message.content == "result broken"
    assert len(records.calls) == 1  # still finished exactly once
    counts = internal_error_counts()
    assert counts.get("openai.start", 0) >= 1 and counts.get("openai.result", 0) >= 1
    assert _openai_extract.apply_chat_completion is not boom


def test_fail_open_in_stream_observer(oai, llm_server, records, monkeypatch):
    from wasteaudit.instrumentation import _openai_streams

    monkeypatch.setenv("WASTEAUDIT_RAISE_INTERNAL", "0")

    def boom(self: Any, item: Any) -> bool:
        raise RuntimeError("observer bug")

    monkeypatch.setattr(_openai_streams.ChatStreamObserver, "on_item", boom)
    llm_server.enqueue(Reply(sse=ob.chat_chunks(["a", "b"])))
    chunks = _chat_stream(oai())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "ab"
    assert len(records.calls) == 1
