"""Replay every recorded Anthropic interaction (../shared/cassettes) through the real SDK and
check the record against the manifest's ground truth.

The call is rebuilt from the recorded request body: arguments this SDK still accepts are passed
by name, the rest through ``extra_body``; streams run through both ``create(stream=True)`` and the
``messages.stream()`` helper; the beta endpoint goes through ``client.beta.messages``. Ground truth
conventions (manifest): Anthropic ``input_tokens`` EXCLUDES cache reads/writes, while our record's
``input_tokens`` INCLUDES them.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest

import cassettes
from anthropic_support import *  # noqa: F403 - fixtures (shared server)
from anthropic_support import dump, error_observation, instrumented, resource, sync_client

pytestmark = pytest.mark.skipif(not cassettes.available(), reason="cassettes not available")


def _cases() -> list:
    cases = []
    for item in cassettes.interactions("anthropic"):
        if item.truth["stream"]:
            for how in ("create", "helper"):
                cases.append(pytest.param(item, how, id=f"{item.id}-{how}"))
        else:
            cases.append(pytest.param(item, "create", id=item.id))
    return cases


def _split(method: Any, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    params = inspect.signature(method).parameters
    named = {k: v for k, v in body.items() if k in params and not k.startswith("extra_")}
    extra = {k: v for k, v in body.items() if k not in named}
    return named, extra


def _replay(server, item, how: str) -> Any:
    """What the app saw, plus every warning the SDK emitted (category, text, where it points)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = _replay_call(server, item, how)
    # (ResourceWarnings come from the garbage collector finding other tests' sockets: noise)
    return seen, [(w.category, str(w.message), w.filename, w.lineno) for w in caught if w.category is not ResourceWarning]


def _replay_call(server, item, how: str) -> Any:
    client = sync_client(server, max_retries=0)
    api = "messages.beta" if item.truth["endpoint"].startswith("messages.beta") else "messages"
    res = resource(client, api)
    body = dict(item.request_body)
    body.pop("stream", None)
    server.enqueue(item.reply)
    try:
        if item.truth["stream"] and how == "helper":
            named, extra = _split(res.stream, body)
            with res.stream(**named, extra_body=extra or None, timeout=30) as stream:
                texts = list(stream.text_stream)
                return ("helper", texts, dump(stream.get_final_message()))
        named, extra = _split(res.create, body)
        if item.truth["stream"]:
            with res.create(**named, stream=True, extra_body=extra or None, timeout=30) as stream:
                return ("events", [dump(event) for event in stream])
        return ("message", dump(res.create(**named, extra_body=extra or None, timeout=30)))
    except Exception as exc:
        return error_observation(exc)


@pytest.mark.parametrize(("item", "how"), _cases())
def test_cassette_replay_matches_ground_truth(records, llm_server, item, how):
    truth = item.truth
    bare, bare_warnings = _replay(llm_server, item, how)
    with instrumented():
        seen, seen_warnings = _replay(llm_server, item, how)
    assert seen == bare, "the app must see exactly what the bare SDK returns or raises"
    # e.g. the SDK's DeprecationWarning for a retired model still points at the app's line
    assert seen_warnings == bare_warnings

    assert len(records.calls) == 1
    call = records.calls[0]
    assert call.provider == "anthropic"
    assert call.api == ("messages.beta" if truth["endpoint"].startswith("messages.beta") else "messages")
    assert call.stream is bool(truth["stream"])
    assert call.request_model == truth["request_model"]
    assert call.request_params.get("max_tokens") == truth["max_tokens"]

    if truth["status"] >= 400:
        assert seen[0] == "error" and seen[3] == truth["status"]
        assert call.error_type == truth["error_type"]
        assert call.status_code == truth["status"]
        assert call.finish_reasons == truth["finish_reasons"] == []
        assert call.finish_category == "error"
        assert call.input_tokens is None and call.output_tokens is None
        assert call.usage_source == "missing"
        assert call.response_model is None
        return

    assert seen[0] != "error", seen
    cached = truth["cached_tokens"]
    created = truth["cache_creation_tokens"]
    assert call.input_tokens == truth["input_tokens"] + (cached or 0) + (created or 0)
    assert call.input_cache_read_tokens == cached
    assert call.input_cache_write_tokens == created
    assert call.output_tokens == truth["output_tokens"]
    assert call.usage_source == "provider"
    assert call.finish_reasons == truth["finish_reasons"]
    assert call.response_model == truth["response_model"]
    assert call.error_type is None and call.status_code == 200
    choice = call.choices[0]
    assert len(choice.tool_calls or []) == truth["tool_calls"]
    for tool in choice.tool_calls or []:
        assert tool["id"] and tool["name"] and isinstance(tool["arguments"], str)
    if truth["thinking_blocks"]:
        assert choice.reasoning_text
    if truth["refusal"]:
        assert call.finish_category == "refusal"
    if call.output_reasoning_tokens is not None:
        assert 0 <= call.output_reasoning_tokens <= call.output_tokens
    if truth["stream"]:
        assert call.stream_state == ("completed" if truth["stream_complete"] else "error")
        # what the app received is what we recorded
        if how == "helper":
            assert (choice.text or "") == "".join(seen[1])
    else:
        final = seen[1]
        text = "".join(block["text"] for block in final["content"] if block["type"] == "text")
        assert (choice.text or None) == (text or None)
    assert not [gap for gap in call.gaps if "usage" in gap], call.gaps
