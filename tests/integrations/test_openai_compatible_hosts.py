"""OpenAI-compatible hosts: attribution from the real base URL, end to end through the real openai SDK.

The SDK connects to its base URL's host; to exercise attribution by host name without DNS or any
outside traffic, each client gets an ``http_client`` whose transport sends every request to the
loopback server instead (path, headers and body untouched). What is recorded is then exactly what a
call to that host would record: provider, server address, usage and finish reasons, from bodies shaped
the way each host really answers (Azure's content-filter annotations, Groq's ``x_groq``, DeepSeek's
cache counters, OpenRouter's ``cost``, ...).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx2
import openai
import pytest

from wasteaudit.exceptions import ConfigError
from wasteaudit.instrumentation import active_instrumentations, instrument_openai
from wasteaudit.localllm import LocalLLMServer, Reply
from wasteaudit.localllm import openai_bodies as ob
from wasteaudit.records import CallRecord

MESSAGES = [{"role": "user", "content": "Say hi"}]


class Loopback(httpx2.HTTPTransport):
    """Send every request to the loopback server, whatever host the client was configured with."""

    def __init__(self, server: LocalLLMServer) -> None:
        super().__init__()
        self.port = int(server.url.rsplit(":", 1)[1])
        self.hosts: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.hosts.append(request.url.host)
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return super().handle_request(request)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer() as srv:
        srv._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield srv


@pytest.fixture
def llm(server, records) -> Iterator[LocalLLMServer]:
    server.clear()
    instrument_openai()
    try:
        yield server
    finally:
        current = active_instrumentations().get("openai")
        if current is not None:
            current.undo()
        server.clear()


def client_for(server: LocalLLMServer, base_url: str, **options: Any) -> tuple[openai.OpenAI, Loopback]:
    transport = Loopback(server)
    return openai.OpenAI(base_url=base_url, api_key="sk-test-not-a-real-key", max_retries=0, http_client=httpx2.Client(transport=transport), **options), transport


# (provider name, base URL as documented by the host, a model it serves)
HOSTS = [
    ("openai", "https://api.openai.com/v1", "gpt-4o-mini"),
    ("groq", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile"),
    ("mistral_ai", "https://api.mistral.ai/v1", "mistral-small-latest"),
    ("gcp.gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5-flash"),
    ("baidu.qianfan", "https://qianfan.baidubce.com/v2", "ernie-4.0-8k"),
    ("deepseek", "https://api.deepseek.com", "deepseek-chat"),
    ("openrouter", "https://openrouter.ai/api/v1", "openai/gpt-4o-mini"),
    ("together", "https://api.together.xyz/v1", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("fireworks", "https://api.fireworks.ai/inference/v1", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
    ("x_ai", "https://api.x.ai/v1", "grok-3"),
]


# Self-hosted servers at the base URLs their docs give (default ports), unknown to the price table.
SELF_HOSTED = [
    ("ollama", "http://localhost:11434/v1", "llama3.2"),
    ("vllm", "http://127.0.0.1:8000/v1", "meta-llama/Llama-3.1-8B-Instruct"),
    ("llama.cpp", "http://localhost:8080/v1", "qwen2.5-7b-instruct-q4_k_m.gguf"),
]


@pytest.mark.parametrize(("provider", "base_url", "model"), HOSTS + SELF_HOSTED, ids=[h[0] for h in HOSTS + SELF_HOSTED])
def test_a_call_is_attributed_to_the_host_it_went_to(llm, records, provider, base_url, model):
    client, transport = client_for(llm, base_url)
    llm.enqueue(Reply(json=ob.chat_completion("Hi!", model=model, prompt_tokens=8, completion_tokens=2)))
    result = client.chat.completions.create(model=model, messages=MESSAGES)
    assert result.choices[0].message.content == "Hi!"
    (call,) = records.calls
    host = httpx2.URL(base_url).host
    assert transport.hosts == [host]  # the SDK addressed the real host; the transport rerouted it
    assert (call.provider, call.server_address, call.server_port) == (provider, host, httpx2.URL(base_url).port or 443)
    assert (call.input_tokens, call.output_tokens, call.usage_source) == (8, 2, "provider")
    assert llm.requests[0].path.endswith("/chat/completions")


def test_azure_openai_client_is_attributed_to_azure(llm, records):
    transport = Loopback(llm)
    client = openai.AzureOpenAI(
        azure_endpoint="https://contoso-eastus.openai.azure.com",
        api_version="2024-10-21",
        api_key="azure-test-key",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )
    llm.enqueue(Reply(json=ob.chat_completion("Hi!", model="gpt-4o-2024-11-20")))
    client.chat.completions.create(model="my-gpt4o-deployment", messages=MESSAGES)
    (call,) = records.calls
    assert (call.provider, call.server_address) == ("azure.ai.openai", "contoso-eastus.openai.azure.com")
    assert call.request_model == "my-gpt4o-deployment" and call.response_model == "gpt-4o-2024-11-20"
    assert "/openai/deployments/my-gpt4o-deployment/chat/completions" in llm.requests[0].path


AZURE_FILTERED = {
    "id": "chatcmpl-azure-1",
    "object": "chat.completion",
    "created": 1730000000,
    "model": "gpt-4o-2024-11-20",
    "prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}}
    ],
    "choices": [
        {
            "index": 0,
            "finish_reason": "content_filter",
            "message": {"role": "assistant", "content": None},
            "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}, "hate": {"filtered": False, "severity": "safe"}},
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 37, "total_tokens": 58},
    "system_fingerprint": "fp_azure",
}


def test_azure_content_filter_result_with_status_200_is_recorded_not_raised(llm, records):
    client, _ = client_for(llm, "https://contoso.openai.azure.com/openai/v1/")
    llm.enqueue(Reply(json=AZURE_FILTERED))
    result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert result.choices[0].finish_reason == "content_filter" and result.choices[0].message.content is None
    (call,) = records.calls
    assert call.provider == "azure.ai.openai"
    assert call.finish_reasons == ["content_filter"] and call.finish_category == "filter"
    assert (call.input_tokens, call.output_tokens) == (21, 37)  # billed, and wasted: the scorer labels it
    assert call.error_type is None


def _sse(body: dict[str, Any]) -> str:
    return "data: " + json.dumps(body)


def test_azure_stream_with_filter_annotation_chunks_is_recorded(llm, records):
    """Azure streams open with a ``choices: []`` chunk carrying only ``prompt_filter_results`` (id and
    model empty): the call must still be recorded, and usage, finish reason and text are."""
    base = {"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1730000000, "model": "gpt-4o-2024-11-20", "system_fingerprint": "fp_az"}
    events = [
        # Azure's first chunk: no choices, an empty model, the prompt's filter results
        _sse({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}),
        _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "content_filter_results": {}}]}),
        _sse({**base, "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}]}),
        _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "content_filter_results": {}}]}),
        _sse({**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}),
        ob.DONE,
    ]
    transport = Loopback(llm)
    client = openai.AzureOpenAI(azure_endpoint="https://contoso.openai.azure.com", api_version="2024-10-21", api_key="k", max_retries=0,
                                http_client=httpx2.Client(transport=transport))
    llm.enqueue(Reply(sse=events))
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello"
    (call,) = records.calls
    assert call.provider == "azure.ai.openai" and call.finish_reasons == ["stop"]
    assert (call.input_tokens, call.output_tokens) == (9, 1)
    # from the first chunk that has them, not the empty annotation chunk (Azure's request model is a
    # deployment name, so pricing needs the response model)
    assert (call.response_model, call.response_id) == ("gpt-4o-2024-11-20", "chatcmpl-az")


def test_host_specific_usage_extras_are_kept_without_breaking_the_counts(llm, records):
    shapes = [
        ("https://api.deepseek.com", {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110, "prompt_cache_hit_tokens": 64,
                                       "prompt_cache_miss_tokens": 36, "prompt_tokens_details": {"cached_tokens": 64}}),
        ("https://openrouter.ai/api/v1", {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55, "cost": 0.00012, "is_byok": False,
                                           "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}),
        ("https://api.groq.com/openai/v1", {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33, "queue_time": 0.02, "prompt_time": 0.001,
                                             "completion_time": 0.004, "total_time": 0.005}),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52,
                                                                       "completion_tokens_details": {"reasoning_tokens": 30}}),
    ]
    for base_url, usage in shapes:
        client, _ = client_for(llm, base_url)
        llm.enqueue(Reply(json=ob.chat_completion("ok", usage=usage)))
        client.chat.completions.create(model="m", messages=MESSAGES)
    deepseek, openrouter, groq, gemini = records.calls
    assert (deepseek.input_tokens, deepseek.output_tokens, deepseek.input_cache_read_tokens) == (100, 10, 64)
    assert deepseek.usage_details["prompt_cache_hit_tokens"] == 64
    assert openrouter.usage_details["cost"] == 0.00012 and openrouter.input_tokens == 50
    assert groq.usage_details["queue_time"] == 0.02 and groq.output_tokens == 3
    assert (gemini.output_tokens, gemini.output_reasoning_tokens) == (40, 30)


def test_groq_stream_usage_in_x_groq_is_recorded_and_the_stream_is_unchanged(llm, records):
    base = {"id": "chatcmpl-groq", "object": "chat.completion.chunk", "created": 1730000000, "model": "llama-3.3-70b-versatile", "system_fingerprint": "fp_groq"}
    events = [
        _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}], "x_groq": {"id": "req_01"}}),
        _sse({**base, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}),
        _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
              "x_groq": {"id": "req_01", "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}}),
        ob.DONE,
    ]
    client, _ = client_for(llm, "https://api.groq.com/openai/v1")
    llm.enqueue(Reply(sse=events))
    chunks = list(client.chat.completions.create(model="llama-3.3-70b-versatile", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    (call,) = records.calls
    assert call.provider == "groq" and call.finish_reasons == ["stop"] and call.stream_state == "completed"
    # api.groq.com is not on stream_usage_hosts, so include_usage is not injected: usage is Groq's own extension
    assert call.usage_source == "provider" and (call.input_tokens, call.output_tokens) == (12, 1)


@pytest.mark.parametrize(
    ("provider", "model", "priced"),
    [
        ("openai", "gpt-4o-mini", True),
        ("azure.ai.openai", "gpt-4o-mini", True),
        ("groq", "llama-3.3-70b-versatile", True),
        ("mistral_ai", "mistral-small-latest", True),
        ("deepseek", "deepseek-chat", True),
        ("gcp.gemini", "gemini-2.5-flash", True),
        ("openrouter", "openai/gpt-4o-mini", True),
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", True),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", True),
        ("openai", "llama3.2", False),  # a self-hosted model name: unpriced unless the user sets a price
    ],
)
def test_pricing_knows_the_models_these_hosts_serve(provider, model, priced):
    from wasteaudit.storage.pricing import price_call

    record = CallRecord(id="x", provider=provider, operation="chat", api="chat.completions", started_at=time.time(),
                        request_model=model, usage_source="provider", input_tokens=1000, output_tokens=1000)
    cost, _, status = price_call(record)
    assert (cost is not None and cost > 0) is priced, (provider, model, cost, status)
    assert status == ("priced" if priced else "unpriced")


def test_self_hosted_models_are_priced_only_by_the_users_override():
    from wasteaudit.storage.pricing import price_call

    record = CallRecord(id="x", provider="openai", operation="chat", api="chat.completions", started_at=time.time(),
                        request_model="llama3.2", usage_source="provider", input_tokens=1_000_000, output_tokens=1_000_000)
    assert price_call(record)[0] is None
    cost, version, status = price_call(record, {"llama3.2": {"input": 0.05, "output": 0.10}})
    assert cost == pytest.approx(0.15) and status == "priced" and version.startswith("override:")


@pytest.mark.parametrize(
    ("base_url", "provider"),
    [
        ("http://localhost:11434/v1", "ollama"),
        ("http://host.docker.internal:11434/v1", "ollama"),
        ("http://127.0.0.1:8000/v1", "vllm"),
        ("http://10.0.3.7:8000/v1", "vllm"),
        ("http://[::1]:8080/v1", "llama.cpp"),
        ("http://localhost:1234/v1", "lm_studio"),
        ("http://localhost:4000", "openai"),  # e.g. a LiteLLM proxy: forwards to others, attributed to the protocol
        ("https://api.example.com:8000/v1", "openai"),  # a public host on port 8000 is not assumed to be vLLM
        ("https://contoso.openai.azure.com/openai/v1/", "azure.ai.openai"),
        ("https://api.deepseek.com/v1", "deepseek"),
    ],
)
def test_attribution_from_real_base_urls(base_url, provider):
    from wasteaudit.instrumentation._providers import endpoint_of

    client = openai.OpenAI(base_url=base_url, api_key="k")
    assert endpoint_of(client).provider == provider


def test_provider_hosts_names_any_other_server(llm, records):
    from wasteaudit import config
    from wasteaudit.instrumentation._providers import provider_for_endpoint

    mapping = {"gpu-box:8000": "vllm", "tgi.example.net": "huggingface.tgi", ".inference.internal": "vllm"}
    assert provider_for_endpoint("gpu-box", 8000, mapping) == "vllm"
    assert provider_for_endpoint("gpu-box", 9000, mapping) == "openai"
    assert provider_for_endpoint("TGI.example.net", 443, mapping) == "huggingface.tgi"
    assert provider_for_endpoint("llm.inference.internal", 443, mapping) == "vllm"
    assert provider_for_endpoint("localhost", 11434, {"localhost:11434": "my-ollama"}) == "my-ollama"  # the user wins

    previous = config.get_settings()
    config.set_settings(config.replace(previous, provider_hosts=mapping))
    try:
        client, _ = client_for(llm, "http://gpu-box:8000/v1")
        llm.enqueue(Reply(json=ob.chat_completion("ok", model="qwen")))
        client.chat.completions.create(model="qwen", messages=MESSAGES)
    finally:
        config.set_settings(previous)
    (call,) = records.calls
    assert (call.provider, call.server_address) == ("vllm", "gpu-box")
    with pytest.raises(ConfigError):
        config.settings_from_env({"WASTEAUDIT_PROVIDER_HOSTS": '{"gpu-box": 8000}'})


@pytest.mark.parametrize(("provider", "base_url", "model"), SELF_HOSTED, ids=[h[0] for h in SELF_HOSTED])
def test_self_hosted_calls_are_unpriced_unless_the_user_prices_the_model(llm, records, provider, base_url, model):
    from wasteaudit.storage.pricing import price_call

    client, _ = client_for(llm, base_url)
    llm.enqueue(Reply(json=ob.chat_completion("ok", model=model, prompt_tokens=1000, completion_tokens=1000)))
    client.chat.completions.create(model=model, messages=MESSAGES)
    (call,) = records.calls
    assert call.provider == provider
    assert price_call(call)[0] is None and price_call(call)[2] == "unpriced"
    cost, _, status = price_call(call, {model: {"input": 0.1, "output": 0.2}})
    assert cost == pytest.approx(0.0003) and status == "priced"
