"""The full matrix: {chat, responses, legacy completions} × {sync, async} × {stream, non-stream}
× {normal, early break, exception, raw response}.

Each cell runs the same scripted exchange through the bare SDK and the instrumented one, checks
that the app saw the same thing, and that exactly one record describes the call.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import bare, dump, only_call

from wasteaudit.localllm import RecordedRequest, Reply
from wasteaudit.localllm import openai_bodies as ob

APIS = ("chat", "responses", "completions")
MODES = ("normal", "early_break", "exception", "raw")


def _legacy_stream_handler(request: RecordedRequest) -> Reply:
    include = bool(((request.json or {}).get("stream_options") or {}).get("include_usage"))
    usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    return Reply(sse=ob.completion_chunks(["Hel", "lo", "!"], include_usage=include, usage=usage))


def _script(server: Any, api: str, stream: bool, mode: str) -> None:
    server.clear()
    server.handler = None
    if mode == "exception" and not stream:
        server.enqueue(Reply(status=500, json=ob.error_body("boom", type="server_error"), headers={"x-should-retry": "false"}))
        return
    cut = 3 if mode == "exception" else None
    if api == "chat":
        if stream:
            if cut:
                server.enqueue(Reply(sse=ob.chat_chunks(["Hel", "lo", "!"]), cut_after=cut))
            else:
                server.handler = ob.honour_include_usage(ob.chat_chunks(["Hel", "lo", "!"]), usage=ob.chat_usage(4, 3))
        else:
            server.enqueue(Reply(json=ob.chat_completion("Hello!", completion_tokens=3)))
    elif api == "responses":
        if stream:
            server.enqueue(Reply(sse=ob.response_events(["Hel", "lo", "!"], usage=ob.responses_usage(4, 3)), cut_after=cut))
        else:
            server.enqueue(Reply(json=ob.response("Hello!", output_tokens=3)))
    else:
        if stream:
            if cut:
                server.enqueue(Reply(sse=ob.completion_chunks(["Hel", "lo", "!"]), cut_after=cut))
            else:
                server.handler = _legacy_stream_handler
        else:
            server.enqueue(Reply(json=ob.completion("Hello!", completion_tokens=3)))


def _method(client: Any, api: str, raw: bool) -> Any:
    resource = {"chat": client.chat.completions, "responses": client.responses, "completions": client.completions}[api]
    return resource.with_raw_response.create if raw else resource.create


def _kwargs(api: str, stream: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": "m"}
    if api == "chat":
        kwargs["messages"] = [{"role": "user", "content": "hi"}]
    elif api == "responses":
        kwargs["input"] = "hi"
    else:
        kwargs["prompt"] = "hi"
    if stream:
        kwargs["stream"] = True
    return kwargs


def _error(exc: BaseException) -> tuple[Any, ...]:
    return ("raised", type(exc), str(exc), getattr(exc, "status_code", None))


def _sync(client: Any, api: str, stream: bool, mode: str) -> Any:
    try:
        result = _method(client, api, mode == "raw")(**_kwargs(api, stream))
        if mode == "raw":
            result = result.parse()
        if not stream:
            return dump(result)
        seen = []
        for item in result:
            seen.append(dump(item))
            if mode == "early_break":
                break
        result.close()
        return seen
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


async def _async(client: Any, api: str, stream: bool, mode: str) -> Any:
    try:
        result = await _method(client, api, mode == "raw")(**_kwargs(api, stream))
        if mode == "raw":
            result = result.parse()
        if not stream:
            return dump(result)
        seen = []
        async for item in result:
            seen.append(dump(item))
            if mode == "early_break":
                break
        await result.close()
        return seen
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


CELLS = [(api, stream, mode) for api in APIS for stream in (False, True) for mode in MODES if stream or mode != "early_break"]


def _check(call: Any, api: str, stream: bool, mode: str, seen: Any) -> None:
    assert call.api == {"chat": "chat.completions", "responses": "responses", "completions": "completions"}[api]
    assert call.stream is stream
    if mode == "exception":
        assert isinstance(seen, tuple) and seen[0] == "raised"
        assert call.error_type is not None and call.finish_category == "error"
        assert call.stream_state == ("error" if stream else None)
        return
    assert not (isinstance(seen, tuple) and seen and seen[0] == "raised"), seen
    if mode == "early_break":
        assert call.stream_state == "abandoned" and call.usage_source == "missing"
        assert call.choices and call.finish_category == "error"
    elif mode == "raw" and stream:
        assert "raw streaming response: body not observed" in call.gaps and call.usage_source == "missing"
    else:
        assert call.usage_source == "provider" and call.output_tokens == 3, call.gaps
        assert call.choices[0].text == "Hello!"
        assert call.stream_state == ("completed" if stream else None)
    assert call.error_type is None


@pytest.mark.parametrize(("api", "stream", "mode"), CELLS, ids=[f"{a}-{'stream' if s else 'json'}-{m}" for a, s, m in CELLS])
def test_sync_cell(api, stream, mode, oai, llm_server, records):
    _script(llm_server, api, stream, mode)
    with bare():  # a client of its own: with_raw_response binds create when first touched
        expected = _sync(oai(), api, stream, mode)
    _script(llm_server, api, stream, mode)
    seen = _sync(oai(), api, stream, mode)
    assert json.dumps(seen, default=repr) == json.dumps(expected, default=repr)
    _check(only_call(records), api, stream, mode, seen)


@pytest.mark.parametrize(("api", "stream", "mode"), CELLS, ids=[f"{a}-{'stream' if s else 'json'}-{m}" for a, s, m in CELLS])
async def test_async_cell(api, stream, mode, aoai, llm_server, records):
    _script(llm_server, api, stream, mode)
    with bare():  # a client of its own: with_raw_response binds create when first touched
        expected = await _async(aoai(), api, stream, mode)
    _script(llm_server, api, stream, mode)
    seen = await _async(aoai(), api, stream, mode)
    assert json.dumps(seen, default=repr) == json.dumps(expected, default=repr)
    _check(only_call(records), api, stream, mode, seen)
