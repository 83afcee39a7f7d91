"""Chat Completions (non-stream) and legacy Completions through the real SDK: what is recorded."""

from __future__ import annotations

import openai
import pydantic
import pytest
from openai_support import *  # noqa: F403 - fixtures: llm_server, oai, aoai, instrumented
from openai_support import only_call, set_settings

from wasteaudit.localllm import Reply
from wasteaudit.localllm import openai_bodies as ob

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]


def test_basic_call_records_usage_content_params_and_returns_the_sdk_object(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi there!", prompt_tokens=12, completion_tokens=3), headers={"x-request-id": "req_1"}))
    messages = list(MESSAGES)
    result = oai().chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        max_completion_tokens=50,
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=["\n\n"],
        frequency_penalty=0.1,
        presence_penalty=0.3,
        reasoning_effort="low",
    )
    messages.append({"role": "assistant", "content": result.choices[0].message.content})  # the app's next turn

    assert isinstance(result, openai.types.chat.ChatCompletion)
    assert result.choices[0].message.content == "Hi there!"
    call = only_call(records)
    assert (call.provider, call.operation, call.api, call.method, call.stream) == ("openai", "chat", "chat.completions", "create", False)
    assert call.request_model == "gpt-4o-mini" and call.response_model == "gpt-4o-mini-2024-07-18"
    assert call.response_id == "chatcmpl-local-1" and call.service_tier == "default"
    assert call.usage_source == "provider"
    assert (call.input_tokens, call.output_tokens, call.input_cache_read_tokens, call.output_reasoning_tokens) == (12, 3, 0, 0)
    assert call.input_cache_write_tokens is None
    assert call.usage_details["total_tokens"] == 15
    assert call.finish_reasons == ["stop"] and call.finish_category == "stop"
    assert [c.text for c in call.choices] == ["Hi there!"]
    assert call.input_messages == MESSAGES  # snapshot taken before the app appended
    assert call.request_params == {
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "reasoning_effort": "low",
    }
    assert call.server_address == "127.0.0.1" and call.server_port == int(llm_server.url.rsplit(":", 1)[1])
    assert [(a.status_code, a.request_id) for a in call.attempts] == [(200, "req_1")]
    assert call.status_code == 200 and call.error_type is None and call.gaps == []


def test_n_choices_one_choice_content_each(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion(["one", "two", "three"], finish_reason=["stop", "length", "stop"], completion_tokens=9)))
    result = oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    assert len(result.choices) == 3
    call = only_call(records)
    assert [c.index for c in call.choices] == [0, 1, 2]
    assert [c.text for c in call.choices] == ["one", "two", "three"]
    assert call.finish_reasons == ["stop", "length", "stop"]
    assert call.finish_category == "length"  # the worst over the choices
    assert call.request_params["n"] == 3 and call.output_tokens == 9


def test_tool_calls_and_tool_definitions(oai, llm_server, records):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    calls = [ob.tool_call("get_weather", {"city": "Paris"}, "call_a"), ob.tool_call("get_weather", {"city": "Rome"}, "call_b")]
    llm_server.enqueue(Reply(json=ob.chat_completion(None, tool_calls=calls, finish_reason="tool_calls")))
    result = oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=tools, tool_choice="auto")
    assert result.choices[0].message.tool_calls[1].function.arguments == '{"city": "Rome"}'
    call = only_call(records)
    assert call.choices[0].tool_calls == [
        {"id": "call_a", "type": "function", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_b", "type": "function", "name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    assert call.choices[0].text is None
    assert call.finish_reasons == ["tool_calls"] and call.finish_category == "tool"
    assert call.tool_definitions == tools and call.tool_definitions is not tools
    assert call.request_params["tool_choice"] == "auto"


def test_truncation_is_length(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("The answer is", finish_reason="length", completion_tokens=5)))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    call = only_call(records)
    assert call.finish_reasons == ["length"] and call.finish_category == "length"
    assert call.request_params["max_tokens"] == 5


def test_refusal_field(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion(None, refusal="I can't help with that.")))
    result = oai().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert result.choices[0].message.refusal == "I can't help with that."
    call = only_call(records)
    assert call.choices[0].refusal == "I can't help with that."
    assert call.finish_reasons == ["stop"] and call.finish_category == "refusal"


