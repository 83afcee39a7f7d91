"""LangChain callback handler, with the real langchain-core / langchain-openai against the loopback server."""

from __future__ import annotations

from typing import Any, Iterator

import openai
import pytest

pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")

import wasteaudit  # noqa: E402
from wasteaudit.instrumentation import active_instrumentations, instrument_openai  # noqa: E402
from wasteaudit.integrations.langchain import WasteAuditCallbackHandler  # noqa: E402
from wasteaudit.localllm import LocalLLMServer, Reply  # noqa: E402
from wasteaudit.localllm import openai_bodies as ob  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer() as srv:
        srv._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield srv


@pytest.fixture
def llm(server) -> Iterator[LocalLLMServer]:
    server.clear()
    yield server
    server.clear()


@pytest.fixture
def uninstrumented() -> Iterator[None]:
    current = active_instrumentations().get("openai")
    if current is not None:
        current.undo()
    yield


def chat(server: LocalLLMServer, **options: Any) -> Any:
    options.setdefault("max_retries", 0)
    return langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=server.openai_base_url, api_key="sk-test-not-a-real-key", **options)


def test_a_chat_model_call_becomes_one_record_in_the_audited_run(llm, records, spans, uninstrumented):
    llm.enqueue(Reply(json=ob.chat_completion("Paris.", prompt_tokens=14, completion_tokens=2,
                                              usage=ob.chat_usage(14, 2, cached_tokens=8, reasoning_tokens=0))))
    handler = WasteAuditCallbackHandler()

    @wasteaudit.audit(name="capital")
    def capital() -> str:
        model = chat(llm, temperature=0.1, max_tokens=20)
        return model.invoke([("system", "Answer in one word."), ("human", "Capital of France?")], config={"callbacks": [handler]}).content

    assert capital() == "Paris."
    (call,) = records.calls
    (run,) = records.runs
    assert (call.provider, call.operation, call.api, call.method) == ("openai", "chat", "langchain.chat_model", "invoke")
    assert call.run_id == run.id and call.function == "capital"
    assert (call.request_model, call.response_model) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert (call.usage_source, call.input_tokens, call.output_tokens, call.input_cache_read_tokens) == ("provider", 14, 2, 8)
    assert call.finish_reasons == ["stop"] and call.finish_category == "stop"
    assert [c.text for c in call.choices] == ["Paris."]
    assert call.input_messages == [{"role": "user", "content": "Capital of France?"}]
    assert call.system_instructions == [{"type": "text", "content": "Answer in one word."}]
    assert call.request_params["temperature"] == 0.1 and call.request_params["max_tokens"] == 20
    assert call.duration_s and call.duration_s > 0 and call.started_at <= call.ended_at
    (span,) = [s for s in spans.spans if s.name == "chat gpt-4o-mini"]
    assert span.attributes["gen_ai.usage.input_tokens"] == 14 and span.attributes["wasteaudit.run.name"] == "capital"
    assert span.start_time <= span.end_time and span.parent is not None


def test_with_the_openai_sdk_instrumented_the_sdk_record_is_the_only_one(llm, records, uninstrumented):
    handle = instrument_openai()
    try:
        llm.enqueue(Reply(json=ob.chat_completion("Hi", prompt_tokens=5, completion_tokens=1)))
        chat(llm).invoke("hi", config={"callbacks": [WasteAuditCallbackHandler()]})
    finally:
        handle.undo()
    (call,) = records.calls
    assert call.api == "chat.completions"  # recorded by the SDK wrapper, not by the handler


def test_streaming_records_usage_and_time_to_first_chunk(llm, records, uninstrumented):
    llm.handler = ob.honour_include_usage(ob.chat_chunks(["Hel", "lo"]), usage=ob.chat_usage(9, 2))
    try:
        pieces = [c.content for c in chat(llm, stream_usage=True).stream("hi", config={"callbacks": [WasteAuditCallbackHandler()]})]
    finally:
        llm.handler = None
    assert "".join(pieces) == "Hello"
    (call,) = records.calls
    assert call.stream and call.method == "stream" and call.stream_state == "completed"
    assert (call.input_tokens, call.output_tokens) == (9, 2)
    assert call.time_to_first_chunk_s is not None and call.time_to_first_chunk_s <= call.duration_s


async def test_async_invoke_is_recorded_in_its_run(llm, records, uninstrumented):
    llm.enqueue(Reply(json=ob.chat_completion("Lyon", prompt_tokens=6, completion_tokens=1, finish_reason="length")))

    @wasteaudit.audit(name="city")
    async def city() -> str:
        return (await chat(llm).ainvoke("second city?", config={"callbacks": [WasteAuditCallbackHandler()]})).content

    assert await city() == "Lyon"
    (call,) = records.calls
    assert call.function == "city" and call.finish_category == "length"


def test_a_failed_call_is_recorded_with_its_error(llm, records, uninstrumented):
    llm.enqueue(Reply(status=400, json={"error": {"message": "bad", "type": "invalid_request_error", "code": None}}))
    with pytest.raises(openai.BadRequestError):
        chat(llm).invoke("hi", config={"callbacks": [WasteAuditCallbackHandler()]})
    (call,) = records.calls
    assert call.error_type == "invalid_request_error" and call.finish_category == "error"  # the provider's error type
    assert call.usage_source == "missing"


def test_a_model_without_usage_is_recorded_as_usage_missing(records):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    model = GenericFakeChatModel(messages=iter(["fake answer"]))
    model.invoke("hi", config={"callbacks": [WasteAuditCallbackHandler()]})
    (call,) = records.calls
    assert call.usage_source == "missing" and [c.text for c in call.choices] == ["fake answer"]
    assert call.provider == "genericfakechatmodel"  # LangChain's ls_provider fallback for an unknown model class
