"""Replay every recorded OpenAI-SDK interaction and check the record against the ground truth.

Each call is rebuilt from the recorded request body (keys this SDK no longer accepts go through
``extra_body``), served byte for byte by the local server, and made twice: once uninstrumented
and once instrumented. The app must see the same thing both times, and the record must match
the manifest (tokens, cached/reasoning tokens, finish reasons, usage present or missing, errors).
"""

from __future__ import annotations

import inspect
from typing import Any

import cassettes
import openai
import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import bare, only_call, outcome

from wasteaudit.instrumentation._providers import provider_for_host

INTERACTIONS = cassettes.interactions("openai") + cassettes.interactions("openai-compatible")
pytestmark = pytest.mark.skipif(not INTERACTIONS, reason="cassettes not available")

_METHODS = {
    "chat.completions": lambda client: client.chat.completions.create,
    "completions": lambda client: client.completions.create,
    "responses": lambda client: client.responses.create,
}


def _call_kwargs(method: Any, body: dict[str, Any]) -> dict[str, Any]:
    accepted = set(inspect.signature(method).parameters) - {"extra_headers", "extra_query", "extra_body", "timeout"}
    kwargs = {k: v for k, v in body.items() if k in accepted}
    extra = {k: v for k, v in body.items() if k not in accepted}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _run(client: openai.OpenAI, interaction: cassettes.Interaction) -> tuple[str, Any]:
    method = _METHODS[interaction.truth["endpoint"]](client)
    kwargs = _call_kwargs(method, interaction.request_body)

    def call() -> Any:
        result = method(**kwargs)
        return list(result) if kwargs.get("stream") else result

    return outcome(call)


def _expected_finish(reason: str) -> str:
    return reason.split(":", 1)[1] if reason.startswith("incomplete:") else reason


@pytest.mark.parametrize("interaction", INTERACTIONS, ids=[i.id for i in INTERACTIONS])
def test_cassette(interaction, oai, llm_server, records):
    truth = interaction.truth
    client = oai()
    llm_server.enqueue(interaction.reply)
    with bare():
        expected = _run(client, interaction)
    assert records.calls == []
    llm_server.enqueue(interaction.reply)
    seen = _run(client, interaction)

    assert seen == expected  # the app sees exactly what the bare SDK gives it
    call = only_call(records)
    assert call.stream == bool(truth["stream"])
    assert call.request_model == truth["request_model"]
    if truth["provider"] == "openai":
        assert provider_for_host(truth["host"]) == "openai"

    if truth["status"] >= 400:
        assert seen[0] == "raised" and seen[1][2] == truth["status"]
        assert call.status_code == truth["status"]
        assert call.error_type == truth["error_type"]
        assert call.usage_source == "missing" and call.input_tokens is None and call.output_tokens is None
        assert call.response_model is None and call.finish_category == "error"
        return

    assert seen[0] == "ok", seen
    assert call.error_type is None and call.status_code == truth["status"]
    assert call.response_model == truth["response_model"]
    assert call.usage_source == ("provider" if truth["usage_present"] else "missing")
    assert call.input_tokens == truth["input_tokens"]
    assert call.output_tokens == truth["output_tokens"]
    assert call.input_cache_read_tokens == truth["cached_tokens"]
    assert call.output_reasoning_tokens == truth["reasoning_tokens"]
    if truth["usage_present"]:
        assert (call.usage_details or {}).get("total_tokens") == truth["total_tokens"]
    else:
        assert any(gap.startswith("usage missing") for gap in call.gaps)
    assert call.finish_reasons == [_expected_finish(r) for r in truth["finish_reasons"]]
    assert sum(len(choice.tool_calls or ()) for choice in call.choices) == truth["tool_calls"]
    assert any(choice.refusal for choice in call.choices) == truth["refusal"]
    if truth["stream"]:
        assert call.stream_state == ("completed" if truth["stream_complete"] else "error")


def test_the_corpus_covers_what_we_claim():
    endpoints = {(i.truth["endpoint"], bool(i.truth["stream"])) for i in INTERACTIONS}
    assert {("chat.completions", False), ("chat.completions", True), ("responses", False), ("responses", True), ("completions", False)} <= endpoints
    assert len(INTERACTIONS) >= 60