def test_cached_reasoning_cache_write_and_other_details(oai, llm_server, records):
    usage = ob.chat_usage(
        2000,
        300,
        cached_tokens=1536,
        cache_write_tokens=256,
        reasoning_tokens=192,
        accepted_prediction_tokens=4,
        rejected_prediction_tokens=7,
        audio_prompt_tokens=None,
        audio_completion_tokens=None,
    )
    llm_server.enqueue(Reply(json=ob.chat_completion("ok", usage=usage, service_tier="flex")))
    oai().chat.completions.create(model="o4-mini", messages=MESSAGES)
    call = only_call(records)
    assert call.input_tokens == 2000  # includes the cached 1536: never added again
    assert call.input_cache_read_tokens == 1536
    assert call.input_cache_write_tokens == 256
    assert call.output_tokens == 300 and call.output_reasoning_tokens == 192
    assert call.usage_details == {
        "total_tokens": 2300,
        "output.accepted_prediction_tokens": 4,
        "output.rejected_prediction_tokens": 7,
    }
    assert call.service_tier == "flex"


def test_missing_details_are_none_not_zero(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("ok", usage=ob.chat_usage(8, 2, details=False))))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    call = only_call(records)
    assert (call.input_tokens, call.output_tokens) == (8, 2)
    assert call.input_cache_read_tokens is None and call.output_reasoning_tokens is None and call.input_cache_write_tokens is None


def test_response_format_json_sets_output_type(oai, llm_server, records):
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    llm_server.enqueue(Reply(json=ob.chat_completion('{"a": 1}')))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, response_format=schema)
    call = only_call(records)
    assert call.output_type == "json" and call.response_format == schema


class Answer(pydantic.BaseModel):
    answer: str


def test_parse_records_one_call(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion('{"answer": "42"}', completion_tokens=6)))
    result = oai().chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
    assert result.choices[0].message.parsed == Answer(answer="42")
    call = only_call(records)
    assert call.method == "parse" and call.output_type == "json"
    assert call.response_format == {"type": "json_schema", "name": "Answer"}
    assert call.output_tokens == 6 and call.choices[0].text == '{"answer": "42"}'
    assert llm_server.requests[-1].json["response_format"]["type"] == "json_schema"


def test_parse_length_error_is_reraised_unchanged_and_recorded(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion('{"answer": "4', finish_reason="length", completion_tokens=5)))
    with pytest.raises(openai.LengthFinishReasonError) as caught:
        oai().chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer, max_tokens=5)
    call = only_call(records)
    assert caught.value.completion.usage.completion_tokens == 5
    assert call.usage_source == "provider" and call.output_tokens == 5 and call.input_tokens == 10
    assert call.finish_reasons == ["length"] and call.finish_category == "length"
    assert call.error_type == "LengthFinishReasonError"
    assert call.choices[0].text == '{"answer": "4'


def test_parse_length_error_is_the_same_object_as_the_sdk_raises(oai, llm_server, records, monkeypatch):
    """The wrapper re-raises the very exception object the SDK raised (no copy, no wrapping)."""
    pytest.importorskip("openai.lib._chat_completion_resources", reason="older openai releases parse elsewhere")
    seen = []
    from openai.lib._parsing import _completions

    original = _completions.parse_chat_completion

    def spy(**kwargs):
        try:
            return original(**kwargs)
        except openai.LengthFinishReasonError as exc:
            seen.append(exc)
            raise

    monkeypatch.setattr(_completions, "parse_chat_completion", spy)
    monkeypatch.setattr("openai.lib._chat_completion_resources._parse_chat_completion", spy)
    llm_server.enqueue(Reply(json=ob.chat_completion("{", finish_reason="length")))
    with pytest.raises(openai.LengthFinishReasonError) as caught:
        oai().chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
    assert seen and caught.value is seen[0]


def test_http_error_recorded_with_provider_error_type(oai, llm_server, records, spans):
    llm_server.enqueue(ob.error_reply(400, "bad messages", retry_after_ms=None))
    with pytest.raises(openai.BadRequestError) as caught:
        oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 400
    call = only_call(records)
    assert call.error_type == "invalid_request_error" and call.status_code == 400
    assert call.finish_category == "error" and call.response_model is None
    assert call.usage_source == "missing" and any("usage" in gap for gap in call.gaps)
    span = spans.spans[-1]
    assert span.attributes["error.type"] == "invalid_request_error"
    assert span.status.status_code.name == "ERROR"
    assert "gen_ai.response.model" not in span.attributes


