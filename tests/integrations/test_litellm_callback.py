"""LiteLLM callback, with the real litellm package against the loopback server (no outside traffic)."""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest

# LiteLLM fetches a model cost map from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
litellm = pytest.importorskip("litellm")

pytestmark = pytest.mark.slow  # importing litellm alone takes ~15 s here

import wasteaudit  # noqa: E402
from wasteaudit.instrumentation import active_instrumentations, instrument_openai  # noqa: E402
from wasteaudit.integrations.litellm import WasteAuditLogger  # noqa: E402
from wasteaudit.localllm import LocalLLMServer, Reply  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer() as srv:
        srv._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield srv


@pytest.fixture
def logger(server, records) -> Iterator[WasteAuditLogger]:
    current = active_instrumentations().get("openai")
    if current is not None:
        current.undo()
    server.clear()
    handler = WasteAuditLogger()
    litellm.callbacks = [*(litellm.callbacks or []), handler]
    try:
        yield handler
    finally:
        # LiteLLM copies ``callbacks`` into its per-event lists on first use: take ours out of all of them
        for name in ("callbacks", "input_callback", "success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback"):
            current_list = getattr(litellm, name, None)
            if isinstance(current_list, list):
                setattr(litellm, name, [c for c in current_list if c is not handler])
        server.clear()


def call(server: LocalLLMServer, api_key: str = "sk-test-not-a-real-key", **options: Any) -> Any:
    return litellm.completion(model="openai/gpt-4o-mini", api_base=server.openai_base_url, api_key=api_key,
                              messages=MESSAGES, num_retries=0, **options)


def wait_for_records(records: Any, n: int, timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout  # LiteLLM reports the end from a background thread
    while len(records.calls) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return records.calls


def settle(handler: WasteAuditLogger, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while handler._pending and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)


def test_a_completion_becomes_one_record_in_the_audited_run(server, logger, records):
    server.enqueue(Reply(json=ob.chat_completion("Paris.", prompt_tokens=15, completion_tokens=2, usage=ob.chat_usage(15, 2, cached_tokens=4))))

    @wasteaudit.audit(name="capital")
    def capital() -> str:
        return call(server, temperature=0.2, max_tokens=16).choices[0].message.content

    assert capital() == "Paris."
    (record,) = wait_for_records(records, 1)
    run = next(r for r in records.runs)
    assert (record.provider, record.operation, record.api) == ("openai", "chat", "litellm.completion")
    assert record.run_id == run.id and record.function == "capital"
    assert (record.server_address, record.server_port) == ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    assert (record.request_model, record.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (record.usage_source, record.input_tokens, record.output_tokens, record.input_cache_read_tokens) == ("provider", 15, 2, 4)
    assert record.finish_reasons == ["stop"] and [c.text for c in record.choices] == ["Paris."]
    assert record.input_messages == [{"role": "user", "content": "Capital of France?"}]
    assert record.system_instructions == [{"type": "text", "content": "Be brief."}]
    assert record.request_params["temperature"] == 0.2 and record.request_params["max_tokens"] == 16
    assert 0 < record.duration_s < 10


def test_with_the_openai_sdk_instrumented_a_completion_is_still_one_record(server, logger, records):
    """LiteLLM 1.110 sends OpenAI requests with ``client.post("/chat/completions")``, past the resource
    methods the SDK instrumentation wraps: the callback's record is then the only one. (When a framework
    does go through a wrapped method, the SDK record wins: see the LangChain test.)"""
    handle = instrument_openai()
    try:
        server.enqueue(Reply(json=ob.chat_completion("Hi", prompt_tokens=5, completion_tokens=1)))
        call(server, api_key="sk-test-instrumented")
        settle(logger)
    finally:
        handle.undo()
    (record,) = records.calls
    assert record.output_tokens == 1


def test_a_stream_is_recorded_when_it_ends(server, logger, records):
    server.handler = ob.honour_include_usage(ob.chat_chunks(["Pa", "ris"]), usage=ob.chat_usage(11, 2))
    try:
        chunks = list(call(server, stream=True, stream_options={"include_usage": True}))
    finally:
        server.handler = None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris"
    (record,) = wait_for_records(records, 1)
    assert record.stream and record.method == "stream" and record.stream_state == "completed"
    assert (record.input_tokens, record.output_tokens) == (11, 2)


def test_a_failed_completion_is_recorded_with_its_error(server, logger, records):
    server.enqueue(Reply(status=400, json={"error": {"message": "bad request", "type": "invalid_request_error", "code": None}}))
    with pytest.raises(litellm.exceptions.BadRequestError):
        call(server)
    (record,) = wait_for_records(records, 1)
    assert record.error_type and record.finish_category == "error" and record.usage_source == "missing"


async def test_acompletion_is_recorded_in_its_run(server, logger, records):
    server.enqueue(Reply(json=ob.chat_completion("Lyon", prompt_tokens=6, completion_tokens=1)))

    @wasteaudit.audit(name="city")
    async def city() -> str:
        response = await litellm.acompletion(model="openai/gpt-4o-mini", api_base=server.openai_base_url, api_key="sk-test",
                                             messages=MESSAGES, num_retries=0)
        return response.choices[0].message.content

    assert await city() == "Lyon"
    deadline = time.monotonic() + 15
    while not records.calls and time.monotonic() < deadline:
        import asyncio

        await asyncio.sleep(0.02)
    (record,) = records.calls
    assert record.function == "city" and record.output_tokens == 1
