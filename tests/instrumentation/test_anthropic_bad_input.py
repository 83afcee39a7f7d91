"""Odd replies: the app sees exactly what the bare SDK gives it (value or exception), and the
record says what could not be measured. Internal errors re-raise under the test-suite
(WASTEAUDIT_RAISE_INTERNAL=1), so any bug of ours shows up as a difference here."""

from __future__ import annotations

import json

import pytest

from anthropic_support import *  # noqa: F403 - fixtures (shared server)
from anthropic_support import async_client, drive_async, drive_sync, instrumented, sync_client
from wasteaudit.localllm import Reply
from wasteaudit.localllm import anthropic_bodies as ab

TEN_MB = "word " * (2 * 1024 * 1024)
ODD_TEXT = "naïve — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🧪👩🏽‍🔬 עברית \u202eRTL\u202c zero\u200bwidth nul\x00 bom\ufeff"


def _json_reply(raw: str, status: int = 200, content_type: str = "application/json") -> Reply:
    return Reply(status=status, body=raw, headers={"content-type": content_type, "x-should-retry": "false"})


NON_STREAM = {
    "malformed_json": _json_reply('{"id": "msg_1", "content": [ {"type": "text", "text": "cut'),
    "empty_body": _json_reply(""),
    "json_array": _json_reply("[1, 2, 3]"),
    "html_200": _json_reply("<html>gateway says hi</html>", content_type="text/html"),
    "missing_usage": Reply(json={k: v for k, v in ab.message("no usage here").items() if k != "usage"}),
    "usage_null": Reply(json={**ab.message("usage is null"), "usage": None}),
    "wrong_types": Reply(
        json={
            **ab.message("x"),
            "stop_reason": 5,
            "content": "not a list",
            "usage": {"input_tokens": "12", "output_tokens": None, "cache_read_input_tokens": 1.5, "output_tokens_details": "many"},
        }
    ),
    "unknown_blocks": Reply(json=ab.message([{"type": "hologram", "data": {"x": 1}}, ab.text_block("ok"), {"type": "tool_use"}])),
    "ten_mb_text": Reply(json=ab.message(TEN_MB, usage=ab.usage(5, 2_000_000))),
    "odd_unicode": Reply(json=ab.message(ODD_TEXT)),
    "lone_surrogate": _json_reply(json.dumps(ab.message("half a pair: \ud800 end"), ensure_ascii=True)),
    "unknown_model_404": ab.reply_not_found("claude-does-not-exist"),
    "unknown_model_200": Reply(json=ab.message("fine", model="claude-from-the-future-9")),
    "error_without_body": _json_reply("", status=500),
    "error_not_json": _json_reply("upstream timeout", status=503, content_type="text/plain"),
}


@pytest.mark.filterwarnings("ignore::UserWarning:pydantic.*")  # the test dumps odd models itself
@pytest.mark.parametrize("case", sorted(NON_STREAM))
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_odd_non_stream_replies(records, llm_server, case, flavour):
    async def run():
        llm_server.enqueue(NON_STREAM[case])
        if flavour == "sync":
            return drive_sync(sync_client(llm_server, max_retries=0), "messages", "create", "normal")
        return await drive_async(async_client(llm_server, max_retries=0), "messages", "create", "normal")

    bare = await run()
    with instrumented():
        seen = await run()
    assert seen == bare
    assert len(records.calls) == 1
    call = records.calls[0]
    if seen[0] == "error":
        assert call.error_type and call.finish_category == "error"
        assert call.usage_source == "missing"
    if case in ("html_200", "json_array", "empty_body"):
        assert call.usage_source == "missing" and call.output_tokens is None
        if seen[0] != "error":
            assert any("not a Message" in gap for gap in call.gaps)
    if case in ("missing_usage", "usage_null"):
        assert call.usage_source == "missing" and call.input_tokens is None and call.output_tokens is None
        assert any("usage missing" in gap for gap in call.gaps)
    if case == "wrong_types":
        assert call.input_tokens is None and call.output_tokens is None and call.input_cache_read_tokens is None
        assert call.usage_source == "missing"
        assert any("unexpected types" in gap for gap in call.gaps)
        assert any("stop_reason" in gap for gap in call.gaps) and any("content" in gap for gap in call.gaps)
    if case == "unknown_blocks":
        assert call.choices[0].text == "ok"
        assert call.choices[0].tool_calls == [{"id": None, "name": None, "arguments": "{}", "type": "tool_use"}]
    if case == "ten_mb_text":
        assert call.choices[0].text == TEN_MB and call.output_tokens == 2_000_000
    if case == "odd_unicode":
        assert call.choices[0].text == ODD_TEXT
    if case == "lone_surrogate":
        assert call.choices[0].text == "half a pair: \ud800 end"
    if case == "unknown_model_404":
        assert call.error_type == "not_found_error" and call.status_code == 404
    if case == "unknown_model_200":
        assert call.response_model == "claude-from-the-future-9" and call.usage_source == "provider"


def _sse(*events: str) -> Reply:
    return Reply(sse=list(events))


_START = ab.stream_events(ab.message("hello there", usage=ab.usage(11, 7)))
STREAMS = {
    "malformed_data": _sse(_START[0], "event: content_block_start\ndata: {oops"),
    "unknown_event": _sse(*_START[:3], 'event: hologram\ndata: {"type": "hologram", "x": 1}', *_START[3:]),
    "delta_before_start": _sse(
        _START[0],
        ab.event("content_block_delta", {"type": "content_block_delta", "index": 4, "delta": {"type": "text_delta", "text": "orphan"}}),
        *_START[-2:],
    ),
    "delta_without_usage": _sse(*_START[:-2], 'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}', _START[-1]),
    "string_usage": _sse(
        ab.event("message_start", {"type": "message_start", "message": {**ab.message([]), "usage": {"input_tokens": "11", "output_tokens": "1"}}}),
        *_START[1:-2],
        ab.event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": "7"}}),
        _START[-1],
    ),
    "error_first": _sse(ab.error_event("api_error", "Internal server error")),
    "empty_stream": _sse(),
    "odd_unicode": Reply(sse=ab.stream_events(ab.message(ODD_TEXT), chunk_chars=3)),
}


@pytest.mark.parametrize("case", sorted(STREAMS))
@pytest.mark.parametrize("method", ["create_stream", "helper"])
def test_odd_streams(records, llm_server, case, method):
    def run():
        llm_server.enqueue(STREAMS[case])
        return drive_sync(sync_client(llm_server, max_retries=0), "messages", method, "normal")

    bare = run()
    with instrumented():
        seen = run()
    assert seen == bare
    assert len(records.calls) == 1
    call = records.calls[0]
    assert call.stream is True
    helper_failed = method == "helper" and case in ("delta_without_usage", "delta_before_start")
    if seen[0] == "error" and not helper_failed:
        assert call.stream_state == "error" and call.finish_category == "error"
    if seen[0] == "error" and helper_failed:
        # the helper itself fails on that event, above our proxy: to us the app stopped reading
        assert call.stream_state == "abandoned"
    if case == "string_usage":  # the SDK's stream parser coerces "11" to 11: we record what the app got
        assert call.input_tokens == 11 and call.output_tokens == 7
    if case == "delta_without_usage" and method == "create_stream":
        assert call.finish_reasons == ["end_turn"] and call.input_tokens == 11 and call.output_tokens is None
        assert call.usage_source == "missing"

    if case == "odd_unicode":
        assert call.choices[0].text == ODD_TEXT
    if case == "empty_stream":
        assert call.usage_source == "missing" and call.stream_state == "error"