def test_span_carries_genai_attributes(oai, llm_server, records, spans):
    usage = ob.chat_usage(100, 20, cached_tokens=64, reasoning_tokens=8)
    llm_server.enqueue(Reply(json=ob.chat_completion("ok", usage=usage)))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30, temperature=0.5, n=1)
    call = only_call(records)
    span = spans.spans[-1]
    attrs = span.attributes
    assert span.name == "chat gpt-4o-mini" and span.kind.name == "CLIENT"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.request.max_tokens"] == 30 and attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.usage.input_tokens"] == 100  # includes the 64 cached
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 64
    assert attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 8
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["wasteaudit.call.id"] == call.id and attrs["wasteaudit.attempts"] == 1
    assert attrs["server.address"] == "127.0.0.1"
    assert "error.type" not in attrs
    assert call.trace_id == format(span.context.trace_id, "032x")


def test_the_call_span_is_current_during_the_http_request(oai, llm_server, records, spans):
    """Spans made inside the SDK call (e.g. an HTTP client instrumentation) nest under ours."""
    from opentelemetry import trace

    from wasteaudit.instrumentation import _calls

    seen = {}
    original = openai._base_client.SyncAPIClient._send_request

    def probe(self, *args, **kwargs):
        seen["span"] = trace.get_current_span()
        seen["call"] = _calls.active_call.get()
        return original(self, *args, **kwargs)

    llm_server.enqueue(Reply(json=ob.chat_completion("ok")))
    client = oai()
    client._send_request = probe.__get__(client)  # instance-level, below the class-level wrapper
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert seen["call"] is not None and seen["call"].record.id == only_call(records).id
    assert seen["span"].get_span_context().span_id == spans.spans[-1].context.span_id
    assert _calls.active_call.get() is None and trace.get_current_span() is not seen["span"]


async def test_async_chat(aoai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("async hi", prompt_tokens=4, completion_tokens=2)))
    result = await aoai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == "async hi"
    call = only_call(records)
    assert (call.input_tokens, call.output_tokens, call.finish_reasons) == (4, 2, ["stop"])
    assert len(call.attempts) == 1 and call.attempts[0].status_code == 200


async def test_async_parse_and_length_error(aoai, llm_server, records):
    llm_server.enqueue(
        Reply(json=ob.chat_completion('{"answer": "a"}')),
        Reply(json=ob.chat_completion('{"ans', finish_reason="length", completion_tokens=3)),
    )
    client = aoai()
    parsed = await client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
    assert parsed.choices[0].message.parsed.answer == "a"
    with pytest.raises(openai.LengthFinishReasonError):
        await client.chat.completions.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
    first, second = records.calls
    assert first.method == second.method == "parse"
    assert second.finish_reasons == ["length"] and second.output_tokens == 3


async def test_async_http_error(aoai, llm_server, records):
    llm_server.enqueue(ob.error_reply(404, "model not found", retry_after_ms=None))
    with pytest.raises(openai.NotFoundError):
        await aoai().chat.completions.create(model="nope", messages=MESSAGES)
    call = only_call(records)
    assert call.status_code == 404 and call.error_type == "invalid_request_error"


# -- raw responses ----------------------------------------------------------------------------------


def test_with_raw_response_is_returned_unchanged_and_read_from_the_read_body(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("raw!", completion_tokens=2), headers={"x-request-id": "req_raw"}))
    raw = oai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert type(raw).__name__ == "LegacyAPIResponse"
    assert raw.headers["x-request-id"] == "req_raw"
    assert raw.parse().choices[0].message.content == "raw!"
    call = only_call(records)
    assert call.usage_source == "provider" and call.output_tokens == 2
    assert call.choices[0].text == "raw!" and call.status_code == 200
    assert "stream_options" not in llm_server.requests[-1].json


def test_with_raw_response_parse_keeps_post_parser(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion('{"answer": "raw"}')))
    raw = oai().chat.completions.with_raw_response.parse(model="gpt-4o-mini", messages=MESSAGES, response_format=Answer)
    assert raw.parse().choices[0].message.parsed == Answer(answer="raw")
    assert only_call(records).method == "parse"


def test_with_streaming_response_body_not_observed(oai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("streamed raw")))
    with oai().chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES) as response:
        assert type(response).__name__ == "APIResponse"
        assert response.parse().choices[0].message.content == "streamed raw"
    call = only_call(records)
    assert call.usage_source == "missing"
    assert "raw streaming response: body not observed" in call.gaps


async def test_async_with_raw_response(aoai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.chat_completion("araw", completion_tokens=1)))
    raw = await aoai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "araw"
    assert only_call(records).output_tokens == 1


# -- legacy completions ----------------------------------------------------------------------------


def test_legacy_completion(oai, llm_server, records, spans):
    llm_server.enqueue(Reply(json=ob.completion(["a", "b"], finish_reason=["stop", "length"], prompt_tokens=3, completion_tokens=4)))
    result = oai().completions.create(model="gpt-3.5-turbo-instruct", prompt="Say", n=2, best_of=3, max_tokens=4)
    assert [c.text for c in result.choices] == ["a", "b"]
    call = only_call(records)
    assert (call.operation, call.api) == ("text_completion", "completions")
    assert call.request_params == {"n": 2, "best_of": 3, "max_tokens": 4}
    assert call.input_messages == "Say"
    assert [c.text for c in call.choices] == ["a", "b"] and call.finish_reasons == ["stop", "length"]
    assert (call.input_tokens, call.output_tokens) == (3, 4)
    assert spans.spans[-1].name == "text_completion gpt-3.5-turbo-instruct"


async def test_async_legacy_completion(aoai, llm_server, records):
    llm_server.enqueue(Reply(json=ob.completion("x")))
    await aoai().completions.create(model="gpt-3.5-turbo-instruct", prompt=["a", "b"])
    call = only_call(records)
    assert call.input_messages == ["a", "b"] and call.choices[0].text == "x"


# -- provider attribution ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"),
        ("my-resource.openai.azure.com", "azure.ai.openai"),
        ("api.groq.com", "groq"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.deepseek.com", "deepseek"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("openrouter.ai", "openrouter"),
        ("api.together.xyz", "together"),
        ("api.fireworks.ai", "fireworks"),
        ("qianfan.baidubce.com", "baidu.qianfan"),
        ("localhost", "openai"),
        ("127.0.0.1", "openai"),
        ("gateway.example.com", "openai"),
        (None, "openai"),
    ],
)
def test_provider_table(host, provider):
    from wasteaudit.instrumentation._providers import provider_for_host

    assert provider_for_host(host) == provider


def test_host_allow_list_matching():
    from wasteaudit.instrumentation._providers import host_allowed

    hosts = ("api.openai.com", ".openai.azure.com")
    assert host_allowed("api.openai.com", hosts) and host_allowed("x.openai.azure.com", hosts)
    assert not host_allowed("openai.azure.com.evil.io", hosts) and not host_allowed("api.openai.com.evil.io", hosts)
    assert not host_allowed(None, hosts)


def test_endpoint_of_clients():
    from wasteaudit.instrumentation._providers import endpoint_of

    client = openai.OpenAI(api_key="k")
    assert (endpoint_of(client).host, endpoint_of(client).port, endpoint_of(client).provider) == ("api.openai.com", 443, "openai")
    azure = openai.AzureOpenAI(api_key="k", api_version="2024-10-21", azure_endpoint="https://res.openai.azure.com")
    assert endpoint_of(azure).provider == "azure.ai.openai" and endpoint_of(azure).host == "res.openai.azure.com"
    groq = openai.OpenAI(api_key="k", base_url="https://api.groq.com/openai/v1")
    assert endpoint_of(groq).provider == "groq"
    client.base_url = "https://api.deepseek.com/v1"  # the SDK lets apps change it: not a stale cache
    assert endpoint_of(client).provider == "deepseek"


def test_content_on_spans_when_opted_in(oai, llm_server, records, spans):
    import json

    set_settings(capture_content_on_spans=True)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    llm_server.enqueue(Reply(json=ob.chat_completion("Hi sk-abcdefghijklmnopqrstuvwxyz123456", tool_calls=[ob.tool_call("f", {"a": 1})])))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=tools)
    attrs = spans.spans[-1].attributes
    assert json.loads(attrs["gen_ai.input.messages"]) == MESSAGES
    output = json.loads(attrs["gen_ai.output.messages"])
    assert output[0]["parts"][0] == {"type": "text", "content": "Hi [REDACTED]"}
    assert output[0]["parts"][1]["name"] == "f"


def test_no_content_on_spans_by_default(oai, llm_server, records, spans):
    llm_server.enqueue(Reply(json=ob.chat_completion("secret answer")))
    oai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output.messages")) for key in spans.spans[-1].attributes)
    assert only_call(records).choices[0].text == "secret answer"  # kept in the record for scoring


def test_span_carries_the_requested_output_type(oai, llm_server, records, spans):
    llm_server.enqueue(Reply(json=ob.chat_completion('{"a": 1}')), Reply(json=ob.chat_completion("plain")), Reply(json=ob.chat_completion("any")))
    client = oai()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, response_format={"type": "json_object"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, response_format={"type": "text"})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [s.attributes.get("gen_ai.output.type") for s in spans.spans[-3:]] == ["json", "text", None]
    assert [c.output_type for c in records.calls] == ["json", "text", None]
